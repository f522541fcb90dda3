package daemon

import (
	"context"
	"time"

	"github.com/weftnet/weft/internal/sdnotify"
)

// notify tells systemd about a state change; failures are logged once per
// call site's state and never stop the daemon.
func (d *Daemon) notify(state string) {
	if err := sdnotify.New(d.cfg.NotifySocket).Notify(state); err != nil {
		d.log.Warn("cannot notify systemd", "err", err)
	}
}

// runWatchdog pings systemd's watchdog at half its period while the
// reconcile loop is healthy. A stuck loop stops the pings, and systemd
// restarts weftd: the same judgement /healthz makes.
func (d *Daemon) runWatchdog(ctx context.Context) error {
	if d.cfg.WatchdogInterval <= 0 || d.cfg.NotifySocket == "" {
		return nil
	}
	t := time.NewTicker(d.cfg.WatchdogInterval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if stuck := d.stuckFor(); stuck > 0 {
				d.log.Error("reconcile loop stuck; withholding the systemd watchdog ping", "for", stuck)
				continue
			}
			d.notify("WATCHDOG=1")
		}
	}
}
