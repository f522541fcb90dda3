package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/daemon/laststate"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/subnet"
)

// adopt makes own this node's lease: configures the backend for it, writes
// the subnet file and the masquerade rules, and drops own from the peers.
func (g *generation) adopt(ctx context.Context, own subnet.Lease) error {
	d := g.d
	g.own = own
	delete(g.peers, own.Key())
	if err := g.be.Configure(ctx, own); err != nil {
		return fmt.Errorf("configure backend for %s: %w", subnet.KeyName(own.Subnet, own.IPv6Subnet), err)
	}
	// The subnet file names each family the node has a subnet of, with the
	// gateway (.1, ::1) as the address, as Flannel writes it.
	info := subnet.FileInfo{MTU: g.be.MTU(), IPMasq: d.cfg.IPMasq}
	if g.cfg.EnableIPv4 && own.Subnet.IsValid() {
		info.Network = g.cfg.Network
		info.Subnet = netip.PrefixFrom(own.Subnet.Masked().Addr().Next(), own.Subnet.Bits())
	}
	if g.cfg.EnableIPv6 && own.IPv6Subnet.IsValid() {
		info.IPv6Network = g.cfg.IPv6Network
		info.IPv6Subnet = netip.PrefixFrom(own.IPv6Subnet.Masked().Addr().Next(), own.IPv6Subnet.Bits())
	}
	if err := subnet.WriteFile(d.cfg.SubnetFile, info); err != nil {
		return err
	}
	d.subnetFileWritten.Store(true)
	d.warnPodsOutside(own.Subnet, own.IPv6Subnet)
	if g.masq != nil && (d.cfg.IPMasq || d.cfg.ForwardRules) {
		rules := g.masqRules(own)
		if err := g.masq.Ensure(ctx, rules); err != nil {
			return fmt.Errorf("forwarding and masquerade rules: %w", err)
		}
		g.rules, g.rulesSet = rules, true
	}
	g.ensureBlackholes()
	d.setLease(own)
	d.setGeneration(g.cfg, g.be.MTU())
	d.leaseHeld.Store(true)
	return nil
}

// warnPodsOutside logs the pods whose address the CNI plugin gave from a
// subnet this node no longer holds (its lease was taken over or expired
// while it was down, or the network changed): no peer routes those
// addresses here, so the pods have no network until they are recreated.
// sn and sn6 are the node's subnets (zero for a family it has none of).
func (d *Daemon) warnPodsOutside(sn, sn6 netip.Prefix) {
	stranded, err := d.strandedPods(sn, sn6)
	if err != nil {
		d.log.Warn("cannot check the pod addresses against the new subnet", "subnet", subnet.KeyName(sn, sn6), "err", err)
		return
	}
	if len(stranded) == 0 {
		return
	}
	d.log.Warn("pods hold addresses outside this node's subnet and have no network until they are recreated",
		"subnet", subnet.KeyName(sn, sn6), "pods", len(stranded), "first", stranded[:min(len(stranded), 5)],
		"hint", "delete those pods so the runtime recreates them; addresses of pods already gone are freed by the runtime's CNI GC or DEL")
}

// strandedPods lists, as "IP (container ID)", the CNI plugin's allocations
// outside both sn and sn6.
func (d *Daemon) strandedPods(sn, sn6 netip.Prefix) ([]string, error) {
	allocs, err := ipam.Outside(d.cfg.CNIIPAMDir, d.cfg.CNINetwork, sn, sn6)
	if err != nil {
		return nil, err
	}
	var pods []string
	for _, a := range allocs {
		pods = append(pods, a.IP.String()+" ("+a.ContainerID+")")
	}
	return pods, nil
}

