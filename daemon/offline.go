package daemon

// The last known state: how weftd starts when the lease store does not
// answer, and what it keeps on disk for that (package laststate).
//
// At start, with a usable file, the store gets storeStartWait to answer the
// config read. If it does, the node starts as always (the store's config,
// a lease acquired before anything is programmed) and the file is only
// rewritten. If it does not, the first generation starts from the file: the
// own lease as recorded, every peer whose lease has not expired by its
// recorded expiry (each checked by accept, as a peer from the store is),
// the subnet file and the CNI config — the node serves at once, /readyz
// says "degraded" and weft_control_plane_connected is 0. keepLease then
// asks the store for the lease as a start does (the same subnet unless it
// was lost meanwhile, when the pods are reported stranded as after any
// loss) and the first snapshot of the watch replaces the restored peers, so
// nothing the store deleted meanwhile survives. The file is never written
// back into the store, and it is rewritten only from state the store
// confirmed: the generation's lease acquired and a snapshot received.

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/daemon/laststate"
	"github.com/weftnet/weft/internal/version"
	"github.com/weftnet/weft/subnet"
)

// storeStartWait is how long a start with a last known state waits for the
// store before it restores from the file. A reachable store answers well
// within it; the data plane is back within a second of start either way.
const storeStartWait = 300 * time.Millisecond

func (d *Daemon) lastStatePath() string {
	if d.cfg.StateDir == "" {
		return ""
	}
	return filepath.Join(d.cfg.StateDir, laststate.FileName)
}

// loadLastState returns the last known state if there is a usable one for
// this node. A refused file is reported once, with what to do, and moved
// aside; an expired or no longer runnable one is said and ignored.
func (d *Daemon) loadLastState(underlay backend.Underlay) *laststate.State {
	path := d.lastStatePath()
	if path == "" {
		return nil
	}
	st, err := laststate.Load(path, laststate.Expect{Scope: d.deps.StoreScope, PublicIP: underlay.PublicIP, PublicIPv6: underlay.PublicIPv6})
	var bad *laststate.Error
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case errors.As(err, &bad):
		to, mvErr := laststate.MoveAside(path, time.Now())
		if mvErr != nil {
			d.log.Warn("the last known state is unusable and cannot be moved aside; starting without it",
				"err", err, "hint", bad.Hint(), "moveErr", mvErr)
			return nil
		}
		d.log.Warn("the last known state is unusable; moved it aside and starting without it",
			"err", err, "movedTo", to, "hint", bad.Hint())
		return nil
	case err != nil:
		d.log.Warn("cannot read the last known state; starting without it", "path", path, "err", err)
		return nil
	}
	if st.OwnExpired(time.Now()) {
		d.log.Info("the last known state's lease has expired; starting from the lease store only",
			"subnet", subnet.KeyName(st.Own.Subnet, st.Own.IPv6Subnet), "expired", st.Own.Expiration.Format(time.RFC3339))
		return nil
	}
	if err := d.checkBackend(st.Config, underlay); err != nil {
		d.log.Warn("cannot run the last known state's network config; starting from the lease store only", "err", err)
		return nil
	}
	return st
}

// firstConfig is the config of a start that has a last known state: the
// store's when it answers within storeStartWait with a usable one (nil
// from, a normal start), last's when it does not answer (from = last).
// (nil, nil) means the store answered without a usable config: waitConfig
// reports that as at any start.
func (d *Daemon) firstConfig(ctx context.Context, last *laststate.State, underlay backend.Underlay) (cfg *subnet.Config, from *laststate.State) {
	qctx, cancel := context.WithTimeout(ctx, storeStartWait)
	cfg, err := d.deps.Manager.GetNetworkConfig(qctx)
	cancel()
	var cfgErr *subnet.ConfigError
	switch {
	case ctx.Err() != nil:
		return nil, nil
	case err == nil:
		d.setControlPlane(true)
		if d.checkBackend(cfg, underlay) != nil {
			return nil, nil
		}
		return cfg, nil
	case errors.Is(err, subnet.ErrNoConfig) || errors.As(err, &cfgErr):
		d.setControlPlane(true)
		return nil, nil
	}
	d.log.Warn("the lease store does not answer; restoring the last known state and retrying",
		"err", err, "saved", last.Saved.Format(time.RFC3339), "subnet", subnet.KeyName(last.Own.Subnet, last.Own.IPv6Subnet), "peers", len(last.Peers))
	return last.Config, last
}

// restorePeers programs the peers of the last known state that are still
// live by their recorded expiry and pass accept, before the store is heard.
func (g *generation) restorePeers(ctx context.Context, last *laststate.State) {
	live, expired := last.Live(time.Now())
	for _, l := range live {
		if g.accept(l) {
			g.peers[l.Key()] = l
		}
	}
	g.restored = true
	g.updatePeerFilter(ctx, false)
	g.sync(ctx, time.Now())
	g.d.log.Info("restored the data plane from the last known state", "subnet", subnet.KeyName(g.own.Subnet, g.own.IPv6Subnet),
		"peers", len(g.peers), "expired", expired, "saved", last.Saved.Format(time.RFC3339))
}

// reaccept judges every lease the watch last reported again, after the own
// lease moved to another subnet (lost while the node was down or cut off):
// the subnet it left may now be another node's, a peer to program, and the
// new one is no longer a peer. Without it that peer would wait for a
// re-list, which a healthy watch never makes.
func (g *generation) reaccept() {
	if !g.live {
		return // restored peers; the first snapshot judges them all
	}
	all := g.others
	maps.Copy(all, g.peers)
	g.peers = make(map[netip.Prefix]subnet.Lease, len(all))
	g.others = make(map[netip.Prefix]subnet.Lease)
	for sn, l := range all {
		if g.accept(l) {
			g.peers[sn] = l
		} else {
			g.others[sn] = l
		}
	}
}

// dropExpired removes restored peers whose recorded expiry has passed, while
// the store has not been heard: after it, another node may own the subnet.
func (g *generation) dropExpired(now time.Time) {
	if g.live {
		return
	}
	for sn, l := range g.peers {
		if !l.Reserved() && !l.Expiration.IsZero() && !now.Before(l.Expiration) {
			delete(g.peers, sn)
			g.d.log.Info("a restored peer's lease expired by its recorded expiry; removing it", "subnet", sn)
		}
	}
}

// saveState offers the generation's state to the last-known-state writer,
// once the store has confirmed it: the lease acquired from the store and a
// watch snapshot received. The own lease is the session's when it is newer
// (renewals move its expiry).
func (g *generation) saveState() {
	w := g.d.lastState
	if w == nil || !g.live || !g.ownConfirmed {
		return
	}
	own := g.own
	if s := g.d.session.Load(); s != nil {
		if l := s.Lease(); l.Subnet == own.Subnet && l.IPv6Subnet == own.IPv6Subnet && l.Revision >= own.Revision {
			own = l
		}
	}
	w.Offer(&laststate.State{
		Scope:    g.d.deps.StoreScope,
		Config:   g.cfg,
		Own:      own,
		Peers:    g.peerList(),
		Revision: g.revision,
	})
}

// newLastStateWriter is the daemon's writer of the file; nil without a state
// directory.
func (d *Daemon) newLastStateWriter() *laststate.Writer {
	path := d.lastStatePath()
	if path == "" {
		return nil
	}
	return laststate.NewWriter(path, laststate.WriterOptions{Logger: d.log, Version: version.String("weftd")})
}

// setControlPlane records whether the lease store last answered (/readyz,
// /status, weft_control_plane_connected).
func (d *Daemon) setControlPlane(connected bool) { d.controlPlane.Store(connected) }
