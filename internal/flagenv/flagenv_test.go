package flagenv

import (
	"flag"
	"io"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    string
		wantN   int
		wantErr bool
	}{
		{name: "default", want: "def", wantN: 1},
		{name: "env fills", env: map[string]string{"WX_ETCD_ENDPOINTS": "e", "WX_COUNT": "4"}, want: "e", wantN: 4},
		{name: "flag wins", args: []string{"--etcd-endpoints", "f"}, env: map[string]string{"WX_ETCD_ENDPOINTS": "e"}, want: "f", wantN: 1},
		{name: "bad env", env: map[string]string{"WX_COUNT": "x"}, wantErr: true},
		{name: "alias fills", env: map[string]string{"AL_ETCD_ENDPOINTS": "a", "AL_COUNT": "3"}, want: "a", wantN: 3},
		{name: "prefix wins over alias", env: map[string]string{"WX_ETCD_ENDPOINTS": "e", "AL_ETCD_ENDPOINTS": "a"}, want: "e", wantN: 1},
		{name: "flag wins over alias", args: []string{"--count", "7"}, env: map[string]string{"AL_COUNT": "3"}, want: "def", wantN: 7},
		{name: "bad alias names the alias", env: map[string]string{"AL_COUNT": "x"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			s := fs.String("etcd-endpoints", "def", "")
			n := fs.Int("count", 1, "")
			err := Parse(fs, "WX", tt.args, func(k string) string { return tt.env[k] }, "AL")
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if *s != tt.want || *n != tt.wantN {
				t.Errorf("got %q %d, want %q %d", *s, *n, tt.want, tt.wantN)
			}
		})
	}
}

func TestSplitList(t *testing.T) {
	got := SplitList(" http://a:2379, ,http://b:2379 ,")
	if len(got) != 2 || got[0] != "http://a:2379" || got[1] != "http://b:2379" {
		t.Errorf("SplitList = %q", got)
	}
	if got := SplitList(""); len(got) != 0 {
		t.Errorf("SplitList(\"\") = %q, want none", got)
	}
}
