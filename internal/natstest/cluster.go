package natstest

import (
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// The system user of a Cluster: it may ask the JetStream meta leader to step down, which only
// the system account can. Clients that give no credentials are the user "app" of the global
// account, as on a server without authorization.
const (
	SystemUser     = "sys"
	SystemPassword = "sys"
	appUser        = "app"
	systemAccount  = "SYS"
	// globalAccount is the account of clients without credentials, where analyzerd's
	// streams live.
	globalAccount = server.DEFAULT_GLOBAL_ACCOUNT
)

// Cluster is a JetStream cluster of servers in-process on loopback, each with fixed client and
// route ports and its own storage directory, so that a test can stop a node and start it again
// in its place. Its methods are safe for concurrent use.
type Cluster struct {
	t     testing.TB
	name  string
	opts  []Option
	mu    sync.Mutex
	nodes []*node
}

type node struct {
	name        string
	port        int
	clusterPort int
	storeDir    string
	srv         *server.Server // nil while stopped
}

// StartCluster starts a JetStream cluster of n servers named n1..nN, waits until it has a
// meta leader that every node follows and it can place a stream of n replicas, and shuts
// every server down when the test ends. opts adjust every node's options (at every start),
// for example NoAdvertise.
//
// A port found free can be taken by another process (an outgoing connection's ephemeral port)
// before the node listens on it; the node then never gets ready. The cluster is then started
// again on fresh ports, up to three times.
func StartCluster(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	c := &Cluster{t: t, name: "c", opts: opts}
	t.Cleanup(c.shutdown)
	var err error
	for range 3 {
		ports := freePorts(t, 2*n)
		dir := t.TempDir()
		c.nodes = c.nodes[:0]
		for i := 1; i <= n; i++ {
			c.nodes = append(c.nodes, &node{
				name: "n" + strconv.Itoa(i), port: ports[2*i-2], clusterPort: ports[2*i-1],
				storeDir: filepath.Join(dir, "n"+strconv.Itoa(i)),
			})
		}
		if err = c.startAll(); err == nil {
			c.WaitReady(30 * time.Second)
			return c
		}
		c.shutdown()
	}
	t.Fatalf("cluster %s: %v", c.name, err)
	return nil
}

func (c *Cluster) startAll() error {
	for i := range c.nodes {
		if err := c.start(i); err != nil {
			return err
		}
	}
	return nil
}

// freePorts are n distinct loopback ports nothing listens on (at the time of the call): each
// listener is held until all are found, so that none is handed out twice.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// Len is the number of nodes, running or not.
func (c *Cluster) Len() int { return len(c.nodes) }

// Name is the server name of node i (n1 for node 0).
func (c *Cluster) Name(i int) string { return c.nodes[i].name }

// Index is the node named name, -1 when none is.
func (c *Cluster) Index(name string) int {
	for i, n := range c.nodes {
		if n.name == name {
			return i
		}
	}
	return -1
}

// URL is node i's client URL (the same across restarts).
func (c *Cluster) URL(i int) string { return "nats://127.0.0.1:" + strconv.Itoa(c.nodes[i].port) }

// URLs are every node's client URL, comma-separated, as nats.Connect takes them.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.nodes))
	for i := range c.nodes {
		urls[i] = c.URL(i)
	}
	return strings.Join(urls, ",")
}

// Server is node i's server, nil while it is stopped.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].srv
}

func (c *Cluster) running() []*server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*server.Server
	for _, n := range c.nodes {
		if n.srv != nil {
			out = append(out, n.srv)
		}
	}
	return out
}

