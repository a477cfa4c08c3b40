// Package testmqtt runs a real mosquitto broker for tests, on 127.0.0.1 and a free port,
// stopped when the test ends: plain TCP or TLS (with client certificates if asked, from
// a test CA made on the spot), and able to be stopped, killed and started again on the
// same port, as outage tests need.
package testmqtt

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// readyTimeout bounds the wait for mosquitto to accept connections.
	readyTimeout = 10 * time.Second
	// stopTimeout bounds the wait for mosquitto to exit after SIGTERM; then it is killed.
	stopTimeout = 10 * time.Second
	// bindAttempts covers the race between releasing a probed port and mosquitto
	// binding it: another process may take it in between.
	bindAttempts = 5
	// rebindWait is how long Start keeps trying the server's port when restarting.
	rebindWait = 5 * time.Second
)

// binaryPaths are searched after PATH: Debian installs mosquitto in /usr/sbin, which is
// not on an ordinary user's PATH.
var binaryPaths = []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"}

// Options configure a Server.
type Options struct {
	// TLS, when set, makes the listener TLS-only (URL ssl://...).
	TLS *TLSOptions
	// Persistence keeps sessions and queued messages across Stop and Start: mosquitto
	// saves its state at Stop and once a second, so Kill loses up to the last second's
	// changes, as a crashed broker would. Off, a restarted broker has forgotten every
	// session.
	Persistence bool
}

// TLSOptions configure a TLS listener.
type TLSOptions struct {
	// RequireClientCert makes the broker refuse clients without a certificate signed
	// by the test CA (mosquitto's require_certificate).
	RequireClientCert bool
	// Certs are the CA and certificates to use; nil makes fresh ones with NewCerts.
	Certs *Certs
}

// Server is one mosquitto the test owns. It is killed when the test ends, and its log
// (every run's) is added to the test's output if the test failed. Its methods are safe
// from several goroutines, but Start, Stop and Kill fail the test with t.Fatalf, so
// call them from the test's own goroutine.
type Server struct {
	t     testing.TB
	bin   string
	conf  string
	addr  string // 127.0.0.1:port, the same across restarts
	url   string
	certs *Certs
	out   *lockedBuffer // output of every run

	mu   sync.Mutex
	proc *process // nil while stopped
	runs int
}

// process is one run of mosquitto.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when Wait returned
	err    error         // Wait's result, set before exited closes
}

// Start runs mosquitto for the test and returns its URL (tcp://127.0.0.1:PORT). The
// broker is killed when the test ends; its log is added to the test's output if the
// test failed. A missing mosquitto fails the test: the MQTT tests are part of the
// suite, not optional.
func Start(t testing.TB) string {
	t.Helper()
	return StartServer(t, Options{}).URL()
}

// StartTLS runs mosquitto with a TLS listener and returns its URL
// (ssl://127.0.0.1:PORT) and the certificates: the CA that signed the broker's
// certificate (valid for 127.0.0.1 and localhost) and a client certificate it also
// signed.
func StartTLS(t testing.TB, opts TLSOptions) (url string, certs *Certs) {
	t.Helper()
	s := StartServer(t, Options{TLS: &opts})
	return s.URL(), s.Certs()
}

// StartServer runs mosquitto as o says and returns it running, ready for connections.
func StartServer(t testing.TB, o Options) *Server {
	t.Helper()
	bin, err := findMosquitto()
	if err != nil {
		t.Fatalf("mosquitto not found (%v); run `make test`, which installs it (Debian package mosquitto)", err)
	}
	dir := t.TempDir()
	s := &Server{t: t, bin: bin, out: new(lockedBuffer)}
	if o.TLS != nil {
		s.certs = o.TLS.Certs
		if s.certs == nil {
			s.certs = NewCerts(t)
		}
	}
	// Registered after TempDir's, so it runs first: the broker stops before its
	// folder is removed.
	t.Cleanup(s.cleanup)
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("find a free port for mosquitto: %v", err)
		}
		s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		s.url = "tcp://" + s.addr
		if s.certs != nil {
			s.url = "ssl://" + s.addr
		}
		s.conf = filepath.Join(dir, "mosquitto-"+strconv.Itoa(port)+".conf")
		if err := os.WriteFile(s.conf, []byte(s.config(port, dir, o)), 0o600); err != nil {
			t.Fatalf("write mosquitto config: %v", err)
		}
		s.mu.Lock()
		err = s.launch()
		s.mu.Unlock()
		if err == nil {
			return s
		}
		if errors.Is(err, errPortTaken) && attempt < bindAttempts {
			t.Logf("mosquitto: port %d was taken before it could bind; trying another", port)
			continue
		}
		t.Fatalf("start mosquitto: %v\nmosquitto log:\n%s", err, s.out.String())
	}
}

