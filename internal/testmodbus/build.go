// Package testmodbus builds the independent Modbus TCP server the tests run against:
// a small C program on libmodbus (drivers/modbus/testdata/server.c), so edged's Modbus
// code is checked against an implementation that shares none of its Go.
package testmodbus

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// InstallHint says what provides the server's compiler and library.
const InstallHint = "run make test-setup (Debian: apt-get install -y gcc libmodbus-dev)"

var (
	once sync.Once
	dir  string
	bin  string
	err  error
)

// Source is the server's C file.
func Source() string {
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(here), "..", "..", "drivers", "modbus", "testdata", "server.c")
}

// ServerBinary compiles the server once per test binary and returns its path; it
// fails the test, saying what to install, when it cannot. Run `server PORT
// [FAULT_PERIOD_S]`; it prints "ready PORT" once it listens on 127.0.0.1.
func ServerBinary(tb testing.TB) string {
	tb.Helper()
	once.Do(func() {
		if _, err = exec.LookPath("gcc"); err != nil {
			err = fmt.Errorf("gcc not found: %w", err)
			return
		}
		if dir, err = os.MkdirTemp("", "edged-libmodbus-server-"); err != nil {
			return
		}
		bin = filepath.Join(dir, "server")
		if out, cerr := exec.Command("gcc", "-O2", "-o", bin, Source(), "-lmodbus").CombinedOutput(); cerr != nil {
			err = fmt.Errorf("gcc %s: %w\n%s", Source(), cerr, out)
		}
	})
	if err != nil {
		tb.Fatalf("cannot build the libmodbus test server (%s): %v", InstallHint, err)
	}
	return bin
}

// Cleanup removes the built server; TestMain calls it after the tests.
func Cleanup() {
	if dir != "" {
		os.RemoveAll(dir)
	}
}
