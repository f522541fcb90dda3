// Command weftctl is the operator CLI: network config, leases, reservations,
// node status, an embedded etcd for one-host use, and the multi-node lab.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/weftnet/weft/internal/flagenv"
	"github.com/weftnet/weft/internal/version"
)

// env is what every command gets: where to write and how to read the
// environment. Commands never touch os.Stdout or os.Getenv directly, so tests
// can run them in-process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	logger         *slog.Logger
}

type command struct {
	usage string // one line: arguments and what it does
	run   func(ctx context.Context, e *env, args []string) error
}

func commands() map[string]command {
	return map[string]command{
		"config":    {"get | set FILE|-    show or replace the network config (validated first)", runConfig},
		"leases":    {"[-o table|json]      list subnet leases and reservations", runLeases},
		"lease":     {"release SUBNET       delete a node's lease (or a reservation)", runLease},
		"reserve":   {"SUBNET PUBLICIP      reserve a subnet for a node; never expires", runReserve},
		"etcd":      {"[--data-dir D] [--listen-client-urls URL]   run an embedded single-node etcd", runEtcd},
		"lab":       {"up|down|status|test|exec|add-node|remove-node|restart|list   a multi-node weft cluster in network namespaces", runLab},
		"version":   {"                     print the version", runVersion},
		"status":    {"[--cluster] [--weftd-addr HOST:PORT] [-o table|json]   this node's lease, backend, peers; --cluster: every lease and its reachability", runStatus},
		"wireguard": {"public-key | rotate-key [--state-dir D]   print this node's wireguard public key, or replace its private key (weftd republishes the lease)", runWireGuard},
		"diagnose":  {"POD_IP [-o text|json]   why this node can or cannot reach a pod: owner, expected route/FDB/neighbour, what the kernel has", runDiagnose},
	}
}

// errUsage marks errors caused by how the command was called (exit 2).
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e := &env{
		stdin:  os.Stdin,
		stdout: os.Stdout,
		stderr: os.Stderr,
		getenv: os.Getenv,
		logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	os.Exit(run(ctx, e, os.Args[1:]))
}

// run dispatches args to a command and turns its error into an exit code.
func run(ctx context.Context, e *env, args []string) int {
	cmds := commands()
	args, err := globalFlags(e, args)
	if err != nil {
		fmt.Fprintf(e.stderr, "weftctl: %v\n", err)
		printUsage(e.stderr, cmds)
		return 2
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(e.stderr, cmds)
		return 2
	}
	if args[0] == "--version" {
		args[0] = "version"
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(e.stderr, "weftctl: unknown command %q\n", args[0])
		printUsage(e.stderr, cmds)
		return 2
	}
	err = c.run(ctx, e, args[1:])
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 2
	case errors.Is(err, errUsage):
		fmt.Fprintf(e.stderr, "weftctl %s: %v\nusage: weftctl %s %s\n", args[0], err, args[0], c.usage)
		return 2
	default:
		fmt.Fprintf(e.stderr, "weftctl %s: %v\n", args[0], err)
		return 1
	}
}

// globalFlags takes the store flags given before the command, as etcdctl
// takes its global flags (weftctl --etcd-endpoints URL leases), and returns
// the rest. They reach every command as its WEFTCTL_<FLAG> variable would:
// a flag after the command still wins.
func globalFlags(e *env, args []string) ([]string, error) {
	if len(args) == 0 || !strings.HasPrefix(args[0], "-") || args[0] == "-h" || args[0] == "--help" || args[0] == "--version" {
		return args, nil
	}
	fs := flag.NewFlagSet("weftctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	addStoreFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return []string{"--help"}, nil
		}
		return nil, fmt.Errorf("%w (before the command weftctl takes the etcd flags: --etcd-endpoints, --etcd-prefix, --etcd-cafile, --etcd-certfile, --etcd-keyfile, --etcd-username, --etcd-password, --etcd-password-file, --timeout; give the others after it)", err)
	}
	given := map[string]string{}
	fs.Visit(func(f *flag.Flag) { given[flagenv.VarName("WEFTCTL", f.Name)] = f.Value.String() })
	getenv := e.getenv
	e.getenv = func(k string) string {
		if v, ok := given[k]; ok {
			return v
		}
		return getenv(k)
	}
	return fs.Args(), nil
}

func printUsage(w io.Writer, cmds map[string]command) {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("usage: weftctl [etcd flags] COMMAND [flags] [args]\n\ncommands:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  %-8s %s\n", n, cmds[n].usage)
	}
	b.WriteString("\nThe etcd flags (--etcd-endpoints, --etcd-prefix, TLS, auth, --timeout) go before or after the command.\n")
	b.WriteString("Every flag can also be set as WEFTCTL_<FLAG> (e.g. WEFTCTL_ETCD_ENDPOINTS).\n")
	io.WriteString(w, b.String())
}

func runVersion(_ context.Context, e *env, _ []string) error {
	fmt.Fprintln(e.stdout, version.String("weftctl"))
	return nil
}
