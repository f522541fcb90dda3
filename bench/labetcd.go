package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/weftnet/weft/lab"
	subnetetcd "github.com/weftnet/weft/subnet/etcd"
)

// dialLabEtcd connects to a lab's etcd. It listens on the lab's underlay,
// which only the lab's namespaces reach, so every connection is made from
// inside the lab's etcd namespace.
func dialLabEtcd(ctx context.Context, l *lab.Lab) (*clientv3.Client, error) {
	dial := nsDialer(l.Etcd.NS, 5*time.Second)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   splitList(l.Etcd.Endpoint), // a multi-member lab lists every member
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			// etcd's resolver may hand over the endpoint with its scheme.
			addr = strings.TrimPrefix(strings.TrimPrefix(addr, "http://"), "https://")
			return dial(ctx, addr)
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("etcd of lab %s: %w", l.Name, err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cli.Get(cctx, "health-probe"); err != nil {
		cli.Close()
		return nil, fmt.Errorf("etcd of lab %s at %s: %w", l.Name, l.Etcd.Endpoint, err)
	}
	return cli, nil
}

// configKey is where the network config lives (Flannel's default prefix,
// which the lab uses).
const configKey = subnetetcd.DefaultPrefix + "/config"

// subnetsDir is the directory of lease keys.
const subnetsDir = subnetetcd.DefaultPrefix + "/subnets/"