func (c *Cluster) options(n *node) *server.Options {
	routes := make([]string, len(c.nodes))
	for i, m := range c.nodes {
		routes[i] = "nats://127.0.0.1:" + strconv.Itoa(m.clusterPort)
	}
	// A fresh account per start: an Account belongs to one server.
	sys := server.NewAccount(systemAccount)
	o := &server.Options{
		ServerName: n.name,
		Host:       "127.0.0.1",
		Port:       n.port,
		JetStream:  true,
		StoreDir:   n.storeDir,
		Cluster:    server.ClusterOpts{Name: c.name, Host: "127.0.0.1", Port: n.clusterPort},
		Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
		Accounts:   []*server.Account{sys},
		// SystemAccount names the account; the users below put "sys" in it and clients
		// without credentials in the global account.
		SystemAccount: systemAccount,
		Users: []*server.User{
			{Username: SystemUser, Password: SystemPassword, Account: sys},
			{Username: appUser, Password: appUser},
		},
		NoAuthUser: appUser,
		NoSigs:     true,
		NoLog:      true,
	}
	for _, opt := range c.opts {
		opt(o)
	}
	return o
}

// NoAdvertise keeps the nodes from telling clients the other nodes' URLs: a client then knows
// only the URLs it was given, and cannot fail over to another node on its own.
func NoAdvertise() Option { return func(o *server.Options) { o.Cluster.NoAdvertise = true } }

// Start starts node i (again) with its name, ports and storage, and waits until it accepts
// connections; it does not wait for JetStream (see WaitReady).
func (c *Cluster) Start(i int) {
	c.t.Helper()
	require.NoError(c.t, c.start(i))
}

