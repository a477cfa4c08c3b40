package opcua

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/ua"
	"go.uber.org/goleak"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/drivers"
)

// gopcua's server (the in-process test device) leaves a goroutine per subscription
// running after Close; the driver's own goroutines are all checked.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(closing{m}, goleak.IgnoreTopFunction("github.com/gopcua/opcua/server.(*Subscription).run"))
}

// closing closes the shared servers once the tests and benchmarks ran, before the
// goroutine check.
type closing struct{ m *testing.M }

func (c closing) Run() int {
	code := c.m.Run()
	if shared.g != nil {
		shared.g.close()
	}
	if s := benchServer.srv; s != nil {
		s.Stop(nil)
		os.RemoveAll(s.dir)
	}
	return code
}

// shared is one gopcua server for the package's tests: importing its address space
// takes seconds under the race detector.
var shared struct {
	once sync.Once
	g    *gopcuaServer
	err  error
}

// freePort finds a port on 127.0.0.1 for a server that must come back on the same
// address after a restart.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// gopcuaServer is gopcua's own server in-process, security None, with a line's tags
// whose values the test sets.
type gopcuaServer struct {
	srv      *server.Server
	ns       *server.NodeNameSpace
	endpoint string
	speed    atomic.Uint64 // float64 bits
	count    atomic.Int32
	present  atomic.Bool
	part     atomic.Value // string
	close    func()
}

// newGopcuaServer returns the shared server with its tags reset.
func newGopcuaServer(t testing.TB) *gopcuaServer {
	t.Helper()
	shared.once.Do(func() { shared.g, shared.err = startGopcuaServer() })
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	g := shared.g
	g.speed.Store(0)
	g.count.Store(0)
	g.present.Store(false)
	g.part.Store("")
	return g
}

func startGopcuaServer() (*gopcuaServer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	g := &gopcuaServer{endpoint: fmt.Sprintf("opc.tcp://127.0.0.1:%d", port)}
	g.part.Store("")
	g.srv = server.New(
		server.EnableSecurity("None", ua.MessageSecurityModeNone),
		server.EnableAuthMode(ua.UserTokenTypeAnonymous),
		server.EndPoint("127.0.0.1", port),
	)
	ctx, cancel := context.WithCancel(context.Background())
	if err := g.srv.Start(ctx); err != nil {
		cancel()
		return nil, fmt.Errorf("start gopcua server: %w", err)
	}
	g.close = func() {
		g.srv.Close()
		cancel()
	}
	g.ns = server.NewNodeNameSpace(g.srv, "edged")
	dv := func(v any) *ua.DataValue {
		return &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueSourceTimestamp, Value: ua.MustVariant(v), SourceTimestamp: time.Now()}
	}
	obj := g.ns.Objects()
	for _, n := range []*server.Node{
		g.ns.AddNewVariableStringNode("Speed", func() *ua.DataValue { return dv(g.getSpeed()) }),
		g.ns.AddNewVariableStringNode("Count", func() *ua.DataValue { return dv(g.count.Load()) }),
		g.ns.AddNewVariableStringNode("Present", func() *ua.DataValue { return dv(g.present.Load()) }),
		g.ns.AddNewVariableStringNode("PartID", func() *ua.DataValue { return dv(g.part.Load().(string)) }),
		g.ns.AddNewVariableStringNode("Name", func() *ua.DataValue { return dv("line one") }),
		g.ns.AddNewVariableStringNode("Reject", false),
		g.ns.AddNewVariableStringNode("Small", int16(0)),
	} {
		obj.AddRef(n, 47 /* HasComponent */, true)
	}
	return g, nil
}

func (g *gopcuaServer) id(name string) string { return fmt.Sprintf("ns=%d;s=%s", g.ns.ID(), name) }

func (g *gopcuaServer) getSpeed() float64 { return f64(g.speed.Load()) }

func (g *gopcuaServer) setSpeed(v float64) {
	g.speed.Store(bits(v))
	g.changed("Speed")
}

func (g *gopcuaServer) changed(name string) {
	g.ns.ChangeNotification(ua.NewStringNodeID(g.ns.ID(), name))
}

// nodeServer is the node-opcua server script as a child process. Its output goes to a
// file, not a pipe, so no goroutine of the test copies it: the goroutine checks of the
// conformance suite see only the driver's.
type nodeServer struct {
	dir      string // XDG_CONFIG_HOME and HOME: its certificates survive a restart
	port     int
	args     []string
	endpoint string
	out      string // the output file of all its runs

	mu  sync.Mutex
	cmd *exec.Cmd
}

const nodeServerDir = "testdata/nodeserver"

