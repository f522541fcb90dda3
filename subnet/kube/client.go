package kube

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
)

// Nodes is what the store needs of the API: the Node objects. A
// client-go clientset's CoreV1().Nodes() is one; NewNodes makes a lighter
// one.
type Nodes interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Node, error)
	List(ctx context.Context, opts metav1.ListOptions) (*corev1.NodeList, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (*corev1.Node, error)
}

// NewNodes returns a Nodes client for cfg that knows only the core/v1
// types. weftd uses it instead of a clientset: the clientset registers
// every API group of Kubernetes at start, which cost weftd 38 MB of binary
// and 24 MB of RSS for types it never reads. Unless cfg says otherwise it
// speaks protobuf: a fraction of JSON's size and decoding cost for a watch
// of every Node.
func NewNodes(cfg *rest.Config) (Nodes, error) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	metav1.AddToGroupVersion(scheme, corev1.SchemeGroupVersion)
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &corev1.SchemeGroupVersion
	c.APIPath = "/api"
	c.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	if c.ContentType == "" {
		c.ContentType = runtime.ContentTypeProtobuf
		c.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	}
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return &nodes{rc: rc, codec: runtime.NewParameterCodec(scheme)}, nil
}

// nodes is Nodes on a REST client, the requests client-go's generated
// node client makes.
type nodes struct {
	rc    *rest.RESTClient
	codec runtime.ParameterCodec
}

func (n *nodes) Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Node, error) {
	out := &corev1.Node{}
	err := n.rc.Get().Resource("nodes").Name(name).VersionedParams(&opts, n.codec).Do(ctx).Into(out)
	return out, err
}

func (n *nodes) List(ctx context.Context, opts metav1.ListOptions) (*corev1.NodeList, error) {
	out := &corev1.NodeList{}
	req := n.rc.Get().Resource("nodes").VersionedParams(&opts, n.codec)
	if opts.TimeoutSeconds != nil {
		req = req.Timeout(time.Duration(*opts.TimeoutSeconds) * time.Second)
	}
	err := req.Do(ctx).Into(out)
	return out, err
}

func (n *nodes) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	req := n.rc.Get().Resource("nodes").VersionedParams(&opts, n.codec)
	if opts.TimeoutSeconds != nil {
		req = req.Timeout(time.Duration(*opts.TimeoutSeconds) * time.Second)
	}
	return req.Watch(ctx)
}

func (n *nodes) Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (*corev1.Node, error) {
	out := &corev1.Node{}
	err := n.rc.Patch(pt).Resource("nodes").Name(name).SubResource(subresources...).
		VersionedParams(&opts, n.codec).Body(data).Do(ctx).Into(out)
	return out, err
}
