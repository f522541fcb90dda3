package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"text/tabwriter"
	"time"

	"github.com/weftnet/weft/daemon/laststate"
)

// lastKnownView is `weftctl status -o json` while weftd is down: the last
// known state weftd left in its state directory.
type lastKnownView struct {
	WeftdReachable  bool            `json:"weftdReachable"`
	Source          string          `json:"source"`
	Saved           time.Time       `json:"saved"`
	Writer          string          `json:"writer,omitempty"`
	Scope           string          `json:"scope"`
	Network         netip.Prefix    `json:"network"`
	Subnet          netip.Prefix    `json:"subnet"`
	PublicIP        netip.Addr      `json:"publicIP"`
	Backend         string          `json:"backend"`
	LeaseExpiration time.Time       `json:"leaseExpiration,omitzero"`
	Revision        int64           `json:"revision"`
	Peers           []lastKnownPeer `json:"peers"`
}

type lastKnownPeer struct {
	Subnet     netip.Prefix `json:"subnet"`
	PublicIP   netip.Addr   `json:"publicIP"`
	Expiration time.Time    `json:"expiration,omitzero"`
	Reserved   bool         `json:"reserved"`
}

// lastKnownStatus shows the last known state at path when weftd is not
// reachable (unreachable is that error), and returns unreachable still, so
// the exit code says weftd is down. Without a readable file it says why
// next to unreachable.
func lastKnownStatus(e *env, unreachable error, path, output string, now time.Time) error {
	st, err := laststate.Load(path, laststate.Expect{})
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w; no last known state at %s (pass --state-dir if weftd runs with another)", unreachable, path)
	}
	if err != nil {
		return fmt.Errorf("%w; the last known state is unreadable: %v", unreachable, err)
	}
	v := lastKnownView{Source: path, Saved: st.Saved, Writer: st.Writer, Scope: st.Scope, Network: st.Config.Network,
		Subnet: st.Own.Subnet, PublicIP: st.Own.Attrs.PublicIP, Backend: st.Config.BackendType, Revision: st.Revision,
		Peers: make([]lastKnownPeer, 0, len(st.Peers))}
	if !st.Own.Reserved() {
		v.LeaseExpiration = st.Own.Expiration
	}
	for _, l := range st.Peers {
		p := lastKnownPeer{Subnet: l.Subnet, PublicIP: l.Attrs.PublicIP, Reserved: l.Reserved()}
		if !l.Reserved() {
			p.Expiration = l.Expiration
		}
		v.Peers = append(v.Peers, p)
	}
	if output == "json" {
		if err := writeJSONOut(e.stdout, v); err != nil {
			return err
		}
	} else if err := writeLastKnownTable(e.stdout, v, now); err != nil {
		return err
	}
	return fmt.Errorf("%w (shown: its last known state)", unreachable)
}

func writeLastKnownTable(w io.Writer, v lastKnownView, now time.Time) error {
	fmt.Fprintf(w, "weftd is not reachable; its last known state (%s, saved %s ago by %s):\n\n",
		v.Source, now.Sub(v.Saved).Round(time.Second), dash(v.Writer))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, format string, a ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, a...)...) }
	row("Node", "%s", orDash(v.PublicIP))
	row("Network", "%s", orDash(v.Network))
	lease := orDash(v.Subnet)
	if !v.LeaseExpiration.IsZero() {
		lease += "  (" + expiresIn(v.LeaseExpiration, now) + ")"
	}
	row("Subnet", "%s", lease)
	row("Backend", "%s", dash(v.Backend))
	row("Store", "%s at revision %d", dash(v.Scope), v.Revision)
	row("Peers", "%d", len(v.Peers))
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(v.Peers) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER SUBNET\tPUBLIC IP\tLEASE")
	for _, p := range v.Peers {
		lease := "reserved"
		if !p.Reserved {
			lease = expiresIn(p.Expiration, now)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", p.Subnet, orDash(p.PublicIP), lease)
	}
	return tw.Flush()
}

func expiresIn(t, now time.Time) string {
	if !now.Before(t) {
		return fmt.Sprintf("expired %s ago", now.Sub(t).Round(time.Second))
	}
	return fmt.Sprintf("expires in %s", t.Sub(now).Round(time.Second))
}
