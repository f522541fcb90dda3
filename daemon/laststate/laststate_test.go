package laststate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/subnet"
)

const testConfig = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":1}}`

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func lease(sn, ip string, expires time.Time, rev int64) subnet.Lease {
	l := subnet.Lease{
		Subnet:     netip.MustParsePrefix(sn),
		Attrs:      subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(ip), BackendType: "vxlan", BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}`)},
		Expiration: expires,
		Revision:   rev,
	}
	if !expires.IsZero() {
		l.LeaseID = rev + 1000
	}
	return l
}

func testState(t testing.TB) *State {
	t.Helper()
	cfg, err := subnet.ParseConfig([]byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	return &State{
		Scope:  "etcd /coreos.com/network",
		Config: cfg,
		Own:    lease("10.244.3.0/24", "198.18.0.11", t0.Add(24*time.Hour), 7),
		Peers: []subnet.Lease{
			lease("10.244.9.0/24", "198.18.0.13", t0.Add(time.Hour), 9),
			lease("10.244.5.0/24", "198.18.0.12", t0.Add(-time.Minute), 8), // expired at t0
			lease("10.244.7.0/24", "198.18.0.14", time.Time{}, 5),          // a reservation
		},
		Revision: 12,
	}
}

func encode(t testing.TB, st *State) []byte {
	t.Helper()
	data, err := Encode(st, "weftd test")
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// seal wraps state JSON in the envelope with a correct checksum, as a
// writer that meant it would.
func seal(format int, state string) []byte {
	sum := sha256.Sum256([]byte(state))
	return fmt.Appendf(nil, `{"format":%d,"sha256":"%s","state":%s}`, format, hex.EncodeToString(sum[:]), state)
}

// stateText is the state object of a valid file, to edit.
func stateText(t *testing.T) string {
	t.Helper()
	var env envelope
	if err := json.Unmarshal(encode(t, testState(t)), &env); err != nil {
		t.Fatal(err)
	}
	return string(env.State)
}

func TestRoundTrip(t *testing.T) {
	st := testState(t)
	path := filepath.Join(t.TempDir(), FileName)
	if err := Save(path, encode(t, st)); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	got, err := Load(path, Expect{Scope: st.Scope, PublicIP: st.Own.Attrs.PublicIP})
	if err != nil {
		t.Fatal(err)
	}
	if got.Writer != "weftd test" || got.Saved.IsZero() || got.Revision != 12 || got.Scope != st.Scope {
		t.Errorf("loaded %+v", got)
	}
	if got.Config.Network != st.Config.Network || got.Config.BackendType != "vxlan" {
		t.Errorf("config %+v", got.Config)
	}
	if !leaseEqual(got.Own, st.Own) {
		t.Errorf("own %+v, want %+v", got.Own, st.Own)
	}
	if len(got.Peers) != 3 {
		t.Fatalf("peers %v", got.Peers)
	}
	// Written sorted by subnet, every field kept.
	for i, want := range []subnet.Lease{st.Peers[1], st.Peers[2], st.Peers[0]} {
		if !leaseEqual(got.Peers[i], want) {
			t.Errorf("peer %d = %+v, want %+v", i, got.Peers[i], want)
		}
	}
	if !got.Peers[1].Reserved() || got.Peers[0].Reserved() {
		t.Error("reservation or TTL lease not kept as such")
	}
	// The same state encodes to the same bytes, whatever the peer order.
	st.Peers[0], st.Peers[2] = st.Peers[2], st.Peers[0]
	if !bytes.Equal(encode(t, st), encode(t, testState(t))) {
		t.Error("encoding depends on the peer order")
	}
}

func leaseEqual(a, b subnet.Lease) bool {
	return a.Subnet == b.Subnet && a.IPv6Subnet == b.IPv6Subnet && a.Attrs.PublicIP == b.Attrs.PublicIP &&
		a.Attrs.PublicIPv6 == b.Attrs.PublicIPv6 && string(a.Attrs.BackendV6Data) == string(b.Attrs.BackendV6Data) &&
		a.Attrs.BackendType == b.Attrs.BackendType && string(a.Attrs.BackendData) == string(b.Attrs.BackendData) &&
		a.Expiration.Equal(b.Expiration) && a.Revision == b.Revision && a.LeaseID == b.LeaseID
}

func TestLive(t *testing.T) {
	st := testState(t)
	live, expired := st.Live(t0)
	if expired != 1 || len(live) != 2 {
		t.Fatalf("live %v, expired %d; want 2 and 1", live, expired)
	}
	for _, l := range live {
		if l.Subnet == netip.MustParsePrefix("10.244.5.0/24") {
			t.Error("an expired peer is live")
		}
	}
	if st.OwnExpired(t0) || !st.OwnExpired(t0.Add(24*time.Hour)) {
		t.Error("OwnExpired wrong around the recorded expiry")
	}
	st.Own = lease("10.244.3.0/24", "198.18.0.11", time.Time{}, 7) // a reservation
	if st.OwnExpired(t0.Add(1000 * time.Hour)) {
		t.Error("a reservation expired")
	}
}

func TestRefused(t *testing.T) {
	good := encode(t, testState(t))
	text := stateText(t)
	edit := func(old, new string) []byte {
		if !strings.Contains(text, old) {
			t.Fatalf("state text lacks %q", old)
		}
		return seal(1, strings.Replace(text, old, new, 1))
	}
	flipped := bytes.Replace(good, []byte(`"revision":12`), []byte(`"revision":13`), 1)
	if bytes.Equal(flipped, good) {
		t.Fatal("the edit did not apply")
	}
	tests := []struct {
		name string
		data []byte
		want Expect
		p    Problem
	}{
		{"empty", nil, Expect{}, Truncated},
		{"blank", []byte("\n"), Expect{}, Truncated},
		{"cut in half", good[:len(good)/2], Expect{}, Truncated},
		{"cut before the last brace", good[:len(good)-2], Expect{}, Truncated},
		{"not JSON", []byte("FLANNEL_SUBNET=10.244.3.1/24\n"), Expect{}, Corrupt},
		{"JSON but not ours", []byte(`{"hello":"world"}`), Expect{}, Corrupt},
		{"a digit changed", flipped, Expect{}, Corrupt},
		{"no checksum", bytes.Replace(good, []byte(`"sha256":"`), []byte(`"sha257":"`), 1), Expect{}, Corrupt},
		{"format 0", seal(0, text), Expect{}, Corrupt},
		{"newer format", seal(2, `{"whatever":"a newer weft writes"}`), Expect{}, Newer},
		{"another scope", good, Expect{Scope: "etcd /other/network"}, OtherNetwork},
		{"another node", good, Expect{PublicIP: netip.MustParseAddr("198.18.0.99")}, OtherNetwork},
		{"peer outside the network", edit(`"10.244.9.0/24"`, `"10.245.9.0/24"`), Expect{}, Corrupt},
		{"peer of another length", edit(`"10.244.9.0/24"`, `"10.244.9.0/25"`), Expect{}, Corrupt},
		{"peer not aligned", edit(`"10.244.9.0/24"`, `"10.244.9.1/24"`), Expect{}, Corrupt},
		{"peer twice", edit(`"10.244.9.0/24"`, `"10.244.7.0/24"`), Expect{}, Corrupt},
		{"peer on the own subnet", edit(`"10.244.9.0/24"`, `"10.244.3.0/24"`), Expect{}, Corrupt},
		{"peer without address", edit(`"PublicIP":"198.18.0.13"`, `"PublicIP":"nope"`), Expect{}, Corrupt},
		{"own of another backend", edit(`"BackendType":"vxlan"`, `"BackendType":"udp"`), Expect{}, Corrupt},
		{"invalid config", edit(`"Network":"10.244.0.0/16"`, `"Network":"10.244.0.0/31"`), Expect{}, Corrupt},
		{"negative revision", edit(`"revision":12}`, `"revision":-1}`), Expect{}, Corrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), FileName)
			if err := os.WriteFile(path, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			st, err := Load(path, tt.want)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Load = %v, %v; want an *Error", st, err)
			}
			if e.Problem != tt.p || e.Path != path {
				t.Errorf("problem %v at %q, want %v at %q (%v)", e.Problem, e.Path, tt.p, path, err)
			}
			if e.Hint() == "" || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q / hint %q should name the file and say what to do", err, e.Hint())
			}
		})
	}
}

func TestBounds(t *testing.T) {
	st := testState(t)
	st.Peers = nil
	for i := range MaxPeers + 1 {
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
		st.Peers = append(st.Peers, subnet.Lease{Subnet: sn, Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("198.18.0.2"), BackendType: "vxlan"}})
	}
	if _, err := Encode(st, ""); err == nil {
		t.Error("Encode wrote more than MaxPeers peers (or peers outside the network)")
	}
	path := filepath.Join(t.TempDir(), FileName)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxBytes + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var e *Error
	if _, err := Load(path, Expect{}); !errors.As(err, &e) || e.Problem != Corrupt {
		t.Errorf("Load of a file over MaxBytes = %v, want Corrupt", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), FileName), Expect{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of no file = %v, want os.ErrNotExist", err)
	}
}

func TestMoveAside(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	for i := range KeepBad + 2 {
		if err := os.WriteFile(path, []byte("bad"), 0o600); err != nil {
			t.Fatal(err)
		}
		to, err := MoveAside(path, t0.Add(time.Duration(i)*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(to, path+".bad-") {
			t.Errorf("moved to %s", to)
		}
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused file is still in place: %v", err)
	}
	left, _ := filepath.Glob(path + ".bad-*")
	if len(left) != KeepBad || !strings.HasSuffix(left[len(left)-1], t0.Add(time.Duration(KeepBad+1)*time.Second).Format("20060102T150405.000Z")) {
		t.Errorf("kept %v, want the %d newest", left, KeepBad)
	}
}

// logBuffer is a slog destination tests read while the writer logs.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	w := NewWriter(path, WriterOptions{Interval: time.Hour, Version: "weftd test"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	revision := func() int64 {
		st, err := Load(path, Expect{})
		if err != nil {
			return -1
		}
		return st.Revision
	}
	at := func(rev int64) *State { st := testState(t); st.Revision = rev; return st }
	w.Offer(at(1))
	waitFor(t, "the first state written", func() bool { return revision() == 1 })
	// Within the interval nothing more is written; at the stop the latest
	// offer is.
	for rev := int64(2); rev <= 50; rev++ {
		w.Offer(at(rev))
	}
	if got := revision(); got != 1 {
		t.Errorf("written within the interval: revision %d", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := revision(); got != 50 {
		t.Errorf("after the stop revision %d, want the latest offer 50", got)
	}
}

func TestWriterSkipsUnchangedAndReportsFailuresOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	var logs logBuffer
	w := NewWriter(path, WriterOptions{Interval: time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	// A directory in the file's place: every write fails.
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	for rev := int64(100); rev < 105; rev++ {
		st := testState(t)
		st.Revision = rev
		w.Offer(st)
		waitFor(t, "the offer taken", func() bool { return len(w.pending) == 0 })
	}
	waitFor(t, "the failure logged", func() bool { return strings.Contains(logs.String(), "cannot write the last known state") })
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	w.Offer(testState(t))
	waitFor(t, "written again", func() bool {
		st, err := Load(path, Expect{})
		return err == nil && st.Revision == testState(t).Revision && strings.Contains(logs.String(), "written again")
	})
	if n := strings.Count(logs.String(), "cannot write"); n != 1 {
		t.Errorf("failures logged %d times, want once:\n%s", n, logs.String())
	}
	// The writer believes the file holds that state: the same state again is
	// not written (the marker stays).
	if err := os.WriteFile(path, []byte("marker"), 0o600); err != nil {
		t.Fatal(err)
	}
	w.Offer(testState(t))
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(path); err != nil || string(data) != "marker" {
		t.Errorf("an unchanged state was written again: %.40q %v", data, err)
	}
}

func FuzzDecode(f *testing.F) {
	good := encode(f, testState(f))
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(seal(2, `{}`))
	f.Add(seal(1, `{"scope":"x","config":{"Network":"10.0.0.0/8"},"own":{"subnet":"10.1.0.0/24","attrs":{"PublicIP":"1.2.3.4"}},"peers":null,"revision":0}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := Decode(data, Expect{})
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Problem < Truncated || e.Problem > OtherNetwork {
				t.Fatalf("Decode error %v is not an *Error with a problem", err)
			}
			return
		}
		// What decodes encodes again, and decodes to the same state.
		again, err := Encode(st, st.Writer)
		if err != nil {
			t.Fatalf("a decoded state does not encode: %v", err)
		}
		st2, err := Decode(again, Expect{})
		if err != nil {
			t.Fatalf("re-encoded state does not decode: %v", err)
		}
		st.Saved, st2.Saved = time.Time{}, time.Time{}
		if !reflect.DeepEqual(st.Own, st2.Own) || len(st.Peers) != len(st2.Peers) || st.Revision != st2.Revision {
			t.Fatalf("round trip changed the state: %+v vs %+v", st, st2)
		}
	})
}