func (c *Cluster) start(i int) error {
	c.mu.Lock()
	n := c.nodes[i]
	running := n.srv != nil
	c.mu.Unlock()
	if running {
		return fmt.Errorf("node %s is running", n.name)
	}
	srv, err := server.NewServer(c.options(n))
	if err != nil {
		return fmt.Errorf("node %s: %w", n.name, err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return fmt.Errorf("node %s not ready for connections on ports %d and %d", n.name, n.port, n.clusterPort)
	}
	c.mu.Lock()
	n.srv = srv
	c.mu.Unlock()
	return nil
}

// Stop shuts node i down and waits until it has stopped.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	n := c.nodes[i]
	srv := n.srv
	n.srv = nil
	c.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

func (c *Cluster) shutdown() {
	for i := range c.nodes {
		c.Stop(i)
	}
}

// WaitReady waits until every node is running and follows one meta leader that counts them all
// as peers, and a stream of as many replicas as nodes can be created (then it is deleted):
// only then do streams and key-value buckets of that many replicas get placed at once.
func (c *Cluster) WaitReady(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	poll := time.NewTicker(25 * time.Millisecond)
	defer poll.Stop()
	for !c.metaReady() {
		if time.Now().After(deadline) {
			c.t.Fatalf("cluster %s: no meta leader followed by every node within %s: %s", c.name, timeout, c.describe())
		}
		<-poll.C
	}

	nc, err := nats.Connect(c.URLs())
	require.NoError(c.t, err)
	defer nc.Close()
	probe := fmt.Sprintf(`{"name":"NATSTEST_PROBE","subjects":["natstest.probe"],"storage":"memory","num_replicas":%d}`, len(c.nodes))
	var last error
	for {
		msg, err := nc.Request("$JS.API.STREAM.CREATE.NATSTEST_PROBE", []byte(probe), time.Second)
		if err == nil {
			err = apiError(msg.Data)
		}
		if err == nil {
			msg, err = nc.Request("$JS.API.STREAM.DELETE.NATSTEST_PROBE", nil, time.Second)
			if err == nil {
				err = apiError(msg.Data)
			}
		}
		if err == nil {
			return
		}
		last = err
		if time.Now().After(deadline) {
			c.t.Fatalf("cluster %s: cannot place a stream of %d replicas within %s: %v; %s", c.name, len(c.nodes), timeout, last, c.describe())
		}
		<-poll.C
	}
}

func (c *Cluster) metaReady() bool {
	srvs := c.running()
	if len(srvs) != len(c.nodes) {
		return false
	}
	leaders := 0
	for _, s := range srvs {
		if !s.JetStreamIsCurrent() {
			return false
		}
		if s.JetStreamIsLeader() {
			leaders++
			if len(s.JetStreamClusterPeers()) != len(c.nodes) {
				return false
			}
		}
	}
	return leaders == 1
}

// describe tells each node's view of the cluster, for a failure message.
func (c *Cluster) describe() string {
	c.mu.Lock()
	nodes := slices.Clone(c.nodes)
	srvs := make([]*server.Server, len(nodes))
	for i, n := range nodes {
		srvs[i] = n.srv
	}
	c.mu.Unlock()
	var b strings.Builder
	for i, n := range nodes {
		s := srvs[i]
		if s == nil {
			fmt.Fprintf(&b, "%s stopped; ", n.name)
			continue
		}
		fmt.Fprintf(&b, "%s: routes %d, meta current %t, meta leader %t, peers %v; ", n.name, s.NumRoutes(),
			s.JetStreamIsCurrent(), s.JetStreamIsLeader(), s.JetStreamClusterPeers())
	}
	return b.String()
}

// MetaLeader is the name of the JetStream meta leader, "" when no running node leads.
func (c *Cluster) MetaLeader() string {
	for _, s := range c.running() {
		if s.JetStreamIsLeader() {
			return s.Name()
		}
	}
	return ""
}

// StreamLeader is the name of the node that leads stream (of the global account), "" when none
// does.
func (c *Cluster) StreamLeader(stream string) string {
	for _, s := range c.running() {
		if s.JetStreamIsStreamLeader(globalAccount, stream) {
			return s.Name()
		}
	}
	return ""
}

// ConsumerLeader is the name of the node that leads a consumer of stream, "" when none does.
func (c *Cluster) ConsumerLeader(stream, consumer string) string {
	for _, s := range c.running() {
		if s.JetStreamIsConsumerLeader(globalAccount, stream, consumer) {
			return s.Name()
		}
	}
	return ""
}

// ClientServer is the name of the node that the client connection named client is connected
// to, "" when none is.
func (c *Cluster) ClientServer(client string) string {
	for _, s := range c.running() {
		cz, err := s.Connz(&server.ConnzOptions{})
		if err != nil {
			continue
		}
		for _, ci := range cz.Conns {
			if ci.Name == client {
				return s.Name()
			}
		}
	}
	return ""
}

// MoveMetaLeader asks the meta leader to step down in favour of the node named to, as the
// system user. The election that follows takes a moment: poll MetaLeader.
func (c *Cluster) MoveMetaLeader(to string) error {
	return c.stepDown("$JS.API.META.LEADER.STEPDOWN", to, nats.UserInfo(SystemUser, SystemPassword))
}

// MoveStreamLeader asks the leader of stream to step down in favour of the node named to.
func (c *Cluster) MoveStreamLeader(stream, to string) error {
	return c.stepDown("$JS.API.STREAM.LEADER.STEPDOWN."+stream, to)
}

// MoveConsumerLeader asks the leader of a consumer to step down in favour of the node named to.
func (c *Cluster) MoveConsumerLeader(stream, consumer, to string) error {
	return c.stepDown("$JS.API.CONSUMER.LEADER.STEPDOWN."+stream+"."+consumer, to)
}

func (c *Cluster) stepDown(subject, to string, opts ...nats.Option) error {
	nc, err := nats.Connect(c.URLs(), opts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	req, err := json.Marshal(map[string]any{"placement": map[string]string{"preferred": to}})
	if err != nil {
		return err
	}
	msg, err := nc.Request(subject, req, 2*time.Second)
	if err != nil {
		return fmt.Errorf("%s: %w", subject, err)
	}
	if err := apiError(msg.Data); err != nil {
		return fmt.Errorf("%s: %w", subject, err)
	}
	return nil
}

// apiError is the error a JetStream API response carries, nil when it has none.
func apiError(data []byte) error {
	var resp struct {
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(data, &resp); err != nil {
		return fmt.Errorf("JetStream API response %q: %w", data, err)
	}
	if resp.Error != nil {
		return fmt.Errorf("JetStream API error %d (%d): %s", resp.Error.Code, resp.Error.ErrCode, resp.Error.Description)
	}
	return nil
}
