package kube

import (
	"context"
	"errors"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/weftnet/weft/subnet"
)

// WatchLeases implements subnet.Manager with one informer on Node objects:
// one list, then one watch, resumed by the informer after every break (it
// re-lists when its version is too old) — never polling. The first batch is
// a snapshot, sent once the informer has synced; then every change of a
// Node's lease is an event: a Node that gains a valid lease is added, one
// whose lease changes is added again (removed first if its podCIDR
// changed), one deleted or turned corrupt is removed. Node updates that
// change no lease (status heartbeats) send nothing. If the receiver falls
// far behind, the pending events are dropped for one snapshot.
//
// While the API server is unreachable the informer retries with backoff;
// the outage is logged once, and the recovery once (with the store's other
// requests: Manager.reach).
func (m *Manager) WatchLeases(ctx context.Context, out chan<- subnet.LeaseBatch) error {
	w := &watcher{m: m, state: make(map[string]*entry), wake: make(chan struct{}, 1)}
	nodes := m.nodes
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return nodes.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return nodes.Watch(ctx, o)
		},
	}
	inf := cache.NewSharedIndexInformerWithOptions(lw, &corev1.Node{}, cache.SharedIndexInformerOptions{})
	// Keep only the lease: a Node object of a real cluster is kilobytes of
	// status, and the cache holds every Node.
	if err := inf.SetTransform(m.toEntry); err != nil {
		return fmt.Errorf("watch nodes: %w", err)
	}
	if err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) { w.failed(err) }); err != nil {
		return fmt.Errorf("watch nodes: %w", err)
	}
	reg, err := inf.AddEventHandler(w)
	if err != nil {
		return fmt.Errorf("watch nodes: %w", err)
	}
	ictx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); inf.RunWithContext(ictx) }()
	defer wg.Wait()
	defer cancel()

	if !cache.WaitForCacheSync(ctx.Done(), reg.HasSynced) {
		return ctx.Err()
	}
	for {
		b, ok := w.take()
		if ok {
			select {
			case out <- b:
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		select {
		case <-w.wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// maxPending caps the events kept for a slow receiver: past it they are
// replaced by one snapshot.
const maxPending = 4096

// watcher turns informer notifications into lease batches. The informer
// calls its On* methods from one goroutine; WatchLeases takes batches from
// another.
type watcher struct {
	m    *Manager
	wake chan struct{} // a batch may be ready

	mu sync.Mutex
	// state is node name → the informer's entry of a Node with a valid
	// lease (the same object the informer's cache holds, not a copy);
	// guarded by mu
	state    map[string]*entry
	pending  []subnet.Event // guarded by mu
	snapshot bool           // the next batch is a snapshot; guarded by mu
	started  bool           // the first snapshot was taken; guarded by mu
	rev      int64          // guarded by mu
}

// take returns the next batch, if there is one.
func (w *watcher) take() (subnet.LeaseBatch, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.started || w.snapshot {
		w.started, w.snapshot, w.pending = true, false, nil
		leases := make([]subnet.Lease, 0, len(w.state))
		for _, e := range w.state {
			leases = append(leases, e.lease)
		}
		return subnet.LeaseBatch{Snapshot: true, Leases: leases, Revision: w.rev}, true
	}
	if len(w.pending) == 0 {
		return subnet.LeaseBatch{}, false
	}
	b := subnet.LeaseBatch{Events: w.pending, Revision: w.rev}
	w.pending = nil
	return b, true
}

func (w *watcher) emitLocked(ev subnet.Event) {
	if !w.started || w.snapshot {
		return // the coming snapshot has it
	}
	if len(w.pending) >= maxPending {
		w.snapshot, w.pending = true, nil
		w.m.log.Warn("watch nodes: the receiver fell behind; sending a snapshot instead of the pending events")
		return
	}
	w.pending = append(w.pending, ev)
}

func (w *watcher) notify() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// update folds in the current version of a Node.
func (w *watcher) update(e *entry) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.rev = max(w.rev, revision(e.rv))
	old, had := w.state[e.name]
	switch {
	case !e.ok && had:
		delete(w.state, e.name)
		w.emitLocked(removed(old.lease))
	case !e.ok:
		return
	case had && sameLease(old.lease, e.lease):
		w.state[e.name] = e // newer revision, same lease: nothing to send
		return
	default:
		if had && (old.lease.Subnet != e.lease.Subnet || old.lease.IPv6Subnet != e.lease.IPv6Subnet) {
			w.emitLocked(removed(old.lease))
		}
		w.state[e.name] = e
		w.emitLocked(subnet.Event{Type: subnet.EventAdded, Lease: e.lease})
	}
	w.notify()
}

// OnAdd implements cache.ResourceEventHandler.
func (w *watcher) OnAdd(obj any, _ bool) {
	if e, ok := obj.(*entry); ok {
		w.update(e)
	}
}

// OnUpdate implements cache.ResourceEventHandler.
func (w *watcher) OnUpdate(_, obj any) { w.OnAdd(obj, false) }

// OnDelete implements cache.ResourceEventHandler. A delete the informer
// missed while disconnected comes as a DeletedFinalStateUnknown.
func (w *watcher) OnDelete(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	e, ok := obj.(*entry)
	if !ok {
		return
	}
	w.m.forget(e.name)
	w.mu.Lock()
	defer w.mu.Unlock()
	old, had := w.state[e.name]
	if !had {
		return
	}
	delete(w.state, e.name)
	w.emitLocked(removed(old.lease))
	w.notify()
}

func removed(l subnet.Lease) subnet.Event {
	return subnet.Event{Type: subnet.EventRemoved, Lease: subnet.Lease{Subnet: l.Subnet, IPv6Subnet: l.IPv6Subnet, Revision: l.Revision}}
}

func sameLease(a, b subnet.Lease) bool {
	return a.Subnet == b.Subnet && a.IPv6Subnet == b.IPv6Subnet &&
		a.Attrs.PublicIP == b.Attrs.PublicIP && a.Attrs.PublicIPv6 == b.Attrs.PublicIPv6 &&
		a.Attrs.BackendType == b.Attrs.BackendType &&
		string(a.Attrs.BackendData) == string(b.Attrs.BackendData) &&
		string(a.Attrs.BackendV6Data) == string(b.Attrs.BackendV6Data)
}

// failed is the informer's list or watch error. A watch whose version is
// too old is routine (the informer re-lists), not an outage; the rest is
// counted, and the first of an outage logged (Manager.reach).
func (w *watcher) failed(err error) {
	if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) || errors.Is(err, context.Canceled) {
		return
	}
	w.m.noteWatchError(err)
	// A watch that broke off is not a request the observed client saw end.
	// An API status it ended with (a refusal while a restarted server's
	// authorizer loads) is an answer, not an outage.
	w.m.reach.observe(err)
}

// entry is what the informer keeps of a Node: its name, its version and
// the lease it publishes (ok false when it publishes none or a corrupt
// one). A Node of a real cluster is kilobytes (status, images, managed
// fields, labels); an entry is the lease and two short strings. Entries
// are never changed once made: a new version of the Node is a new entry.
type entry struct {
	name, rv string
	lease    subnet.Lease
	ok       bool
}

// GetObjectMeta makes an entry a metav1.ObjectMetaAccessor, which is what
// the informer needs of the objects it caches: their key (the name, Nodes
// have no namespace).
func (e *entry) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Name: e.name, ResourceVersion: e.rv}
}

// toEntry is the informer's transform: a Node becomes its entry, read
// once (a corrupt lease is reported then). It is idempotent, as an
// informer's transform must be: an entry passes through.
func (m *Manager) toEntry(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	e := &entry{name: n.Name, rv: n.ResourceVersion}
	if l, ok := m.nodeLease(n); ok {
		e.lease, e.ok = l, true
	}
	return e, nil
}
