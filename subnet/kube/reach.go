package kube

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
)

// reach is whether the API server answers, as the requests of the store
// find it. Every request goes through it (observed), so an outage is logged
// once and its end once, whichever request — the informer's, a renewal, a
// config read's probe — notices first. Safe for concurrent use.
type reach struct {
	log *slog.Logger

	mu        sync.Mutex
	up        bool      // the last request was answered; guarded by mu
	downSince time.Time // when the outage began; zero while up; guarded by mu
	refusing  bool      // the last answer refused weftd's rights; guarded by mu
}

// observe records the outcome of one request.
func (r *reach) observe(err error) {
	switch {
	case err != nil && (apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err)):
		r.refused(err)
	case err == nil || answered(err):
		r.answered()
	case errors.Is(err, context.Canceled):
		// The caller gave up (weftd stopping, a watch replaced): says
		// nothing about the server.
	default:
		r.failed(err)
	}
}

// answered records a request the server answered: the first after an
// outage ends it, logged once.
func (r *reach) answered() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.up = true
	r.refusing = false
	r.end()
}

// refused records an answer that refuses weftd's credentials or rights: the
// server answers (an outage ends), but the user has to act, so the first of
// a run of refusals is logged with what to do. A restarted API server
// refuses for a moment while its authorizer loads; that is logged too.
func (r *reach) refused(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.up = true
	r.end()
	if !r.refusing {
		r.refusing = true
		r.log.Warn("the API server refuses weftd's request; retrying", "err", hint(err))
	}
}

// end logs the end of an outage, once; r.mu held.
func (r *reach) end() {
	if !r.downSince.IsZero() {
		r.log.Info("the API server answers again", "down_for", time.Since(r.downSince).Round(time.Millisecond))
		r.downSince = time.Time{}
	}
}

// failed records a request the server did not answer: the first starts an
// outage, logged once.
func (r *reach) failed(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.up = false
	if r.downSince.IsZero() {
		r.downSince = time.Now()
		r.log.Warn("the API server does not answer; keeping the current state and retrying", "err", hint(err))
	}
}

// isUp reports whether the last request was answered (false before the
// first).
func (r *reach) isUp() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.up
}

// answered reports whether err is the API server's own answer (a status:
// not found, forbidden, conflict …), as opposed to no answer or one that
// says the server cannot serve now.
func answered(err error) bool {
	var st apierrors.APIStatus
	if !errors.As(err, &st) {
		return false
	}
	return !apierrors.IsServiceUnavailable(err) && !apierrors.IsServerTimeout(err) && !apierrors.IsTimeout(err) &&
		!apierrors.IsTooManyRequests(err) && !apierrors.IsInternalError(err)
}

// observed is Nodes with every request's outcome recorded in r.
type observed struct {
	n Nodes
	r *reach
}

func (o observed) Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Node, error) {
	n, err := o.n.Get(ctx, name, opts)
	o.r.observe(err)
	return n, err
}

func (o observed) List(ctx context.Context, opts metav1.ListOptions) (*corev1.NodeList, error) {
	l, err := o.n.List(ctx, opts)
	o.r.observe(err)
	return l, err
}

// Watch records the start of a watch; how a watch ends is the caller's to
// record (the informer's error handler does).
func (o observed) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	w, err := o.n.Watch(ctx, opts)
	o.r.observe(err)
	return w, err
}

func (o observed) Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (*corev1.Node, error) {
	n, err := o.n.Patch(ctx, name, pt, data, opts, subresources...)
	o.r.observe(err)
	return n, err
}
