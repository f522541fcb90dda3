package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/weftnet/weft/internal/flagenv"
	"github.com/weftnet/weft/lab"
)

const labUsage = `usage: weftctl lab SUBCOMMAND [flags]

  up      --nodes N --backend vxlan|host-gw|udp|wireguard [--pods-per-node K] [--name NAME] [--bin-dir DIR] [--test] [--down]
          [--flannel-nodes n2,n3 --flannel-bin-dir DIR]   those nodes run the real Flannel (scripts/flannel.sh builds it)
          [--kube]   Kubernetes mode: kube-apiserver + kube-controller-manager, weftd --kube-subnet-mgr (scripts/kube.sh builds them)
          [--ipv6 | --ipv6-only [--ipv6-network PREFIX]]   dual stack, or IPv6 only: an IPv6 underlay, pods and probes
  down    [--name NAME]
  status  [--name NAME]
  test    [--name NAME] [--json]
  exec    [--name NAME] NODE|POD -- CMD [ARGS...]      (NODE: n1, POD: n1-p1; also sw, etcd)
  add-node     [--name NAME] [--flannel]               a node with --pods-per-node pods joins (--flannel: it runs Flannel)
  remove-node  [--name NAME] NODE                      pods deleted, weftd stopped, lease released
  restart      [--name NAME] [--kill] NODE             restart weftd, or flanneld on a Flannel node (--kill: SIGKILL first)
  switch       [--name NAME] NODE                      move the node from Flannel to weft or back, pods kept
                                                       (the steps of Documentation/migrating-from-flannel.md)
  list                                                 the labs on this machine

Every subcommand takes --name (default weft) and --state-root (default /run/weft-lab);
flags can also be set as WEFTCTL_LAB_<FLAG>, e.g. WEFTCTL_LAB_NAME.
`

// runLab implements `weftctl lab`.
func runLab(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		io.WriteString(e.stderr, labUsage)
		return flag.ErrHelp
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("lab "+sub, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() { io.WriteString(e.stderr, labUsage) }
	name := fs.String("name", lab.DefaultName, "lab name (namespaces are NAME-sw, NAME-n1, NAME-n1-p1, ...)")
	root := fs.String("state-root", lab.DefaultStateRoot, "directory holding each lab's state directory")
	switch sub {
	case "up":
		return labUp(ctx, e, fs, name, root, args)
	case "down":
		if err := parseLabFlags(fs, args, e); err != nil {
			return err
		}
		if err := lab.Down(ctx, *root, *name); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "lab %s is down\n", *name)
		return nil
	case "status":
		if err := parseLabFlags(fs, args, e); err != nil {
			return err
		}
		l, err := lab.Load(*root, *name)
		if err != nil {
			return err
		}
		return l.Status(ctx).WriteSummary(e.stdout)
	case "test":
		asJSON := fs.Bool("json", false, "print the matrix as JSON")
		if err := parseLabFlags(fs, args, e); err != nil {
			return err
		}
		l, err := lab.Load(*root, *name)
		if err != nil {
			return err
		}
		return labTest(ctx, e, l, *asJSON)
	case "exec":
		if err := parseLabFlags(fs, args, e); err != nil {
			return err
		}
		rest := fs.Args()
		if len(rest) < 1 {
			return fmt.Errorf("%w: exec needs NODE|POD -- CMD", errUsage)
		}
		target, cmd := rest[0], rest[1:]
		if len(cmd) > 0 && cmd[0] == "--" {
			cmd = cmd[1:]
		}
		if len(cmd) == 0 {
			return fmt.Errorf("%w: exec needs a command after %s --", errUsage, target)
		}
		l, err := lab.Load(*root, *name)
		if err != nil {
			return err
		}
		return l.Exec(ctx, target, cmd, os.Stdin, e.stdout, e.stderr)
	case "add-node":
		flannel := fs.Bool("flannel", false, "the new node runs the real Flannel (the lab needs a Flannel bin dir)")
		if err := parseLabFlags(fs, args, e); err != nil {
			return err
		}
		l, err := lab.Load(*root, *name)
		if err != nil {
			return err
		}
		l.SetProgress(e.stdout)
		if *flannel {
			_, err = l.AddFlannelNode(ctx)
		} else {
			_, err = l.AddNode(ctx)
		}
		if err != nil {
			return err
		}
		return l.Status(ctx).WriteSummary(e.stdout)
	case "remove-node", "restart", "switch":
		kill := fs.Bool("kill", false, "restart: SIGKILL the daemon (a crash) instead of SIGTERM")
		if err := parseLabFlags(fs, args, e); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return fmt.Errorf("%w: %s needs one NODE (n1, n2, ...)", errUsage, sub)
		}
		l, err := lab.Load(*root, *name)
		if err != nil {
			return err
		}
		l.SetProgress(e.stdout)
		switch sub {
		case "restart":
			_, err = l.Restart(ctx, fs.Arg(0), *kill)
		case "switch":
			_, err = l.Switch(ctx, fs.Arg(0))
		default:
			err = l.RemoveNode(ctx, fs.Arg(0))
		}
		if err != nil {
			return err
		}
		return l.Status(ctx).WriteSummary(e.stdout)
	case "list":
		if err := parseLabFlags(fs, args, e); err != nil {
			return err
		}
		names, err := lab.List(*root)
		if err != nil {
			return err
		}
		for _, n := range names {
			fmt.Fprintln(e.stdout, n)
		}
		return nil
	default:
		io.WriteString(e.stderr, labUsage)
		return fmt.Errorf("%w: unknown lab subcommand %q", errUsage, sub)
	}
}

