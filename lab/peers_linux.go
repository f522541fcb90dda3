package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/weftnet/weft/backend"
)

// waitPeers waits until every running weftd of the lab has programmed every
// other running node as a peer, as its /status reports. /readyz says a node's
// own data plane is up; it cannot say the others have learned of it yet (in
// kube mode that takes an informer event on each of them), and a probe sent
// before then is lost: on wireguard the handshake it starts is dropped by a
// peer without the key, and is retried only after WireGuard's 5 s rekey
// timeout. Flannel nodes have no /status: they are waited for as peers only.
func (l *Lab) waitPeers(ctx context.Context) error {
	var missing []string
	ok := poll(ctx, l.timeout, 100*time.Millisecond, func() bool {
		missing = missing[:0]
		for _, n := range l.Nodes {
			if n.Flannel || !l.alive(n.Weftd) {
				continue
			}
			peers, err := peerStatus(ctx, n)
			if err != nil {
				missing = append(missing, fmt.Sprintf("%s: %v", n.Name, err))
				continue
			}
			for _, m := range l.Nodes {
				if m == n || !l.alive(m.daemon()) {
					continue
				}
				if !slices.ContainsFunc(peers, func(p backend.PeerStatus) bool {
					return p.State == backend.PeerProgrammed && m.holds(p)
				}) {
					missing = append(missing, n.Name+" lacks "+m.Name)
				}
			}
		}
		return len(missing) == 0
	})
	if !ok {
		return fmt.Errorf("peers not programmed after %s: %s", l.timeout, strings.Join(missing, ", "))
	}
	return nil
}

// holds says whether p is this node's lease: Node.Subnet is the lease's
// key, as PeerStatus.Key is.
func (n *Node) holds(p backend.PeerStatus) bool { return p.Key() == n.Subnet }

// peerStatus reads the peers of n's weftd /status.
func peerStatus(ctx context.Context, n *Node) ([]backend.PeerStatus, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+healthzAddr+"/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := httpClientIn(n.NS, time.Second).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/status: %s", resp.Status)
	}
	var st struct {
		Peers []backend.PeerStatus `json:"peers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("/status: %w", err)
	}
	return st.Peers, nil
}