// TestIPv6States keeps dual-stack and IPv6-only states: IPv6 subnets and
// addresses survive the file, and an IPv6-only node is known by its
// PublicIPv6.
func TestIPv6States(t *testing.T) {
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	for _, tc := range []struct {
		name, config string
		own, peer    subnet.Lease
	}{
		{"dual-stack", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"vxlan"}}`,
			subnet.Lease{Subnet: p("10.244.3.0/24"), IPv6Subnet: p("fd10:0:0:3::/64"), Attrs: subnet.LeaseAttrs{PublicIP: a("198.18.0.11"), PublicIPv6: a("2001:db8::11"), BackendType: "vxlan"}, Revision: 7},
			subnet.Lease{Subnet: p("10.244.4.0/24"), IPv6Subnet: p("fd10:0:0:4::/64"), Attrs: subnet.LeaseAttrs{PublicIP: a("198.18.0.12"), PublicIPv6: a("2001:db8::12"), BackendType: "vxlan"}, Revision: 8}},
		{"ipv6-only", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd10::/56","Backend":{"Type":"vxlan"}}`,
			subnet.Lease{IPv6Subnet: p("fd10:0:0:3::/64"), Attrs: subnet.LeaseAttrs{PublicIPv6: a("2001:db8::11"), BackendType: "vxlan"}, Revision: 7},
			subnet.Lease{IPv6Subnet: p("fd10:0:0:4::/64"), Attrs: subnet.LeaseAttrs{PublicIPv6: a("2001:db8::12"), BackendType: "vxlan"}, Revision: 8}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := subnet.ParseConfig([]byte(tc.config))
			if err != nil {
				t.Fatal(err)
			}
			st := &State{Scope: "etcd /coreos.com/network", Config: cfg, Own: tc.own, Peers: []subnet.Lease{tc.peer}, Revision: 9}
			path := filepath.Join(t.TempDir(), FileName)
			if err := Save(path, encode(t, st)); err != nil {
				t.Fatal(err)
			}
			got, err := Load(path, Expect{Scope: st.Scope, PublicIP: tc.own.Attrs.PublicIP, PublicIPv6: tc.own.Attrs.PublicIPv6})
			if err != nil {
				t.Fatal(err)
			}
			if !leaseEqual(got.Own, tc.own) || len(got.Peers) != 1 || !leaseEqual(got.Peers[0], tc.peer) {
				t.Errorf("loaded own %+v peers %+v", got.Own, got.Peers)
			}
			other := Expect{PublicIP: tc.peer.Attrs.PublicIP, PublicIPv6: tc.peer.Attrs.PublicIPv6}
			var e *Error
			if _, err := Load(path, other); !errors.As(err, &e) || e.Problem != OtherNetwork {
				t.Errorf("loaded as another node: %v, want OtherNetwork", err)
			}
		})
	}
}

