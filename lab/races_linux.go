package lab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// raceMarker starts every report of Go's race detector.
var raceMarker = []byte("WARNING: DATA RACE")

// DataRaces returns an error quoting every data race report in the logs of
// the lab's processes (weftd, etcd), or nil when there is none. Binaries
// built with -race write such reports (and go on running); others never do.
func (l *Lab) DataRaces() error {
	var logs []string
	for _, pat := range []string{"*.log", "*/*.log"} {
		m, err := filepath.Glob(filepath.Join(l.Dir, pat))
		if err != nil {
			return err
		}
		logs = append(logs, m...)
	}
	var errs []error
	for _, p := range logs {
		data, err := os.ReadFile(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s: %w", p, err))
			continue
		}
		for {
			i := bytes.Index(data, raceMarker)
			if i < 0 {
				break
			}
			data = data[i+len(raceMarker):]
			end := bytes.Index(data, []byte("\n==================\n"))
			if end < 0 {
				end = len(data)
			}
			errs = append(errs, fmt.Errorf("%s: %s%s", p, raceMarker, data[:end]))
			data = data[end:]
		}
	}
	return errors.Join(errs...)
}
