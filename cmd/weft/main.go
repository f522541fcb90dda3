// Command weft is the weft CNI plugin. See package cniplugin.
package main

import (
	"log/slog"
	"os"

	cniplugin "github.com/weftnet/weft/cni-plugin"
)

func main() {
	// The runtime captures stderr; stdout is reserved for the result JSON.
	level := slog.LevelWarn
	if os.Getenv("WEFT_CNI_DEBUG") != "" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := cniplugin.New(log).Run(); err != nil {
		if perr := err.Print(); perr != nil {
			log.Error("write error JSON", "err", perr)
		}
		os.Exit(1)
	}
}