// config is mosquitto's config file.
func (s *Server) config(port int, dir string, o Options) string {
	var b strings.Builder
	// max_queued_messages is raised because mosquitto drops QoS 1 messages beyond it for a
	// subscriber that falls behind, and tests send bursts larger than the default 1000.
	fmt.Fprintf(&b, `listener %d 127.0.0.1
allow_anonymous true
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
max_queued_messages 1000000
`, port)
	if os.Geteuid() == 0 {
		// As root, mosquitto would switch to the mosquitto user, which cannot read the
		// key and persistence files in the test's private folder.
		b.WriteString("user root\n")
	}
	if o.Persistence {
		fmt.Fprintf(&b, "persistence true\npersistence_location %s/\nautosave_interval 1\n", dir)
	} else {
		b.WriteString("persistence false\n")
	}
	if c := s.certs; c != nil {
		fmt.Fprintf(&b, "cafile %s\ncertfile %s\nkeyfile %s\n", c.CAFile, c.ServerCertFile, c.ServerKeyFile)
		if o.TLS.RequireClientCert {
			b.WriteString("require_certificate true\n")
		}
	}
	return b.String()
}

// URL is the broker's URL: tcp://127.0.0.1:PORT, or ssl:// for a TLS listener. It stays
// the same across Stop and Start.
func (s *Server) URL() string { return s.url }

// Addr is the broker's host:port.
func (s *Server) Addr() string { return s.addr }

// Certs are the TLS listener's certificates; nil for a plain TCP listener.
func (s *Server) Certs() *Certs { return s.certs }

// Running reports whether the broker runs now (it may have died on its own).
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return false
	}
	select {
	case <-s.proc.exited:
		return false
	default:
		return true
	}
}

// Start starts the stopped broker again on the same port and waits until it accepts
// connections. The port may briefly be held by the last run's connections, so Start
// retries it for a few seconds.
func (s *Server) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		select {
		case <-s.proc.exited:
		default:
			s.t.Fatalf("mosquitto on %s: Start while it is running", s.addr)
			return
		}
	}
	deadline := time.Now().Add(rebindWait)
	for {
		err := s.launch()
		if err == nil {
			return
		}
		if !errors.Is(err, errPortTaken) || time.Now().After(deadline) {
			s.t.Fatalf("restart mosquitto on %s: %v\nmosquitto log:\n%s", s.addr, err, s.out.String())
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop ends the broker as an operator would (SIGTERM) and waits for it to exit; it is
// killed if it takes longer than 10s. Stopping a stopped broker does nothing.
func (s *Server) Stop() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stop(syscall.SIGTERM); err != nil {
		s.t.Fatalf("stop mosquitto on %s: %v", s.addr, err)
	}
}

// Kill ends the broker at once (SIGKILL), as a crash or power cut would: no goodbye to
// clients, no state saved. Killing a stopped broker does nothing.
func (s *Server) Kill() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stop(syscall.SIGKILL); err != nil {
		s.t.Fatalf("kill mosquitto on %s: %v", s.addr, err)
	}
}

// stop signals the running broker and waits for it; s.mu is held.
func (s *Server) stop(sig syscall.Signal) error {
	p := s.proc
	if p == nil {
		return nil
	}
	s.proc = nil
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-p.exited:
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("mosquitto did not exit within %s of %v; killed", stopTimeout, sig)
	}
	fmt.Fprintf(s.out, "--- mosquitto run %d ended by %v: %v\n", s.runs, sig, p.err)
	return nil
}

func (s *Server) cleanup() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.proc; p != nil {
		s.proc = nil
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	if s.t.Failed() {
		s.t.Logf("mosquitto log (%s):\n%s", s.addr, s.out.String())
	}
}

var errPortTaken = errors.New("port taken")

// launch starts one mosquitto run and waits until it accepts connections; s.mu is held.
func (s *Server) launch() error {
	s.runs++
	fmt.Fprintf(s.out, "--- mosquitto run %d on %s\n", s.runs, s.addr)
	from := s.out.Len()
	cmd := exec.Command(s.bin, "-c", s.conf)
	cmd.Stdout = s.out
	cmd.Stderr = s.out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", s.bin, err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()

	deadline := time.Now().Add(readyTimeout)
	for {
		conn, dialErr := net.DialTimeout("tcp", s.addr, 200*time.Millisecond)
		if dialErr == nil {
			_ = conn.Close()
			s.proc = p
			return nil
		}
		select {
		case <-p.exited:
			if strings.Contains(s.out.From(from), "Address already in use") {
				return fmt.Errorf("%w: %s", errPortTaken, s.addr)
			}
			return fmt.Errorf("mosquitto exited before accepting connections: %v", p.err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-p.exited
			return fmt.Errorf("mosquitto not accepting connections on %s after %s: %v", s.addr, readyTimeout, dialErr)
		}
	}
}

func findMosquitto() (string, error) {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	for _, p := range binaryPaths {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("not on PATH nor at %s", strings.Join(binaryPaths, ", "))
}

// freePort asks the kernel for a free port on loopback and releases it for mosquitto,
// which takes its port from a config file and cannot be handed a listener.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		return 0, err
	}
	return port, nil
}

// lockedBuffer collects mosquitto's output, written by exec's copying goroutine and read
// by the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Len is how many bytes were written so far.
func (b *lockedBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

// From returns what was written after the first n bytes.
func (b *lockedBuffer) From(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf.Bytes()[n:])
}
