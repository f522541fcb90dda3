package masq

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"strconv"
	"strings"
	"sync"

	"github.com/coreos/go-iptables/iptables"
)

// iptables chain names. POSTRTG keeps the name within iptables' 28-char
// limit and mirrors Flannel's FLANNEL-POSTRTG.
const (
	iptPostrouting = "WEFT-POSTRTG"
	iptForward     = "WEFT-FWD"
)

// iptablesLockWait is how long iptables(-restore) waits for the xtables lock
// held by another program (kube-proxy, Docker), in seconds.
const iptablesLockWait = 10

// IPTables is the iptables implementation of Manager. It drives the
// iptables/ip6tables binaries (legacy or nft flavour, whichever the host
// uses, as kube-proxy does) through go-iptables, and iptables-restore for
// the atomic replacement of its chains' contents.
type IPTables struct {
	logger *slog.Logger
	v4, v6 *iptFamily // v6 nil when ip6tables is missing

	mu sync.Mutex
}

var _ Manager = (*IPTables)(nil)

type iptFamily struct {
	ipt     *iptables.IPTables
	restore string // path of (ip6)iptables-restore
	v6      bool
}

// NewIPTables returns the iptables Manager. iptables and iptables-restore
// must be installed; ip6tables only when IPv6 rules are asked for.
func NewIPTables(logger *slog.Logger) (*IPTables, error) {
	v4, err := newIPTFamily(false)
	if err != nil {
		return nil, err
	}
	m := &IPTables{logger: logger, v4: v4}
	if v6, err := newIPTFamily(true); err == nil {
		m.v6 = v6
	} else {
		logger.Debug("ip6tables unavailable; IPv6 masquerade rules cannot be installed", "error", err)
	}
	return m, nil
}

func newIPTFamily(v6 bool) (*iptFamily, error) {
	proto, bin := iptables.ProtocolIPv4, "iptables-restore"
	if v6 {
		proto, bin = iptables.ProtocolIPv6, "ip6tables-restore"
	}
	ipt, err := iptables.New(iptables.IPFamily(proto), iptables.Timeout(iptablesLockWait))
	if err != nil {
		return nil, fmt.Errorf("iptables: %w", err)
	}
	restore, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("iptables: %w", err)
	}
	return &iptFamily{ipt: ipt, restore: restore, v6: v6}, nil
}

// hook is one of weft's chains and the built-in chain that jumps to it.
type hook struct {
	table, builtin, chain, comment string
	// appended: the jump goes at the end of the built-in chain (rules that
	// were there first, an operator's DROP, still apply), else first.
	appended bool
	// legacy is the comment of the jump older weftd versions inserted at
	// position 1 instead; it is moved to the end.
	legacy string
}

var (
	natHook = hook{table: "nat", builtin: "POSTROUTING", chain: iptPostrouting, comment: commentMasq}
	// The FORWARD jump is appended, as Flannel's is: weft's accept rules
	// come after DOCKER-USER, KUBE-FORWARD and an operator's own drops
	// (e.g. pods to 169.254.169.254).
	forwardHook = hook{table: "filter", builtin: "FORWARD", chain: iptForward, comment: commentForwardJump,
		appended: true, legacy: commentForward}
)

// commentForwardJump marks the appended FORWARD jump; weftd before it
// inserted a jump commented weft-forward at position 1.
const commentForwardJump = "weft-forward-jump"

func (h hook) jump() []string { return h.jumpWith(h.comment) }

func (h hook) jumpWith(comment string) []string {
	return []string{"-m", "comment", "--comment", comment, "-j", h.chain}
}

