package embedded

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestStartPortZero(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Start(ctx, Config{DataDir: t.TempDir() + "/d", ListenClientURLs: []string{"http://127.0.0.1:0"}, UnsafeNoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	eps := s.Endpoints()
	if len(eps) != 1 || !strings.HasPrefix(eps[0], "http://127.0.0.1:") || strings.HasSuffix(eps[0], ":0") {
		t.Fatalf("Endpoints = %v, want the resolved port", eps)
	}
	waitDone := make(chan error, 1)
	go func() { waitDone <- s.Wait(ctx) }()
	s.Close()
	s.Close() // idempotent
	select {
	case err := <-waitDone:
		if err != nil {
			t.Fatalf("Wait after Close = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after Close")
	}
}

func TestStartBadConfig(t *testing.T) {
	ctx := context.Background()
	for _, cfg := range []Config{
		{},
		{DataDir: t.TempDir(), ListenClientURLs: []string{"127.0.0.1:2379"}},
		{DataDir: t.TempDir(), ListenClientURLs: []string{"http://127.0.0.1:0"}, ListenPeerURL: "tcp://x"},
	} {
		if s, err := Start(ctx, cfg); err == nil {
			s.Close()
			t.Errorf("Start(%+v) succeeded", cfg)
		}
	}
}
