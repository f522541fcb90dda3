package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"time"
)

// backoff yields exponentially growing waits with jitter, capped at max.
type backoff struct {
	cur, max time.Duration
}

func newBackoff(start, max time.Duration) *backoff { return &backoff{cur: start, max: max} }

func (b *backoff) next() time.Duration {
	d := b.cur
	b.cur = min(b.cur*2, b.max)
	return d/2 + rand.N(d/2+1)
}

// sleepCtx waits for d or until ctx is done, whichever comes first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// retry calls f until it succeeds or ctx is done, with backoff. The first
// failure and every change of error are logged; repeats are not.
func retry[T any](ctx context.Context, log *slog.Logger, what string, f func() (T, error)) (T, error) {
	bo := newBackoff(250*time.Millisecond, 10*time.Second)
	last := ""
	for {
		v, err := f()
		if err == nil {
			if last != "" {
				log.Info(what + " succeeded after retries")
			}
			return v, nil
		}
		if err.Error() != last {
			last = err.Error()
			log.Warn(what+" failed; retrying with backoff", "err", err)
		}
		if err := sleepCtx(ctx, bo.next()); err != nil {
			var zero T
			return zero, err
		}
	}
}

func compactJSON(raw []byte) []byte {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}