// The streamed state bytes are exactly stateJSON's encoding, peers sorted:
// what Decode reads and what the format was before the file was streamed.
func TestEncodingIsStateJSON(t *testing.T) {
	for _, writer := range []string{"", "weftd test"} {
		st := testState(t)
		var env envelope
		data, err := Encode(st, writer)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &env); err != nil {
			t.Fatal(err)
		}
		var cfg bytes.Buffer
		if err := json.Compact(&cfg, st.Config.Raw); err != nil {
			t.Fatal(err)
		}
		want := stateJSON{Writer: writer, Scope: st.Scope, Config: cfg.Bytes(), Own: toJSON(st.Own), Revision: st.Revision}
		for _, i := range []int{1, 2, 0} { // 10.244.5, .7, .9
			want.Peers = append(want.Peers, toJSON(st.Peers[i]))
		}
		wantBytes, err := json.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(env.State, wantBytes) {
			t.Errorf("writer %q: state bytes\n%s\nwant\n%s", writer, env.State, wantBytes)
		}
		if !bytes.HasSuffix(data, []byte("}\n")) {
			t.Errorf("file does not end with }\\n: %q", data[len(data)-10:])
		}
	}
	st := testState(t)
	st.Peers = append(st.Peers, st.Peers[0])
	if _, err := Encode(st, ""); err == nil || !strings.Contains(err.Error(), "listed twice") {
		t.Errorf("Encode of a peer listed twice = %v, want refused", err)
	}
	st = testState(t)
	st.Peers = append(st.Peers, st.Own)
	if _, err := Encode(st, ""); err == nil || !strings.Contains(err.Error(), "own lease") {
		t.Errorf("Encode of the own lease as a peer = %v, want refused", err)
	}
}

