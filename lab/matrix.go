package lab

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Probe is one source→destination reachability check.
type Probe struct {
	From     string `json:"from"` // pod name, n1-p1
	To       string `json:"to"`   // pod name or node name
	Addr     string `json:"addr"`
	OK       bool   `json:"ok"`
	Attempts int    `json:"attempts"`
	Error    string `json:"error,omitempty"`
}

// Matrix is the result of Test.
type Matrix struct {
	Lab      string        `json:"lab"`
	Backend  string        `json:"backend"`
	Sources  []string      `json:"sources"`
	Targets  []string      `json:"targets"`
	Probes   []Probe       `json:"probes"`
	Elapsed  time.Duration `json:"elapsedNs"`
	OK       bool          `json:"ok"`
	Failures int           `json:"failures"`
}

// Probe returns the probe from→to, if any.
func (m *Matrix) Probe(from, to string) (Probe, bool) {
	for _, p := range m.Probes {
		if p.From == from && p.To == to {
			return p, true
		}
	}
	return Probe{}, false
}

// Failed returns the probes that failed.
func (m *Matrix) Failed() []Probe {
	var f []Probe
	for _, p := range m.Probes {
		if !p.OK {
			f = append(f, p)
		}
	}
	return f
}

// finish computes OK and Failures.
func (m *Matrix) finish() {
	m.Failures = len(m.Failed())
	m.OK = m.Failures == 0 && len(m.Probes) > 0
}

// WriteTable prints the matrix: one row per source pod, one column per
// target; "ok", "FAIL", or "-" for itself.
func (m *Matrix) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	fmt.Fprintf(tw, "from\\to\t%s\n", strings.Join(m.Targets, "\t"))
	for _, s := range m.Sources {
		cells := make([]string, len(m.Targets))
		for i, t := range m.Targets {
			p, ok := m.Probe(s, t)
			switch {
			case !ok:
				cells[i] = "-"
			case p.OK:
				cells[i] = "ok"
			default:
				cells[i] = "FAIL"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\n", s, strings.Join(cells, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	verdict := "all reachable"
	if !m.OK {
		verdict = fmt.Sprintf("%d FAILED", m.Failures)
	}
	_, err := fmt.Fprintf(w, "%d probes in %.1fs: %s\n", len(m.Probes), m.Elapsed.Seconds(), verdict)
	for _, p := range m.Failed() {
		fmt.Fprintf(w, "  %s -> %s (%s): %s\n", p.From, p.To, p.Addr, p.Error)
	}
	return err
}

// WriteJSON prints the matrix as indented JSON.
func (m *Matrix) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(m)
}
