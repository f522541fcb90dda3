package kube

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// TestWatchRefusalEndsTheOutage: a restarted API server refuses the
// informer's watch for a moment while its authorizer loads. That refusal is
// an answer: it ends the outage (logged once), is logged once itself with
// what to do, and does not start a second outage.
func TestWatchRefusalEndsTheOutage(t *testing.T) {
	var logs bytes.Buffer
	m := &Manager{reach: &reach{log: slog.New(slog.NewTextHandler(&logs, nil))}}
	w := &watcher{m: m}
	down := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "", errors.New("RBAC: not loaded yet"))

	w.failed(down)
	w.failed(down)
	w.failed(forbidden)
	w.failed(forbidden)
	if !m.reach.isUp() {
		t.Error("a refusal counted as no answer")
	}
	m.reach.observe(nil) // the watch is back
	w.failed(forbidden)  // a later refusal is logged again

	for msg, want := range map[string]int{
		"the API server does not answer":                           1,
		"the API server answers again":                             1,
		"the API server refuses weftd's":                           2,
		"needs the ClusterRole of deploy/kubernetes/weft-kube.yml": 2,
	} {
		if n := strings.Count(logs.String(), msg); n != want {
			t.Errorf("%q logged %d times, want %d:\n%s", msg, n, want, &logs)
		}
	}
}
