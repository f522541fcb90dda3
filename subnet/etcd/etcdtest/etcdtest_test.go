package etcdtest

import (
	"context"
	"testing"
	"time"
)

func TestStartRestart(t *testing.T) {
	e := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := e.Client.Put(ctx, "/k", "v"); err != nil {
		t.Fatal(err)
	}
	e.Restart()
	r, err := e.Client.Get(ctx, "/k")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v" {
		t.Fatalf("after restart Get = %v", r.Kvs)
	}
}