// startNodeServer starts server.js on a free port with extra flags; a missing
// node_modules fails the test with what to run.
func startNodeServer(t testing.TB, args ...string) *nodeServer {
	t.Helper()
	if _, err := os.Stat(filepath.Join(nodeServerDir, "node_modules", "node-opcua-server")); err != nil {
		t.Fatalf("node-opcua is not installed: run make test-setup (npm ci in drivers/opcua/testdata/nodeserver): %v", err)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node is not installed (apt-get install nodejs npm), then run make test-setup (npm ci in drivers/opcua/testdata/nodeserver): %v", err)
	}
	s := &nodeServer{dir: t.TempDir(), port: freePort(t), args: args}
	s.out = filepath.Join(s.dir, "server.log")
	s.endpoint = fmt.Sprintf("opc.tcp://127.0.0.1:%d/edged", s.port)
	s.Start(t)
	t.Cleanup(func() { s.Stop(t) })
	return s
}

// startNodeServerNoCleanup starts a server that outlives t, in a folder of its own;
// its owner calls Stop and removes dir.
func startNodeServerNoCleanup(t testing.TB, args ...string) *nodeServer {
	t.Helper()
	if _, err := os.Stat(filepath.Join(nodeServerDir, "node_modules", "node-opcua-server")); err != nil {
		t.Fatalf("node-opcua is not installed: run make test-setup (npm ci in drivers/opcua/testdata/nodeserver): %v", err)
	}
	dir, err := os.MkdirTemp("", "edged-opcua-bench")
	if err != nil {
		t.Fatal(err)
	}
	s := &nodeServer{dir: dir, port: freePort(t), args: args}
	s.out = filepath.Join(s.dir, "server.log")
	s.endpoint = fmt.Sprintf("opc.tcp://127.0.0.1:%d/edged", s.port)
	s.Start(t)
	return s
}

// Start runs the script and waits for its ready line; the first start makes the
// server's certificates, which takes a few seconds.
func (s *nodeServer) Start(t testing.TB) {
	t.Helper()
	out, err := os.OpenFile(s.out, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	off, _ := out.Seek(0, io.SeekEnd)
	args := append([]string{"server.js", "--port", fmt.Sprint(s.port)}, s.args...)
	cmd := exec.Command("node", args...)
	cmd.Dir = nodeServerDir
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+s.dir, "HOME="+s.dir)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node server.js: %v", err)
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	if !s.waitLineFrom(int(off), func(l string) bool { return strings.HasPrefix(l, "ready ") }, 30*time.Second) {
		s.Stop(t)
		t.Fatalf("node server.js not ready within 30s; output:\n%s", s.output())
	}
}

// Stop kills the server, as a crash or power cut would.
func (s *nodeServer) Stop(t testing.TB) {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

func (s *nodeServer) output() string {
	b, _ := os.ReadFile(s.out)
	return string(b)
}

// waitLine waits for a line of output that match accepts.
func (s *nodeServer) waitLine(match func(string) bool, limit time.Duration) bool {
	return s.waitLineFrom(0, match, limit)
}

// waitLineFrom waits for a line at or after byte off of the output, checking the
// file every 20ms.
func (s *nodeServer) waitLineFrom(off int, match func(string) bool, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		out := s.output()
		if off < len(out) {
			for _, l := range strings.Split(out[off:], "\n") {
				if match(l) {
					return true
				}
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// nodeID names one of the script's tags.
func nodeID(name string) string { return "ns=1;s=Line1." + name }

// newDriver builds a driver through the registry, as the daemon does.
func newDriver(t testing.TB, name string, c *Config, reg ...drivers.Spec) *Driver {
	t.Helper()
	f, err := drivers.Lookup("opcua")
	if err != nil {
		t.Fatal(err)
	}
	cfg := f.NewConfig().(*Config)
	*cfg = mergeDefaults(*cfg, *c)
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	spec := drivers.Spec{Name: name, Budget: 2 * time.Second}
	if len(reg) > 0 {
		spec = reg[0]
		spec.Name = name
	}
	d, err := f.New(spec, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d.(*Driver)
}

// mergeDefaults lays the test's settings over the defaults, as YAML decoding does.
func mergeDefaults(def, c Config) Config {
	if c.SecurityPolicy == "" {
		c.SecurityPolicy = def.SecurityPolicy
	}
	if c.SecurityMode == "" && c.SecurityPolicy == PolicyNone {
		c.SecurityMode = def.SecurityMode
	}
	if c.Auth == "" {
		c.Auth = def.Auth
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = def.SessionTimeout
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = config.Duration(2 * time.Second)
	}
	if c.Reconnect.Min == 0 {
		c.Reconnect = Backoff{Min: config.Duration(50 * time.Millisecond), Max: config.Duration(500 * time.Millisecond)}
	}
	if c.Mode == "" {
		c.Mode = def.Mode
	}
	if c.Trigger.Edge == "" {
		c.Trigger.Edge = def.Trigger.Edge
	}
	return c
}

// run starts Run on its own goroutine; the returned stop cancels it and wants nil.
func run(t testing.TB, d drivers.Driver, e drivers.Emitter) (stop func(), done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- d.Run(ctx, e) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-ch:
			if err != nil {
				t.Errorf("Run returned %v after its context ended, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return within 10s of its context ending")
		}
	}
	t.Cleanup(stop)
	return stop, ch
}
