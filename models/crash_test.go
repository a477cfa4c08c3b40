package models_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgedrun/edged/models"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// crashEnv names the repository the child of TestCrashSoak works on; the child is this
// test binary running TestCrashHelper.
const crashEnv = "EDGED_CRASH_REPO"

// crashNames are the models the child changes; two, so that one model's temporary
// entries sit beside another's settled ones.
var crashNames = []string{"el-defect", "press-fit"}

// TestCrashHelper is the process TestCrashSoak kills: it changes the repository the
// way edged does (push, activate, prune, remove, audit), as fast as it can, for at most
// a second. Run on its own it does nothing.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		return
	}
	r, err := models.OpenRepository(dir)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	base, err := models.ParseManifest(demoManifestBytes(t))
	if err != nil {
		t.Fatal(err)
	}
	pid, began := os.Getpid(), time.Now()
	for i := 0; ; i++ {
		select {
		case <-t.Context().Done():
			return
		default:
		}
		if i > 0 && time.Since(began) > time.Second {
			return
		}
		name := crashNames[i%len(crashNames)]
		m, onnx := crashModel(base, name, fmt.Sprintf("p%d.%d", pid, i), 1<<10+rand.IntN(1<<20))
		if err := r.InstallStream(m, bytes.NewReader(onnx)); err != nil {
			t.Fatal(err)
		}
		if err := r.Activate(name, m.Version); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Prune(name, 3); err != nil {
			t.Fatal(err)
		}
		// A version staged, never activated, then removed: what a refused golden run does.
		s, sONNX := crashModel(base, name, fmt.Sprintf("s%d.%d", pid, i), 1<<10+rand.IntN(1<<18))
		if err := r.Install(s, sONNX); err != nil {
			t.Fatal(err)
		}
		if err := r.Remove(name, s.Version); err != nil {
			t.Fatal(err)
		}
		if err := r.Audit(models.AuditRecord{Action: models.AuditActivate, Name: name, Version: m.Version, SHA256: m.SHA256, Via: "cli", Result: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
}

func crashModel(base *models.Manifest, name, version string, n int) (*models.Manifest, []byte) {
	m := *base
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		b[i] = byte(rand.Uint32())
	}
	sum := sha256.Sum256(b)
	m.Name, m.Version, m.Size, m.SHA256 = name, version, int64(n), hex.EncodeToString(sum[:])
	return &m, b
}

// TestCrashSoak kills a process at a random instant while it changes the repository,
// many times over, and checks what a restart of edged would find: the repository opens,
// its crash leftovers are gone, each model has exactly one active version that loads
// and verifies, every listed version loads, Previous answers, and the audit log holds
// whole lines only. It runs 50 rounds, or fewer where they take over 20 s (a busy
// machine); EDGED_CRASH_ROUNDS sets the number and EDGED_SOAK=1 (make soak) runs 1000,
// both without the time bound.
func TestCrashSoak(t *testing.T) {
	rounds, budget := 50, 20*time.Second
	if os.Getenv("EDGED_SOAK") != "" {
		rounds, budget = 1000, time.Hour
	}
	if s := os.Getenv("EDGED_CRASH_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("EDGED_CRASH_ROUNDS=%q: want a positive number", s)
		}
		rounds, budget = n, time.Hour
	}
	dir := filepath.Join(t.TempDir(), "repo")
	r := openRepo(t, dir)
	for i, name := range crashNames {
		m, onnx := sized(t, "1.0.0", 4096, byte(i))
		m.Name = name
		install(t, r, m, onnx, true)
	}

	began := time.Now()
	var killed, leftovers, done int
	for round := 0; round < rounds; round++ {
		if time.Since(began) > budget {
			t.Logf("stopped after %d of %d rounds: the %v budget is spent", round, rounds, budget)
			break
		}
		finished := crashRound(t, dir, rand.N(150*time.Millisecond))
		if finished {
			done++
		} else {
			killed++
		}
		leftovers += len(tempEntries(dir))
		checkAfterCrash(t, dir, round)
		if t.Failed() {
			return
		}
	}
	t.Logf("%d kills mid-work, %d runs finished before the kill, %d temporary entries cleared, %v", killed, done, leftovers, time.Since(began).Round(time.Millisecond))
	if killed == 0 {
		t.Error("no run was killed mid-work: the test proves nothing")
	}
}

// crashRound runs the child, kills it after delay once it is ready, and reports
// whether it had finished by itself.
func crashRound(t *testing.T, dir string, delay time.Duration) (finished bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(out)
	line, err := rd.ReadString('\n')
	if err != nil || line != "ready\n" {
		io.Copy(io.Discard, rd)
		cmd.Wait()
		t.Fatalf("child did not get ready: %q, %v\n%s", line, err, stderr.String())
	}
	timer := time.NewTimer(delay)
	defer timer.Stop()
	exited := make(chan error, 1)
	go func() {
		io.Copy(io.Discard, rd)
		exited <- cmd.Wait()
	}()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("child failed by itself: %v\n%s", err, stderr.String())
		}
		return true
	case <-timer.C:
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatal(err)
	}
	err = <-exited
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled() {
		return false
	}
	if err != nil {
		t.Fatalf("child: %v\n%s", err, stderr.String())
	}
	return true
}

func tempEntries(dir string) []string {
	var out []string
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".") {
			out = append(out, path)
			if d.IsDir() {
				return filepath.SkipDir
			}
		}
		return nil
	})
	return out
}

func checkAfterCrash(t *testing.T, dir string, round int) {
	t.Helper()
	r, err := models.OpenRepository(dir)
	if err != nil {
		t.Fatalf("round %d: OpenRepository: %v", round, err)
	}
	if left := tempEntries(dir); len(left) > 0 {
		t.Errorf("round %d: OpenRepository left %v", round, left)
	}
	names, err := r.Names()
	if err != nil || len(names) != len(crashNames) {
		t.Fatalf("round %d: Names = %v, %v", round, names, err)
	}
	for _, name := range names {
		m, onnx, err := r.LoadActive(name)
		if err != nil {
			t.Errorf("round %d: %s: no active version that loads: %v", round, name, err)
			continue
		}
		if err := models.Verify(m, onnx); err != nil {
			t.Errorf("round %d: %v", round, err)
		}
		vs, err := r.Versions(name)
		if err != nil {
			t.Errorf("round %d: Versions(%s): %v", round, name, err)
		}
		active := 0
		for _, v := range vs {
			if v.Active {
				active++
			}
			// No half-installed or half-removed version is ever visible.
			if _, _, err := r.Load(name, v.Version); err != nil {
				t.Errorf("round %d: listed version does not load: %v", round, err)
			}
		}
		if active != 1 {
			t.Errorf("round %d: %s: %d active versions listed", round, name, active)
		}
		if p, err := r.Previous(name); err != nil && !errors.Is(err, models.ErrNotFound) {
			t.Errorf("round %d: Previous(%s): %v", round, name, err)
		} else if err == nil {
			if _, _, err := r.Load(name, p); err != nil {
				t.Errorf("round %d: rollback target %s does not load: %v", round, p, err)
			}
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, models.AuditFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for i, l := range strings.SplitAfter(string(b), "\n") {
		if l == "" {
			continue
		}
		var rec models.AuditRecord
		if !strings.HasSuffix(l, "\n") || json.Unmarshal([]byte(l), &rec) != nil {
			t.Errorf("round %d: audit line %d is not whole: %q", round, i, l)
		}
	}
}
