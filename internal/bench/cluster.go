package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gopkg.in/yaml.v3"

	"github.com/analyzerd/analyzerd/internal/config"
)

// cluster is the bench's NATS: one server, or a JetStream cluster of several in this
// process on loopback, each with its storage under dir.
type cluster struct {
	servers []*server.Server
}

// startCluster starts n servers (routed together when n > 1) and, for a cluster, waits until
// it can place a stream of n replicas.
func startCluster(ctx context.Context, dir string, n int) (*cluster, error) {
	clientPorts, routePorts := make([]int, n), make([]int, n)
	for i := range n {
		var err error
		if clientPorts[i], err = freePort(); err != nil {
			return nil, err
		}
		if routePorts[i], err = freePort(); err != nil {
			return nil, err
		}
	}
	c := &cluster{}
	for i := range n {
		o := &server.Options{
			ServerName: "n" + strconv.Itoa(i+1),
			Host:       "127.0.0.1",
			Port:       clientPorts[i],
			JetStream:  true,
			StoreDir:   filepath.Join(dir, "nats", "n"+strconv.Itoa(i+1)),
			NoSigs:     true,
			NoLog:      true,
		}
		if n > 1 {
			o.Cluster = server.ClusterOpts{Name: "bench", Host: "127.0.0.1", Port: routePorts[i]}
			for j := range n {
				if j != i {
					o.Routes = append(o.Routes, server.RoutesFromStr("nats://127.0.0.1:"+strconv.Itoa(routePorts[j]))...)
				}
			}
		}
		s, err := server.NewServer(o)
		if err != nil {
			c.shutdown()
			return nil, fmt.Errorf("nats server %s: %w", o.ServerName, err)
		}
		s.Start()
		c.servers = append(c.servers, s)
	}
	for _, s := range c.servers {
		if !s.ReadyForConnections(10 * time.Second) {
			c.shutdown()
			return nil, fmt.Errorf("nats server %s not ready for connections", s.Name())
		}
	}
	if n > 1 {
		if err := c.waitPlaceable(ctx, n); err != nil {
			c.shutdown()
			return nil, err
		}
	}
	return c, nil
}

// waitPlaceable waits until the cluster has a meta leader and places a stream of n
// replicas (a probe, deleted at once).
func (c *cluster) waitPlaceable(ctx context.Context, n int) error {
	nc, err := nats.Connect(c.urls())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		octx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := js.CreateStream(octx, jetstream.StreamConfig{Name: "BENCH_PROBE", Subjects: []string{"bench.probe"}, Replicas: n, Storage: jetstream.MemoryStorage})
		if err == nil {
			err = js.DeleteStream(octx, "BENCH_PROBE")
		}
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("the NATS cluster places no stream of %d replicas: %w", n, errors.Join(err, ctx.Err()))
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// url is node i's client URL; urls every node's, as nats.Connect takes them.
func (c *cluster) url(i int) string { return c.servers[i].ClientURL() }

func (c *cluster) urls() string {
	var out string
	for i := range c.servers {
		if i > 0 {
			out += ","
		}
		out += c.url(i)
	}
	return out
}

func (c *cluster) shutdown() {
	for _, s := range c.servers {
		s.Shutdown()
	}
	for _, s := range c.servers {
		s.WaitForShutdown()
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// replicaConfig writes the configuration of replica id of n: the bench's, with nats.replicas
// (the streams' and the state bucket's copies) at n and state.replicaID at id. It returns
// the file's path.
func replicaConfig(dir, base, id string, n int) (string, error) {
	data, err := os.ReadFile(base)
	if err != nil {
		return "", err
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return "", fmt.Errorf("%s: %w", base, err)
	}
	if doc == nil {
		doc = map[string]any{}
	}
	section := func(name string) map[string]any {
		m, ok := doc[name].(map[string]any)
		if !ok {
			m = map[string]any{}
			doc[name] = m
		}
		return m
	}
	section("nats")["replicas"] = n
	section("state")["replicaID"] = id
	out, err := yaml.Marshal(doc)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, id+".yaml")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		return "", err
	}
	if _, err := config.Load(path); err != nil {
		return "", fmt.Errorf("the configuration of replica %s: %w", id, err)
	}
	return path, nil
}
