// Package testmqtt runs a real mosquitto broker for tests, on 127.0.0.1 and a free port,
// stopped when the test ends.
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
	"testing"
	"time"
)

const (
	// readyTimeout bounds the wait for mosquitto to accept connections.
	readyTimeout = 10 * time.Second
	// bindAttempts covers the race between releasing a probed port and mosquitto
	// binding it: another process may take it in between.
	bindAttempts = 5
)

// binaryPaths are searched after PATH: Debian installs mosquitto in /usr/sbin, which is
// not on an ordinary user's PATH.
var binaryPaths = []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"}

// Start runs mosquitto for the test and returns its URL (tcp://127.0.0.1:PORT). The
// broker is killed when the test ends; its log is added to the test's output if the
// test failed. A missing mosquitto fails the test: the MQTT tests are part of the
// suite, not optional.
func Start(t testing.TB) string {
	t.Helper()
	bin, err := findMosquitto()
	if err != nil {
		t.Fatalf("mosquitto not found (%v); run `make test`, which installs it (Debian package mosquitto)", err)
	}
	dir := t.TempDir()
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("find a free port for mosquitto: %v", err)
		}
		url, log, err := start(t, bin, dir, port)
		if err == nil {
			return url
		}
		if errors.Is(err, errPortTaken) && attempt < bindAttempts {
			t.Logf("mosquitto: port %d was taken before it could bind; trying another", port)
			continue
		}
		t.Fatalf("start mosquitto: %v\nmosquitto log:\n%s", err, log)
	}
}

var errPortTaken = errors.New("port taken")

// start launches one mosquitto on port and waits until it accepts connections.
func start(t testing.TB, bin, dir string, port int) (url string, log string, err error) {
	conf := filepath.Join(dir, "mosquitto-"+strconv.Itoa(port)+".conf")
	// max_queued_messages is raised because mosquitto drops QoS 1 messages beyond it for a
	// subscriber that falls behind, and tests send bursts larger than the default 1000.
	config := fmt.Sprintf(`listener %d 127.0.0.1
allow_anonymous true
persistence false
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
max_queued_messages 1000000
`, port)
	if err := os.WriteFile(conf, []byte(config), 0o600); err != nil {
		return "", "", fmt.Errorf("write config: %w", err)
	}

	out := new(lockedBuffer)
	cmd := exec.Command(bin, "-c", conf)
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		return "", "", fmt.Errorf("run %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(readyTimeout)
	for {
		conn, dialErr := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if dialErr == nil {
			_ = conn.Close()
			break
		}
		select {
		case werr := <-exited:
			if strings.Contains(out.String(), "Address already in use") {
				return "", out.String(), fmt.Errorf("%w: %d", errPortTaken, port)
			}
			return "", out.String(), fmt.Errorf("mosquitto exited before accepting connections: %v", werr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return "", out.String(), fmt.Errorf("mosquitto not accepting connections on %s after %s: %v", addr, readyTimeout, dialErr)
		}
	}

	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("mosquitto log (%s):\n%s", addr, out.String())
		}
	})
	return "tcp://" + addr, "", nil
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
