package kube_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/weftnet/weft/subnet"
	"github.com/weftnet/weft/subnet/kube"
)

// scriptedNodes answers every request with the error err holds (nil: the
// Node), and counts the requests.
type scriptedNodes struct {
	mu    sync.Mutex
	err   error
	calls int
}

func (s *scriptedNodes) set(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
}

func (s *scriptedNodes) next() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	return s.err
}

func (s *scriptedNodes) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func (s *scriptedNodes) Get(context.Context, string, metav1.GetOptions) (*corev1.Node, error) {
	if err := s.next(); err != nil {
		return nil, err
	}
	return &corev1.Node{}, nil
}

func (s *scriptedNodes) List(context.Context, metav1.ListOptions) (*corev1.NodeList, error) {
	if err := s.next(); err != nil {
		return nil, err
	}
	return &corev1.NodeList{}, nil
}

func (s *scriptedNodes) Watch(context.Context, metav1.ListOptions) (watch.Interface, error) {
	if err := s.next(); err != nil {
		return nil, err
	}
	return watch.NewEmptyWatch(), nil
}

func (s *scriptedNodes) Patch(context.Context, string, types.PatchType, []byte, metav1.PatchOptions, ...string) (*corev1.Node, error) {
	if err := s.next(); err != nil {
		return nil, err
	}
	return &corev1.Node{}, nil
}

// TestConfigReadNeedsTheAPI: the network config is a file, but a read says
// whether the API server answers (weftd restores its last known state when
// it does not); while it answers, reads make no request; an outage and its
// end are each logged once.
func TestConfigReadNeedsTheAPI(t *testing.T) {
	refused := &url.Error{Op: "Get", URL: "https://198.18.0.2:6443/api/v1/nodes/n1", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	nodes := schema.GroupResource{Resource: "nodes"}
	for _, tc := range []struct {
		name        string
		err         error
		unreachable bool
	}{
		{"node there", nil, false},
		{"node not registered yet", apierrors.NewNotFound(nodes, "n1"), false},
		{"forbidden: an answer, for AcquireLease to report", apierrors.NewForbidden(nodes, "n1", errors.New("no")), false},
		{"connection refused", refused, true},
		{"caller's deadline", context.DeadlineExceeded, true},
		{"service unavailable", apierrors.NewServiceUnavailable("etcd down"), true},
		{"internal error", apierrors.NewInternalError(errors.New("etcdserver: request timed out")), true},
		{"server timeout", apierrors.NewServerTimeout(nodes, "get", 1), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := filepath.Join(t.TempDir(), "net-conf.json")
			if err := os.WriteFile(conf, []byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`), 0o600); err != nil {
				t.Fatal(err)
			}
			var logs syncBuffer
			api := &scriptedNodes{}
			api.set(tc.err)
			m, err := kube.New(kube.Options{Nodes: api, NodeName: "n1", NetConfigPath: conf, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			for range 3 {
				_, err = m.GetNetworkConfig(t.Context())
			}
			if got := errors.Is(err, subnet.ErrUnreachable); got != tc.unreachable || (err == nil) != !tc.unreachable {
				t.Fatalf("config read: %v; want unreachable %v", err, tc.unreachable)
			}
			outage := strings.Count(logs.String(), "the API server does not answer")
			if !tc.unreachable {
				if api.count() != 1 || outage != 0 {
					t.Errorf("%d requests for 3 reads (want 1: once answered, a read asks no more), outage logged %d times", api.count(), outage)
				}
				return
			}
			if api.count() != 3 || outage != 1 {
				t.Errorf("%d requests for 3 reads (want 3), outage logged %d times (want once)", api.count(), outage)
			}
			api.set(nil)
			if _, err := m.GetNetworkConfig(t.Context()); err != nil {
				t.Fatalf("read with the API back: %v", err)
			}
			if n := strings.Count(logs.String(), "the API server answers again"); n != 1 {
				t.Errorf("recovery logged %d times, want once:\n%s", n, &logs)
			}
		})
	}
}
