package spool

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// logBuf collects log output for assertions.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type fixture struct {
	dir string
	log *logBuf
	reg *prometheus.Registry
}

func newFixture(t testing.TB) *fixture {
	return &fixture{dir: t.TempDir(), log: &logBuf{}, reg: prometheus.NewRegistry()}
}

func (f *fixture) opts(o Options) Options {
	o.Dir = f.dir
	o.Log = slog.New(slog.NewTextHandler(f.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	o.Registerer = f.reg
	return o
}

func (f *fixture) open(t testing.TB, o Options) *Spool {
	t.Helper()
	s, err := Open(f.opts(o))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// metric returns the value of a spool metric (with the label value, if given).
func (f *fixture) metric(t testing.TB, name string, label ...string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(label) > 0 && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != label[0]) {
				continue
			}
			switch {
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("metric %s%v not found", name, label)
	return 0
}

func payload(i int) []byte {
	return fmt.Appendf(nil, `{"v":1,"id":"rec-%06d","verdict":"OK"}`, i)
}

func appendN(t testing.TB, s *Spool, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if err := s.Append(payload(i)); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
	}
}

// drain hands out every record now available, without acking.
func drain(t testing.TB, s *Spool) []Record {
	t.Helper()
	var out []Record
	for {
		r, ok := s.Next()
		if !ok {
			return out
		}
		out = append(out, r)
	}
}

func ids(rs []Record) []uint64 {
	out := make([]uint64, len(rs))
	for i, r := range rs {
		out[i] = r.ID
	}
	return out
}

func seq(from, to uint64) []uint64 {
	var out []uint64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func wantIDs(t testing.TB, got []Record, want []uint64) {
	t.Helper()
	if g := ids(got); !slices.Equal(g, want) {
		t.Fatalf("ids = %v, want %v", g, want)
	}
}

// wantPayloads checks each record's data is what appendN wrote for its index, given
// record ID id held payload(id+shift).
func wantPayloads(t testing.TB, got []Record, shift int) {
	t.Helper()
	for _, r := range got {
		if want := payload(int(r.ID) + shift); !bytes.Equal(r.Data, want) {
			t.Fatalf("record %d data = %q, want %q", r.ID, r.Data, want)
		}
	}
}

func segFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

// copyDir copies the regular files of src to a new folder: what a power cut leaves of
// an open spool (with the page cache written back).
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	des, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		in, err := os.Open(filepath.Join(src, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(filepath.Join(dst, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		_ = in.Close()
		if err := out.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}
