package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/alloc"
	"github.com/weftnet/weft/subnet"
)

// rotatingAlloc is the alloc backend publishing {"Gen":N}, N counting
// Prepares; its first Run reports that its lease data changed, as the
// wireguard backend's does after a key rotation.
type rotatingAlloc struct {
	backend.Backend
	prepares *atomic.Int32
	gen      int32
}

func (r *rotatingAlloc) Prepare(ctx context.Context) (subnet.LeaseAttrs, error) {
	attrs, err := r.Backend.Prepare(ctx)
	if err != nil {
		return subnet.LeaseAttrs{}, err
	}
	r.gen = r.prepares.Add(1)
	attrs.BackendData = json.RawMessage(fmt.Sprintf(`{"Gen":%d}`, r.gen))
	return attrs, nil
}

func (r *rotatingAlloc) Run(ctx context.Context) error {
	if r.gen == 1 {
		return fmt.Errorf("rotated: %w", backend.ErrLeaseDataChanged)
	}
	return r.Backend.Run(ctx)
}

// TestLeaseDataChanged: a backend whose Run says its BackendData changed is
// prepared again and the node's lease (the same subnet) republished with the
// new data; the daemon keeps running.
func TestLeaseDataChanged(t *testing.T) {
	m := newStore(t, allocConfig)
	var prepares atomic.Int32
	n := startNodeWith(t, m, "198.18.0.1", "", nil, func(o backend.Options) (backend.Backend, error) {
		b, err := alloc.New(o)
		return &rotatingAlloc{Backend: b, prepares: &prepares}, err
	})
	var data string
	waitFor(t, "the lease republished with the second generation's data", func() bool {
		leases, _, err := m.ListLeases(context.Background())
		if err != nil || len(leases) != 1 {
			return false
		}
		data = string(leases[0].Attrs.BackendData)
		return data == `{"Gen":2}` && n.ready()
	})
	leases, _, _ := m.ListLeases(context.Background())
	if got := n.subnetFile(t).Subnet.Masked(); got != leases[0].Subnet {
		t.Errorf("subnet file %s, lease %s", got, leases[0].Subnet)
	}
	if prepares.Load() != 2 {
		t.Errorf("%d prepares, want 2", prepares.Load())
	}
}