func parseLabFlags(fs *flag.FlagSet, args []string, e *env) error {
	if err := flagenv.Parse(fs, "WEFTCTL_LAB", args, e.getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

func labUp(ctx context.Context, e *env, fs *flag.FlagSet, name, root *string, args []string) error {
	nodes := fs.Int("nodes", 3, "number of nodes")
	backend := fs.String("backend", "vxlan", "backend: vxlan, host-gw, udp or wireguard")
	pods := fs.Int("pods-per-node", 2, "pods attached to each node through the weft CNI plugin")
	binDir := fs.String("bin-dir", "", "directory with weftd, weft, weftctl, portmap (default: this weftctl's directory)")
	network := fs.String("network", lab.DefaultNetwork, "pod network")
	ipMasq := fs.Bool("ip-masq", true, "run weftd with --ip-masq, as a Kubernetes deployment does (pod → node-address replies need it on udp)")
	timeout := fs.Duration("ready-timeout", 60*time.Second, "how long to wait for etcd and each weftd")
	kube := fs.Bool("kube", false, "Kubernetes mode: a kube-apiserver and kube-controller-manager on the lab's etcd, one Node per lab node, weftd --kube-subnet-mgr (binaries: scripts/kube.sh)")
	runTest := fs.Bool("test", false, "run the connectivity matrix once the lab is up")
	down := fs.Bool("down", false, "tear the lab down at the end (after --test)")
	var flannelNodes []string
	fs.Func("flannel-nodes", "comma-separated nodes (n2,n3) that run the real Flannel instead of weft", func(s string) error {
		flannelNodes = flagenv.SplitList(s)
		return nil
	})
	flannelBinDir := fs.String("flannel-bin-dir", "", "directory with flanneld, flannel, bridge, host-local (what scripts/flannel.sh prints)")
	config := fs.String("config", "", "network config JSON to write instead of the one --network and --backend make")
	ipv6 := fs.Bool("ipv6", false, "dual stack: the underlay gets an IPv6 /64 too, the network enables IPv6, pods get both families, the matrix probes both")
	ipv6Only := fs.Bool("ipv6-only", false, "IPv6 only: an IPv6 underlay (etcd on it too) and an IPv6-only network (EnableIPv4 false)")
	ipv6Network := fs.String("ipv6-network", "", "IPv6 pod network with --ipv6 or --ipv6-only (default "+lab.DefaultIPv6Network+")")
	if err := parseLabFlags(fs, args, e); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if *binDir == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find bin dir: %w (pass --bin-dir)", err)
		}
		*binDir = filepath.Dir(exe)
	}
	l, err := lab.Up(ctx, lab.Options{
		Name: *name, Nodes: *nodes, Backend: *backend, PodsPerNode: *pods, BinDir: *binDir,
		StateRoot: *root, Network: *network, IPMasq: *ipMasq, Kube: *kube, Progress: e.stdout, ReadyTimeout: *timeout,
		FlannelNodes: flannelNodes, FlannelBinDir: *flannelBinDir, Config: *config,
		IPv6: *ipv6, IPv6Only: *ipv6Only, IPv6Network: *ipv6Network,
	})
	if err != nil {
		if l != nil {
			if *down {
				if derr := l.Down(context.WithoutCancel(ctx)); derr != nil {
					return errors.Join(err, derr)
				}
				return err
			}
			return fmt.Errorf("%w\nlogs are in %s; remove the partial lab with `weftctl lab down --name %s`", err, l.Dir, *name)
		}
		return err
	}
	fmt.Fprintln(e.stdout)
	if err := l.Status(ctx).WriteSummary(e.stdout); err != nil {
		return err
	}
	var testErr error
	if *runTest {
		fmt.Fprintln(e.stdout)
		testErr = labTest(ctx, e, l, false)
	}
	if *down {
		if err := l.Down(context.WithoutCancel(ctx)); err != nil {
			return errors.Join(testErr, err)
		}
		fmt.Fprintf(e.stdout, "lab %s is down\n", *name)
		return testErr
	}
	fmt.Fprintf(e.stdout, `
explore:  weftctl lab status --name %[1]s
          weftctl lab test --name %[1]s
          weftctl lab exec --name %[1]s n1 -- ip route
          weftctl lab exec --name %[1]s n1-p1 -- ping -c 3 %[2]s
logs:     %[3]s/n1/weftd.log
remove:   weftctl lab down --name %[1]s
`, *name, lastPodIP(l), l.Dir)
	return testErr
}

func lastPodIP(l *lab.Lab) string {
	ps := l.Pods()
	if len(ps) == 0 {
		return l.Etcd.Addr.String()
	}
	return ps[len(ps)-1].Addr().String()
}

// errMatrix marks a connectivity matrix with failures (exit 1).
var errMatrix = errors.New("connectivity matrix has failures")

func labTest(ctx context.Context, e *env, l *lab.Lab, asJSON bool) error {
	m, err := l.Test(ctx, lab.TestOptions{})
	if err != nil {
		return err
	}
	if asJSON {
		err = m.WriteJSON(e.stdout)
	} else {
		err = m.WriteTable(e.stdout)
	}
	if err != nil {
		return err
	}
	if !m.OK {
		return fmt.Errorf("%w: %d of %d probes failed", errMatrix, m.Failures, len(m.Probes))
	}
	return nil
}
