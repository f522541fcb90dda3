package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"

	"github.com/weftnet/weft/backend/wireguard"
	"github.com/weftnet/weft/daemon"
)

// runWireGuard: `wireguard public-key` prints this node's public key;
// `wireguard rotate-key` replaces the private key in the state directory.
// A running weftd notices the new key within a second, re-prepares its
// device and republishes its lease; peers switch to the new key when they
// see the lease. Neither command prints the private key.
func runWireGuard(_ context.Context, e *env, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: say public-key or rotate-key", errUsage)
	}
	verb, args := args[0], args[1:]
	fset := flag.NewFlagSet("wireguard "+verb, flag.ContinueOnError)
	stateDir := fset.String("state-dir", daemon.DefaultStateDir, "weftd's --state-dir on this node")
	if err := parseFlags(fset, e, args); err != nil {
		return err
	}
	if err := noArgs(fset.Args()); err != nil {
		return err
	}
	path := wireguard.KeyPath(*stateDir)
	switch verb {
	case "public-key":
		pub, err := wireguard.ReadKey(path)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("no wireguard key at %s: weftd creates it on its first start with the wireguard backend (or give --state-dir)", path)
		}
		if err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, pub)
		return nil
	case "rotate-key":
		pub, err := wireguard.RotateKey(path)
		if err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, pub)
		fmt.Fprintf(e.stderr, "new wireguard key written to %s; a running weftd republishes its lease with it within seconds (check: weftctl leases -o json)\n", path)
		return nil
	}
	return fmt.Errorf("%w: unknown verb %q: say public-key or rotate-key", errUsage, verb)
}