// reconcile is the one goroutine that owns the peer set and the backend. It
// applies watch batches incrementally and makes a full pass on every
// snapshot, on every own-lease change and every ResyncInterval. Nothing is
// synced before the first snapshot: a full pass over an empty set would
// delete the kernel state a restarted node still has for its peers.
func (g *generation) reconcile(ctx context.Context, batches <-chan subnet.LeaseBatch, own <-chan subnet.Lease) error {
	d := g.d
	ticker := time.NewTicker(d.cfg.ResyncInterval)
	defer ticker.Stop()
	// The firewall check (Flannel's --iptables-resync) runs on its own,
	// shorter period: a firewall reload wipes the rules all at once.
	var firewall <-chan time.Time
	if d.cfg.FirewallResync > 0 {
		t := time.NewTicker(d.cfg.FirewallResync)
		defer t.Stop()
		firewall = t.C
	}
	// Restored peers stand in for a snapshot until the store sends one.
	haveSnapshot := g.restored
	// The last known state is offered at most once per writer interval
	// (the writer writes no more often): collecting every peer after each
	// pass was most of what weftd allocated while events trickled in. save
	// fires when a state is waiting; lastSave is the last offer.
	var save <-chan time.Time
	var lastSave time.Time
	// trim fires when the peer filter may hold entries no peer needs any
	// more (see trimPeerFilter).
	var trim <-chan time.Time
	for {
		d.heartbeat.Store(time.Now().UnixNano())
		var events []subnet.Event
		full := false
		// A pass is timed from the work it was woken for, not from the wait.
		var start time.Time
		select {
		case <-ctx.Done():
			if save != nil {
				g.saveState() // the writer's last flush may still take it
			}
			return nil
		case <-save:
			save, lastSave = nil, time.Now()
			g.saveState()
			continue
		case b := <-batches:
			start = time.Now()
			// Take every batch already waiting, so a burst of events is one
			// backend call.
			for more := true; more; {
				g.revision = max(g.revision, b.Revision)
				if b.Snapshot {
					haveSnapshot, full, events = true, true, nil
					g.live = true
					d.setControlPlane(true)
					g.replacePeers(b.Leases)
				} else {
					if applied := g.applyEvents(b.Events); events == nil {
						events = applied // the batch's own array
					} else {
						events = append(events, applied...)
					}
				}
				select {
				case b = <-batches:
				default:
					more = false
				}
			}
		case l := <-own:
			start = time.Now()
			moved := l.Subnet != g.own.Subnet || l.IPv6Subnet != g.own.IPv6Subnet
			if err := g.adopt(ctx, l); err != nil {
				d.log.Error("cannot program the re-acquired lease; retrying on the next pass", leaseAttrs(l, "err", err)...)
			}
			if moved {
				g.reaccept()
			}
			g.ownConfirmed = true
			full = true
		case <-ticker.C:
			start = time.Now()
			g.dropExpired(start)
			full = true
		case <-firewall:
			g.checkFirewall(ctx)
			continue
		case <-trim:
			trim = nil
			g.updatePeerFilter(ctx, false)
			if g.filterTrimPending() { // it failed: retry
				trim = time.After(d.cfg.PeerFilterGrace)
			}
			continue
		}
		g.publishIgnored()
		if !haveSnapshot {
			continue
		}
		if full {
			// The peers may have changed anywhere: the filter is set from
			// the whole set.
			g.filterIdx = nil
		}
		g.updatePeerFilter(ctx, true)
		if full {
			g.sync(ctx, start)
		} else if len(events) > 0 {
			err := g.be.Apply(ctx, events)
			d.recordPass("incremental", start, err)
		}
		// What the filter holds beyond the peers is taken out later, all
		// at once (see Config.PeerFilterGrace), not by this pass: the next
		// change would wait for the kernel's removal.
		if trim == nil && g.filterTrimPending() {
			trim = time.After(d.cfg.PeerFilterGrace)
		}
		switch wait := laststate.DefaultInterval - time.Since(lastSave); {
		case save != nil: // already due
		case wait <= 0:
			lastSave = time.Now()
			g.saveState()
		default:
			save = time.After(wait)
		}
	}
}

// peerList is a copy of the peer set, of exactly its size (grown by
// appending, a copy of 10000 peers was twice as large for a while).
func (g *generation) peerList() []subnet.Lease {
	peers := make([]subnet.Lease, 0, len(g.peers))
	for _, l := range g.peers {
		peers = append(peers, l)
	}
	return peers
}

func (g *generation) sync(ctx context.Context, start time.Time) {
	peers := g.peerList()
	rc, counts := g.be.(backend.RepairCounter)
	var before uint64
	if counts {
		before = rc.Repairs()
	}
	err := g.be.Sync(ctx, peers)
	g.ensureBlackholes()
	g.d.recordPass("full", start, err)
	// The first pass of a generation programs the node; later ones find
	// drift, which is what the repairs metric reports.
	if counts && g.synced {
		if n := rc.Repairs() - before; n > 0 {
			g.d.metrics.repairs.Add(float64(n))
			g.d.log.Info("full pass repaired drifted kernel state", "changes", n)
		}
	}
	if !g.synced {
		g.d.peersProgrammed.Store(true)
		close(g.programmed)
	}
	g.synced = true
}

func (d *Daemon) recordPass(kind string, start time.Time, err error) {
	d.metrics.reconcilePasses.WithLabelValues(kind).Inc()
	d.metrics.reconcileSeconds.WithLabelValues(kind).Observe(time.Since(start).Seconds())
	msg := ""
	if err != nil {
		msg = err.Error()
		d.metrics.reconcileErrors.WithLabelValues(kind).Inc()
	}
	d.mu.Lock()
	prev := d.status.LastSyncError
	d.status.LastSync = time.Now()
	d.status.LastSyncError = msg
	d.mu.Unlock()
	// Log a problem when it appears or changes, and its end; the same error
	// pass after pass is counted, not logged again.
	switch {
	case msg != "" && msg != prev:
		d.log.Warn("reconcile pass left work for the next one", "kind", kind, "err", err)
	case msg == "" && prev != "":
		d.log.Info("reconcile pass succeeded again", "kind", kind)
	}
}

