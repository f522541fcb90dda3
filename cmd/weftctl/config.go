package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/weftnet/weft/internal/flagenv"
	"github.com/weftnet/weft/subnet"
)

func parseFlags(fs *flag.FlagSet, e *env, args []string) error {
	fs.SetOutput(e.stderr)
	return flagenv.Parse(fs, "WEFTCTL", args, e.getenv)
}

// runConfig: `config get` prints the stored network config; `config set
// FILE|-` validates a config and stores it.
func runConfig(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: say get or set", errUsage)
	}
	verb, args := args[0], args[1:]
	fs := flag.NewFlagSet("config "+verb, flag.ContinueOnError)
	sf := addStoreFlags(fs)
	switch verb {
	case "get":
		return withStore(ctx, e, fs, sf, args, noArgs, func(ctx context.Context, m subnet.Manager) error {
			cfg, err := m.GetNetworkConfig(ctx)
			if errors.Is(err, subnet.ErrNoConfig) {
				return fmt.Errorf("no network config under %s yet: set one with `weftctl config set FILE`", sf.prefix)
			}
			if err != nil {
				return err
			}
			_, err = e.stdout.Write(append(cfg.Raw, '\n'))
			return err
		})
	case "set":
		var raw []byte
		var cfg *subnet.Config
		parse := func(rest []string) error {
			if len(rest) != 1 {
				return fmt.Errorf("%w: give one FILE, or - for standard input", errUsage)
			}
			var err error
			if rest[0] == "-" {
				raw, err = io.ReadAll(e.stdin)
			} else {
				raw, err = os.ReadFile(rest[0])
			}
			if err != nil {
				return err
			}
			// Validate before connecting: a bad file is the user's to fix,
			// whether etcd is up or not.
			cfg, err = subnet.ParseConfig(raw)
			return err
		}
		return withStore(ctx, e, fs, sf, args, parse, func(ctx context.Context, m subnet.Manager) error {
			if err := m.SetNetworkConfig(ctx, raw); err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "network config stored at %s/config\n", sf.prefix)
			if cfg.Backend == nil {
				fmt.Fprintf(e.stderr, "note: the config has no Backend, so every node runs %s (Flannel's code does; its documentation says vxlan); add \"Backend\": {\"Type\": \"vxlan\"} for vxlan\n", cfg.BackendType)
			}
			return nil
		})
	}
	return fmt.Errorf("%w: unknown verb %q: say get or set", errUsage, verb)
}

func noArgs(rest []string) error {
	if len(rest) > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, rest)
	}
	return nil
}
