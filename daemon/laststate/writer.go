package laststate

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"time"
)

// DefaultInterval is the least time between two writes of a Writer.
const DefaultInterval = time.Second

// WriterOptions tune a Writer. The zero value is usable.
type WriterOptions struct {
	// Logger gets write failures (the first of a spell) and their end;
	// discarded when nil.
	Logger *slog.Logger
	// Interval is the least time between two writes; DefaultInterval when
	// zero. States offered meanwhile are coalesced: only the latest is
	// written.
	Interval time.Duration
	// Version names the writer in the file (Encode's writer).
	Version string
}

// Writer saves the states one goroutine offers, on its own goroutine (Run),
// so the reconcile loop never waits for the disk and a burst of lease events
// costs one write. A state equal to the one last written is not written
// again.
type Writer struct {
	path    string
	opts    WriterOptions
	log     *slog.Logger
	pending chan *State // holds at most the latest offer
}

// NewWriter returns a writer of the file at path. It starts nothing: call
// Run.
func NewWriter(path string, opts WriterOptions) *Writer {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Writer{path: path, opts: opts, log: log, pending: make(chan *State, 1)}
}

// Offer hands st to the writer, replacing an offer not yet written. It
// never blocks. st must not be changed afterwards. Offer must be called
// from one goroutine at a time.
func (w *Writer) Offer(st *State) {
	for {
		select {
		case w.pending <- st:
			return
		default:
		}
		select {
		case <-w.pending: // drop the older offer
		default:
		}
	}
}

// Run writes offered states until ctx is done, at most one per Interval,
// and then writes the offer still pending, so a clean stop keeps the latest
// state. It returns nil: a failed write is logged and retried with the next
// offer, never a reason to stop the daemon.
func (w *Writer) Run(ctx context.Context) error {
	// last is the digest of what the file holds, as far as this writer
	// knows (ok: it knows), not a copy: with 10000 peers a copy was 4 MB
	// kept between writes.
	var last [sha256.Size]byte
	var ok bool
	failing := false
	write := func(st *State) {
		e, err := newEncoding(st, w.opts.Version)
		var sum [sha256.Size]byte
		if err == nil {
			sum = e.sum
			if ok && sum == last {
				return
			}
			err = e.save(w.path)
		}
		switch {
		case err != nil:
			ok = false
			if !failing { // once per spell of failures: the errors name temp files
				w.log.Warn("cannot write the last known state; a restart during a control-plane outage would start without it",
					"path", w.path, "err", err)
			}
			failing = true
			return
		case failing:
			failing = false
			w.log.Info("last known state written again", "path", w.path)
		}
		last, ok = sum, true
	}
	flush := func() {
		select {
		case st := <-w.pending:
			write(st)
		default:
		}
	}
	for {
		select {
		case <-ctx.Done():
			flush()
			return nil
		case st := <-w.pending:
			write(st)
		}
		t := time.NewTimer(w.opts.Interval)
		select {
		case <-ctx.Done():
			t.Stop()
			flush()
			return nil
		case <-t.C:
		}
	}
}