// replacePeers sets the peer set to the acceptable leases of a snapshot.
// What is remembered of ignored leases is cut down to the snapshot's, so a
// lease refused once is not logged again by every re-list, and the memory
// of refusals never outgrows the store.
func (g *generation) replacePeers(leases []subnet.Lease) {
	g.peers = make(map[netip.Prefix]subnet.Lease, len(leases))
	g.others = map[netip.Prefix]subnet.Lease{}
	present := make(map[netip.Prefix]bool, len(leases))
	ownSeen := false
	for _, l := range leases {
		k := l.Key()
		present[k] = true
		if k == g.own.Key() {
			ownSeen = true
			g.checkOwnLease(subnet.Event{Type: subnet.EventAdded, Lease: l})
		}
		if g.accept(l) {
			g.peers[k] = l
		} else {
			g.others[k] = l
		}
	}
	for sn := range g.ignored {
		if !present[sn] {
			delete(g.ignored, sn)
		}
	}
	if !ownSeen {
		g.checkOwnLease(subnet.Event{Type: subnet.EventRemoved, Lease: g.own})
	}
}

// checkOwnLease asks keepLease to verify our lease with the store when ev
// says our key was deleted or now carries another node's address.
func (g *generation) checkOwnLease(ev subnet.Event) {
	if ev.Lease.Key() != g.own.Key() {
		return
	}
	if ev.Type == subnet.EventAdded && subnet.SameNode(ev.Lease.Attrs, g.own.Attrs) {
		return
	}
	select {
	case g.checkOwn <- struct{}{}:
	default: // a check is already pending
	}
}

// applyEvents updates the peer set and returns the events the backend must
// see: only those about acceptable peers, and a removal for a peer whose
// lease changed into something we no longer accept. They are written over
// events (the receiver owns a batch): a burst of thousands of leases is not
// copied again.
func (g *generation) applyEvents(events []subnet.Event) []subnet.Event {
	out := events[:0]
	for _, ev := range events {
		g.checkOwnLease(ev)
		sn := ev.Lease.Key()
		delete(g.others, sn)
		old, known := g.peers[sn]
		var was *subnet.Lease
		if known {
			was = &old
		}
		if ev.Type == subnet.EventRemoved {
			delete(g.ignored, sn)
		}
		if ev.Type == subnet.EventAdded && g.accept(ev.Lease) {
			g.peers[sn] = ev.Lease
			g.noteFilterChange(sn, was, &ev.Lease)
			out = append(out, ev)
			continue
		}
		if ev.Type == subnet.EventAdded {
			g.others[sn] = ev.Lease
		}
		if known {
			delete(g.peers, sn)
			g.noteFilterChange(sn, was, nil)
			out = append(out, subnet.Event{Type: subnet.EventRemoved, Lease: ev.Lease})
		}
	}
	return out
}

// ipv6Carrier is the underlay family a backend carries IPv6 pod traffic
// over: its IPv6Carrier when it says (backend.IPv6Carrier), else IPv6.
func ipv6Carrier(be backend.Backend) backend.Family {
	if c, ok := be.(backend.IPv6Carrier); ok {
		return c.IPv6Carrier()
	}
	return backend.IPv6
}

// maxIgnored bounds the refusals remembered (to log each once): a store
// flooded with bad keys costs counting, not memory.
const maxIgnored = 4096

// peerNode is this node as backend.CheckPeer judges leases against it.
func (g *generation) peerNode() backend.PeerNode {
	return backend.PeerNode{Config: g.cfg, Own: g.own, PublicIP: g.underlay.PublicIP, PublicIPv6: g.underlay.PublicIPv6,
		IPv6Carrier: ipv6Carrier(g.be)}
}

// accept reports whether l is a peer this node should program, by
// backend.CheckPeer, the rules every backend applies too. Our own lease is
// silently skipped; anything else unusable is logged once per subnet and
// reason and counted.
func (g *generation) accept(l subnet.Lease) bool {
	v := backend.CheckPeer(g.peerNode(), l)
	if v.Own {
		return false
	}
	k := l.Key()
	if v.Usable() {
		delete(g.ignored, k)
		return true
	}
	why := v.Reason()
	prev, seen := g.ignored[k]
	if seen && prev == why {
		return false
	}
	g.d.metrics.peersIgnored.Inc()
	if !seen && len(g.ignored) >= maxIgnored {
		if !g.ignoredFull {
			g.ignoredFull = true
			g.d.log.Warn("many unusable leases in the store; further ones are counted in weft_peer_leases_ignored_total, not logged",
				"logged", len(g.ignored))
		}
		return false
	}
	g.ignored[k] = why
	g.d.log.Warn("ignoring a lease", leaseAttrs(l, "reason", why)...)
	return false
}