// Ensure implements Manager.
func (m *IPTables) Ensure(ctx context.Context, r Rules) error {
	if err := r.Validate(); err != nil {
		return err
	}
	if r.IPv6Network.IsValid() && m.v6 == nil {
		return fmt.Errorf("iptables: IPv6 network %s needs ip6tables and ip6tables-restore, which are not installed", r.IPv6Network)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	nat, fwd := natRules(r), forwardRules(r)
	randomFully := !r.DisableRandomFully && m.v4.ipt.HasRandomFully()
	if !r.DisableRandomFully && !randomFully {
		m.logger.Warn("iptables has no --random-fully; masquerading without it")
	}
	for _, f := range []*iptFamily{m.v4, m.v6} {
		if f == nil {
			continue
		}
		if f.v6 && !r.IPv6Network.IsValid() || !f.v6 && !r.Network.IsValid() {
			// The family turned off (or never on): leave nothing behind.
			if err := f.remove(ctx, natHook, forwardHook); err != nil {
				return err
			}
			continue
		}
		if r.Masquerade {
			if err := f.replace(ctx, natHook, familyRules(nat, f.v6), randomFully); err != nil {
				return err
			}
		} else if err := f.remove(ctx, natHook); err != nil {
			return err
		}
		if err := f.replace(ctx, forwardHook, familyRules(fwd, f.v6), false); err != nil {
			return err
		}
	}
	m.logger.Debug("iptables rules ensured", "network", r.Network, "subnet", r.Subnet,
		"ipv6Network", r.IPv6Network, "masquerade", r.Masquerade)
	return nil
}

// Remove implements Manager.
func (m *IPTables) Remove(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, f := range []*iptFamily{m.v4, m.v6} {
		if f == nil {
			continue
		}
		if err := f.remove(ctx, natHook, forwardHook); err != nil {
			return err
		}
	}
	m.logger.Debug("iptables rules removed")
	return nil
}

// Verify implements Manager: per family in use, weft's chains exist with
// the rule counts Ensure(r) gives and the built-in chains jump to them.
func (m *IPTables) Verify(ctx context.Context, r Rules) (bool, error) {
	if err := r.Validate(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, f := range []*iptFamily{m.v4, m.v6} {
		if f == nil || f.v6 && !r.IPv6Network.IsValid() {
			continue
		}
		checks := []struct {
			h     hook
			rules []rule
		}{{forwardHook, familyRules(forwardRules(r), f.v6)}}
		if r.Masquerade {
			checks = append(checks, struct {
				h     hook
				rules []rule
			}{natHook, familyRules(natRules(r), f.v6)})
		}
		for _, c := range checks {
			if err := ctx.Err(); err != nil {
				return false, err
			}
			ok, err := f.ipt.ChainExists(c.h.table, c.h.chain)
			if err != nil || !ok {
				return false, wrapIPT(err, "look up chain %s in table %s", c.h.chain, c.h.table)
			}
			if ok, err = f.ipt.Exists(c.h.table, c.h.builtin, c.h.jump()...); err != nil || !ok {
				return false, wrapIPT(err, "check jump %s -> %s", c.h.builtin, c.h.chain)
			}
			specs, err := f.ipt.List(c.h.table, c.h.chain)
			if err != nil {
				return false, wrapIPT(err, "list chain %s", c.h.chain)
			}
			n := 0
			for _, s := range specs {
				if strings.HasPrefix(s, "-A ") {
					n++
				}
			}
			if n != len(c.rules) {
				return false, nil
			}
		}
	}
	return true, nil
}

// wrapIPT wraps a non-nil err with what was being done; nil stays nil.
func wrapIPT(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("iptables: "+format+": %w", append(args, err)...)
}

// familyRules keeps the rules for one family; family-less rules (the
// kube-proxy mark) go to both.
func familyRules(rules []rule, v6 bool) []rule {
	var out []rule
	for _, r := range rules {
		if (!r.src.prefix.IsValid() && !r.dst.prefix.IsValid()) || r.v6 == v6 {
			out = append(out, r)
		}
	}
	return out
}

// replace fills h's chain with rules and makes sure the built-in chain
// jumps to it, in one iptables-restore --noflush run: declaring the chain
// (":CHAIN - [0:0]") flushes it and the whole table is committed at once,
// so there is no window without rules and never a duplicate.
func (f *iptFamily) replace(ctx context.Context, h hook, rules []rule, randomFully bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "*%s\n:%s - [0:0]\n", h.table, h.chain)
	for _, r := range rules {
		fmt.Fprintf(&b, "-A %s %s\n", h.chain, strings.Join(r.iptablesArgs(randomFully), " "))
	}
	// The jump goes in only if missing. A jump to a chain that does not
	// exist cannot exist either, and -C would fail on the unknown target.
	jumps, err := f.ipt.ChainExists(h.table, h.chain)
	if err != nil {
		return fmt.Errorf("iptables: look up chain %s in table %s: %w", h.chain, h.table, err)
	}
	legacy := false
	if jumps {
		if h.legacy != "" {
			if legacy, err = f.ipt.Exists(h.table, h.builtin, h.jumpWith(h.legacy)...); err != nil {
				return fmt.Errorf("iptables: check jump %s -> %s: %w", h.builtin, h.chain, err)
			}
		}
		if jumps, err = f.ipt.Exists(h.table, h.builtin, h.jump()...); err != nil {
			return fmt.Errorf("iptables: check jump %s -> %s: %w", h.builtin, h.chain, err)
		}
	}
	if legacy {
		// In the same commit: no moment without a jump.
		fmt.Fprintf(&b, "-D %s %s\n", h.builtin, strings.Join(h.jumpWith(h.legacy), " "))
	}
	switch {
	case jumps:
	case h.appended:
		fmt.Fprintf(&b, "-A %s %s\n", h.builtin, strings.Join(h.jump(), " "))
	default:
		fmt.Fprintf(&b, "-I %s 1 %s\n", h.builtin, strings.Join(h.jump(), " "))
	}
	b.WriteString("COMMIT\n")
	cmd := exec.CommandContext(ctx, f.restore, "--noflush", "--wait="+strconv.Itoa(iptablesLockWait))
	cmd.Stdin = strings.NewReader(b.String())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: replace chain %s in table %s: %w: %s", f.restore, h.chain, h.table, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// remove deletes every jump to each hook's chain and the chain itself.
// Missing is success.
func (f *iptFamily) remove(ctx context.Context, hooks ...hook) error {
	for _, h := range hooks {
		if err := ctx.Err(); err != nil {
			return err
		}
		exists, err := f.ipt.ChainExists(h.table, h.chain)
		if err != nil {
			return fmt.Errorf("iptables: look up chain %s in table %s: %w", h.chain, h.table, err)
		}
		if !exists {
			continue
		}
		// Delete the jump until none is left: an older run may have left
		// more than one (or one of the legacy form), and -D removes one at
		// a time.
		for _, jump := range [][]string{h.jump(), h.jumpWith(h.legacy)} {
			if jump[3] == "" {
				continue
			}
			for {
				ok, err := f.ipt.Exists(h.table, h.builtin, jump...)
				if err != nil {
					return fmt.Errorf("iptables: check jump %s -> %s: %w", h.builtin, h.chain, err)
				}
				if !ok {
					break
				}
				if err := f.ipt.Delete(h.table, h.builtin, jump...); err != nil {
					return fmt.Errorf("iptables: delete jump %s -> %s: %w", h.builtin, h.chain, err)
				}
			}
		}
		if err := f.ipt.ClearAndDeleteChain(h.table, h.chain); err != nil {
			return fmt.Errorf("iptables: delete chain %s in table %s: %w", h.chain, h.table, err)
		}
	}
	return nil
}

// iptablesArgs renders the rule as iptables match/target arguments, in the
// form iptables-save prints them (so tests can compare).
func (r rule) iptablesArgs(randomFully bool) []string {
	var a []string
	for _, m := range []struct {
		flag string
		am   addrMatch
	}{{"-s", r.src}, {"-d", r.dst}} {
		if !m.am.prefix.IsValid() {
			continue
		}
		if m.am.not {
			a = append(a, "!")
		}
		a = append(a, m.flag, m.am.prefix.Masked().String())
	}
	if r.udpDport != 0 {
		a = append(a, "-p", "udp", "-m", "udp", "--dport", strconv.Itoa(int(r.udpDport)))
	}
	if r.kubeMark {
		mark := fmt.Sprintf("0x%x/0x%x", KubeProxyMark, KubeProxyMark)
		a = append(a, "-m", "mark", "--mark", mark)
	}
	a = append(a, "-m", "comment", "--comment", r.comment)
	switch r.verdict {
	case verdictReturn:
		a = append(a, "-j", "RETURN")
	case verdictAccept:
		a = append(a, "-j", "ACCEPT")
	case verdictDrop:
		a = append(a, "-j", "DROP")
	case verdictMasquerade:
		a = append(a, "-j", "MASQUERADE")
		if randomFully {
			a = append(a, "--random-fully")
		}
	}
	return a
}