// largeAllocs is how many heap allocations of more than 32 KiB were made
// so far: the last bucket of runtime/metrics' size histogram. Unlike bytes
// allocated, the race detector does not change it (its sync.Pool drops
// json's small buffers).
func largeAllocs() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs-by-size:bytes"}}
	metrics.Read(s)
	h := s[0].Value.Float64Histogram()
	return h.Counts[len(h.Counts)-1]
}

// Writing the state of 10000 peers holds no copy of it: the file is
// streamed. Before, the sorted copy, the JSON and the file's bytes were
// each megabytes, alive at once, and weftd's RSS 11 MB larger for them
// right after 10000 peers came.
func TestWriterStreams(t *testing.T) {
	st := testState(t)
	cfg, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","SubnetLen":30,"Backend":{"Type":"vxlan","VNI":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	st.Config, st.Peers = cfg, nil
	st.Own.Subnet = netip.MustParsePrefix("10.244.255.252/30")
	for i := range 10000 {
		l := lease("10.244.0.0/30", "198.18.0.2", t0.Add(time.Hour), int64(i))
		l.Subnet = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i >> 6), byte(i << 2)}), 30)
		st.Peers = append(st.Peers, l)
	}
	path := filepath.Join(t.TempDir(), FileName)
	before := largeAllocs()
	e, err := newEncoding(st, "weftd test")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.save(path); err != nil {
		t.Fatal(err)
	}
	// The sort order (4 bytes a peer) and the file's write buffer; before,
	// the copy, the duplicates' set, the JSON and the file's bytes grew by
	// doubling: 43 allocations.
	if n := largeAllocs() - before; n > 2 {
		t.Errorf("writing 10000 peers made %d allocations of more than 32 KiB; want at most 2 (stream the file)", n)
	}
	got, err := Load(path, Expect{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Peers) != 10000 {
		t.Errorf("read %d peers back, want 10000", len(got.Peers))
	}
}
