package imagedir

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/drivertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const wait = 10 * time.Second

// pngImage encodes a w×h noise image, so files differ and compress poorly.
func pngImage(t testing.TB, w, h int, seed uint64) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, w, h))
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range img.Pix {
		img.Pix[i] = uint8(r.Uint32())
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func jpegImage(t testing.TB) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, 8, 8))
	img.Set(2, 2, color.Gray{255})
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// dropFile puts a finished file in place the way careful cameras do: written under a
// temporary name, then renamed.
func dropFile(t testing.TB, dir, name string, data []byte) {
	t.Helper()
	tmp := filepath.Join(dir, "."+name+".part")
	writeFile(t, tmp, data)
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func newDriver(t testing.TB, spec drivers.Spec, dir string, mod func(*Config)) *Driver {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Dir = dir
	cfg.Settle = config.Duration(100 * time.Millisecond)
	if mod != nil {
		mod(cfg)
	}
	if spec.Name == "" {
		spec.Name = "aoi1"
	}
	if spec.Log == nil {
		spec.Log = slog.New(slog.DiscardHandler)
	}
	d, err := New(spec, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func newEmitter(t *testing.T) *drivertest.Emitter {
	e := drivertest.NewEmitter()
	t.Cleanup(e.Close)
	return e
}

// waitFor polls cond until it holds or the wait is up.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("no %s within %v", what, wait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func names(rs []*drivers.Reading) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.PartID)
	}
	return out
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Dir = "" }, "dir: missing"},
		{func(c *Config) { c.After = "archive" }, `after: "archive"`},
		{func(c *Config) { c.Patterns = []string{"[a-"} }, `patterns[0]: "[a-"`},
		{func(c *Config) { c.Patterns = []string{"sub/*.png"} }, `patterns[0]: "sub/*.png"`},
		{func(c *Config) { c.Patterns = nil }, "patterns: empty"},
		{func(c *Config) { c.Settle = -1 }, "settle: -1ns"},
		{func(c *Config) { c.MaxFileBytes = 0 }, "max_file_bytes: 0B"},
		{func(c *Config) { c.PartIDFrom = "exif" }, `part_id_from: "exif"`},
		{func(c *Config) { c.DoneDir = "/cam/" }, `done_dir: "/cam/" is the watched folder`},
	} {
		c := DefaultConfig()
		c.Dir = "/cam"
		tc.mod(c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want it to contain %q", err, tc.want)
		}
	}
	c := DefaultConfig()
	c.Dir = "/cam"
	if err := c.Validate(); err != nil {
		t.Errorf("defaults with a dir: %v", err)
	}
}

func TestMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nope")
	d := newDriver(t, drivers.Spec{}, dir, nil)
	err := d.Run(context.Background(), newEmitter(t))
	if err == nil || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Run with a missing dir = %v, want an error naming %q", err, dir)
	}
}

// A file written slowly, in chunks, is read once, whole, after the last chunk.
func TestSlowWriter(t *testing.T) {
	dir := t.TempDir()
	d := newDriver(t, drivers.Spec{Budget: time.Second}, dir, func(c *Config) { c.Settle = config.Duration(300 * time.Millisecond) })
	e := newEmitter(t)
	drivertest.Start(t, d, e)
	e.WaitHealth(t, true, wait)

	data := pngImage(t, 64, 64, 1)
	f, err := os.Create(filepath.Join(dir, "slow.png"))
	if err != nil {
		t.Fatal(err)
	}
	const chunks = 8
	step := (len(data) + chunks - 1) / chunks
	for i := 0; i < len(data); i += step {
		if _, err := f.Write(data[i:min(i+step, len(data))]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Millisecond)
		if n := len(e.Readings()); n != 0 {
			t.Fatalf("emitted after %d of %d bytes", i+step, len(data))
		}
	}
	lastWrite := time.Now()
	f.Close()
	e.WaitReadings(t, 1, wait)
	r := e.Readings()[0]
	if !bytes.Equal(r.Image.Data, data) || r.Image.Format != drivers.FormatPNG {
		t.Fatalf("emitted %d bytes as %q, want the whole %d-byte png", len(r.Image.Data), r.Image.Format, len(data))
	}
	if r.CapturedAt.Before(lastWrite) {
		t.Errorf("captured at %v, before the last write at %v", r.CapturedAt, lastWrite)
	}
	if r.PartID != "slow" || r.Source != "aoi1" || r.Seq != 1 || r.Deadline.Sub(r.CapturedAt) != time.Second {
		t.Errorf("reading part %q source %q seq %d deadline +%v", r.PartID, r.Source, r.Seq, r.Deadline.Sub(r.CapturedAt))
	}
	waitFor(t, "move to done", func() bool {
		return exists(filepath.Join(dir, "done", "slow.png")) && !exists(filepath.Join(dir, "slow.png"))
	})
	if n := len(e.Readings()); n != 1 {
		t.Errorf("%d readings, want 1", n)
	}
}

// A file renamed into place counts at once, without waiting to settle.
func TestRenameIntoPlace(t *testing.T) {
	dir := t.TempDir()
	d := newDriver(t, drivers.Spec{}, dir, func(c *Config) { c.Settle = config.Duration(time.Hour) })
	e := newEmitter(t)
	drivertest.Start(t, d, e)
	e.WaitHealth(t, true, wait)
	dropFile(t, dir, "renamed.png", pngImage(t, 8, 8, 2))
	e.WaitReadings(t, 1, wait)
	if got := e.Readings()[0].PartID; got != "renamed" {
		t.Errorf("part id %q", got)
	}
}

// Files already in the folder go first, oldest modification first.
func TestExistingFiles(t *testing.T) {
	dir := t.TempDir()
	base := time.Now().Add(-time.Hour)
	for i, n := range []string{"c.png", "a.jpg", "b.bmp"} {
		writeFile(t, filepath.Join(dir, n), pngImage(t, 8, 8, uint64(i)))
		mt := base.Add(time.Duration(i) * time.Minute)
		if err := os.Chtimes(filepath.Join(dir, n), mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	d := newDriver(t, drivers.Spec{}, dir, nil)
	e := newEmitter(t)
	drivertest.Start(t, d, e)
	e.WaitReadings(t, 3, wait)
	rs := e.Readings()
	if got := names(rs); !slices.Equal(got, []string{"c", "a", "b"}) {
		t.Errorf("emitted %v, want oldest first [c a b]", got)
	}
	// The format comes from the content: all three are PNGs, whatever their names say.
	for _, r := range rs {
		if r.Image.Format != drivers.FormatPNG {
			t.Errorf("%s: format %q, want png", r.PartID, r.Image.Format)
		}
	}
}

// A file the state marks as emitted is finished after a restart without a second emit.
func TestExactlyOnceAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	done := filepath.Join(dir, "done")

	// A real first run that emits and then cannot move, as after a crash between the
	// emit and the move: as the reading goes out, done_dir turns into a plain file.
	writeFile(t, filepath.Join(dir, "first.png"), pngImage(t, 8, 8, 3))
	e1 := &hookEmitter{Emitter: newEmitter(t), hook: func() {
		if err := os.Remove(done); err != nil {
			t.Error(err)
		}
		writeFile(t, done, nil)
	}}
	spec := drivers.Spec{Log: slog.New(slog.NewTextHandler(&e1.logs, nil))}
	stop1 := drivertest.Start(t, newDriver(t, spec, dir, func(c *Config) { c.DoneDir = done }), e1)
	e1.WaitReadings(t, 1, wait)
	waitFor(t, "failed move", func() bool { return strings.Contains(e1.logs.String(), "cannot finish") })
	stop1()
	if !exists(filepath.Join(dir, "first.png")) {
		t.Fatal("first.png left the folder although done_dir refused it")
	}
	if err := os.Remove(done); err != nil {
		t.Fatal(err)
	}

	// Restart: first.png is finished without an emit; second.png, newer, is emitted.
	writeFile(t, filepath.Join(dir, "second.png"), pngImage(t, 8, 8, 4))
	e2 := newEmitter(t)
	drivertest.Start(t, newDriver(t, drivers.Spec{}, dir, func(c *Config) { c.DoneDir = done }), e2)
	e2.WaitReadings(t, 1, wait)
	waitFor(t, "both files in done", func() bool {
		return exists(filepath.Join(done, "first.png")) && exists(filepath.Join(done, "second.png"))
	})
	if got := names(e2.Readings()); !slices.Equal(got, []string{"second"}) {
		t.Errorf("after restart emitted %v, want only [second]", got)
	}
	waitFor(t, "state emptied", func() bool {
		st, err := openState(filepath.Join(dir, ".edged-imagedir.state"), dir)
		if err != nil {
			return false
		}
		defer st.close()
		return len(st.entries) == 0
	})
}

// hookEmitter runs hook on the first emit and each on every one.
type hookEmitter struct {
	*drivertest.Emitter
	hook, each func()
	once       sync.Once
	logs       syncBuffer
}

func (h *hookEmitter) Emit(ctx context.Context, r *drivers.Reading) drivers.Pressure {
	if h.hook != nil {
		h.once.Do(h.hook)
	}
	if h.each != nil {
		h.each()
	}
	return h.Emitter.Emit(ctx, r)
}

// With after: keep, a restart does not emit the kept files again.
func TestKeepAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "k.png"), pngImage(t, 8, 8, 5))
	keep := func(c *Config) { c.After = AfterKeep }
	e1 := newEmitter(t)
	stop1 := drivertest.Start(t, newDriver(t, drivers.Spec{}, dir, keep), e1)
	e1.WaitReadings(t, 1, wait)
	stop1()
	e2 := newEmitter(t)
	drivertest.Start(t, newDriver(t, drivers.Spec{}, dir, keep), e2)
	// A new file, written in place, settles after the kept one, which the scan found
	// first: were k.png emitted again, it would come before n.png.
	writeFile(t, filepath.Join(dir, "n.png"), pngImage(t, 8, 8, 6))
	e2.WaitReadings(t, 1, wait)
	if got := names(e2.Readings()); !slices.Equal(got, []string{"n"}) {
		t.Errorf("second run emitted %v, want only [n]", got)
	}
	if !exists(filepath.Join(dir, "k.png")) {
		t.Error("kept file is gone")
	}
}

func TestDelete(t *testing.T) {
	dir := t.TempDir()
	e := newEmitter(t)
	drivertest.Start(t, newDriver(t, drivers.Spec{}, dir, func(c *Config) { c.After = AfterDelete }), e)
	e.WaitHealth(t, true, wait)
	dropFile(t, dir, "x.png", pngImage(t, 8, 8, 7))
	e.WaitReadings(t, 1, wait)
	waitFor(t, "delete", func() bool { return !exists(filepath.Join(dir, "x.png")) })
	if exists(filepath.Join(dir, "done")) {
		t.Error("done folder made with after: delete")
	}
}

// syncBuffer is a log sink the driver's goroutine writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func counterValues(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "edged_imagedir_quarantined_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var source, reason string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "source":
					source = l.GetValue()
				case "reason":
					reason = l.GetValue()
				}
			}
			out[source+"/"+reason] = m.GetCounter().GetValue()
		}
	}
	return out
}

func TestQuarantine(t *testing.T) {
	dir := t.TempDir()
	var logs syncBuffer
	reg := prometheus.NewRegistry()
	spec := drivers.Spec{Log: slog.New(slog.NewTextHandler(&logs, nil)), Registerer: reg}
	big := pngImage(t, 64, 64, 8)
	d := newDriver(t, spec, dir, func(c *Config) { c.MaxFileBytes = config.ByteSize(len(big) - 1) })
	e := newEmitter(t)
	drivertest.Start(t, d, e)
	e.WaitHealth(t, true, wait)

	good := pngImage(t, 8, 8, 9)
	cases := map[string]struct {
		data   []byte
		reason string
	}{
		"garbage.png":  {[]byte("this is not an image at all"), "unknown_format"},
		"empty.jpg":    {nil, "empty"},
		"big.png":      {big, "too_large"},
		"cut.png":      {good[:20], "undecodable"},
		"badjpeg.jpeg": {jpegImage(t)[:8], "undecodable"},
	}
	for name, c := range cases {
		dropFile(t, dir, name, c.data)
	}
	dropFile(t, dir, "good.png", good)
	e.WaitReadings(t, 1, wait)
	q := filepath.Join(dir, "quarantine")
	for name, c := range cases {
		waitFor(t, name+".reason", func() bool { return exists(filepath.Join(q, name+".reason")) })
		if !exists(filepath.Join(q, name)) || exists(filepath.Join(dir, name)) {
			t.Errorf("%s not moved to quarantine", name)
		}
		b, _ := os.ReadFile(filepath.Join(q, name+".reason"))
		if !strings.HasPrefix(string(b), c.reason+": ") {
			t.Errorf("%s.reason says %q, want reason %s", name, b, c.reason)
		}
		if l := logs.String(); !strings.Contains(l, name) || !strings.Contains(l, "reason="+c.reason) {
			t.Errorf("no warn line naming %s and %s in:\n%s", name, c.reason, l)
		}
	}
	got := counterValues(t, reg)
	want := map[string]float64{"aoi1/unknown_format": 1, "aoi1/empty": 1, "aoi1/too_large": 1, "aoi1/undecodable": 2, "aoi1/unreadable": 0}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("edged_imagedir_quarantined_total{%s} = %v, want %v", k, got[k], v)
		}
	}
	if n := len(e.Readings()); n != 1 {
		t.Errorf("%d readings, want only good.png's", n)
	}
}

func TestPatterns(t *testing.T) {
	dir := t.TempDir()
	e := newEmitter(t)
	drivertest.Start(t, newDriver(t, drivers.Spec{}, dir, func(c *Config) { c.Patterns = []string{"CAM1_*.PNG"}; c.PartIDFrom = PartIDNone }), e)
	e.WaitHealth(t, true, wait)
	dropFile(t, dir, "cam2_1.png", pngImage(t, 8, 8, 10))
	dropFile(t, dir, "notes.txt", []byte("hello"))
	dropFile(t, dir, "cam1_1.png", pngImage(t, 8, 8, 11))
	dropFile(t, dir, "Cam1_2.Png", pngImage(t, 8, 8, 12))
	e.WaitReadings(t, 2, wait)
	waitFor(t, "moves", func() bool {
		return exists(filepath.Join(dir, "done", "cam1_1.png")) && exists(filepath.Join(dir, "done", "Cam1_2.Png"))
	})
	for _, n := range []string{"cam2_1.png", "notes.txt"} {
		if !exists(filepath.Join(dir, n)) {
			t.Errorf("%s was taken although no pattern matches it", n)
		}
	}
	for _, r := range e.Readings() {
		if r.PartID != "" {
			t.Errorf("part id %q with part_id_from: none", r.PartID)
		}
	}
	if n := len(e.Readings()); n != 2 {
		t.Errorf("%d readings, want 2", n)
	}
}

func TestDoneCollision(t *testing.T) {
	dir := t.TempDir()
	done := filepath.Join(dir, "done")
	if err := os.Mkdir(done, 0o755); err != nil {
		t.Fatal(err)
	}
	old := pngImage(t, 8, 8, 13)
	writeFile(t, filepath.Join(done, "part.png"), old)
	writeFile(t, filepath.Join(done, "part-1.png"), old)
	e := newEmitter(t)
	drivertest.Start(t, newDriver(t, drivers.Spec{}, dir, nil), e)
	e.WaitHealth(t, true, wait)
	data := pngImage(t, 8, 8, 14)
	dropFile(t, dir, "part.png", data)
	e.WaitReadings(t, 1, wait)
	waitFor(t, "part-2.png", func() bool { return exists(filepath.Join(done, "part-2.png")) })
	for n, want := range map[string][]byte{"part.png": old, "part-1.png": old, "part-2.png": data} {
		if b, _ := os.ReadFile(filepath.Join(done, n)); !bytes.Equal(b, want) {
			t.Errorf("done/%s was overwritten", n)
		}
	}
}

// Emits keep to the pipeline's MaxRateHz; files wait on disk meanwhile.
func TestBackpressurePacing(t *testing.T) {
	dir := t.TempDir()
	const n, hz = 6, 10.0
	for i := range n {
		writeFile(t, filepath.Join(dir, "p"+string(rune('a'+i))+".png"), pngImage(t, 8, 8, uint64(20+i)))
	}
	e := newEmitter(t)
	e.SetPressure(drivers.Pressure{Accepted: true, Occupancy: 0.8, MaxRateHz: hz})
	drivertest.Start(t, newDriver(t, drivers.Spec{}, dir, nil), e)
	e.WaitReadings(t, 2, wait)
	// While paced, the files not yet emitted are still on disk.
	left, _ := filepath.Glob(filepath.Join(dir, "p*.png"))
	if len(left) < n-3 {
		t.Errorf("%d files left on disk after 2 readings, want most of %d", len(left), n)
	}
	e.WaitReadings(t, n, wait)
	rs := e.Readings()
	if gap := rs[n-1].CapturedAt.Sub(rs[0].CapturedAt) / (n - 1); gap < time.Duration(0.9*float64(time.Second)/hz) {
		t.Errorf("readings %v apart at a %v Hz limit", gap, hz)
	}
}

// A refused emit leaves the file to be emitted again; none is lost or doubled.
func TestRefusedEmit(t *testing.T) {
	dir := t.TempDir()
	var tries atomic.Int64
	e := &hookEmitter{Emitter: newEmitter(t), each: func() { tries.Add(1) }}
	e.SetPressure(drivers.Pressure{Accepted: false, Occupancy: 1})
	drivertest.Start(t, newDriver(t, drivers.Spec{}, dir, nil), e)
	e.WaitHealth(t, true, wait)
	for i := range 3 {
		dropFile(t, dir, "r"+string(rune('0'+i))+".png", pngImage(t, 8, 8, uint64(30+i)))
	}
	waitFor(t, "several refused tries", func() bool { return tries.Load() >= 5 })
	left, _ := filepath.Glob(filepath.Join(dir, "r*.png"))
	if len(left) != 3 {
		t.Fatalf("%d of 3 files on disk while the pipeline refuses them", len(left))
	}
	e.SetPressure(drivers.Pressure{Accepted: true})
	e.WaitReadings(t, 3, wait)
	waitFor(t, "moves", func() bool {
		m, _ := filepath.Glob(filepath.Join(dir, "done", "r*.png"))
		return len(m) == 3
	})
	got := names(e.Readings())
	slices.Sort(got)
	if !slices.Equal(got, []string{"r0", "r1", "r2"}) {
		t.Errorf("emitted %v, want each file once", got)
	}
}

func TestFolderRemovedAndRecreated(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cam")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	e := newEmitter(t)
	drivertest.Start(t, newDriver(t, drivers.Spec{}, dir, nil), e)
	e.WaitHealth(t, true, wait)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	e.WaitHealth(t, false, wait)
	if err := e.LastHealthErr(); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("health error %v does not name %s", err, dir)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	e.WaitHealth(t, true, wait)
	dropFile(t, dir, "back.png", pngImage(t, 8, 8, 40))
	e.WaitReadings(t, 1, wait)
	waitFor(t, "move", func() bool { return exists(filepath.Join(dir, "done", "back.png")) })
}

func TestStateTornLine(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.png"), []byte("x"))
	path := filepath.Join(dir, "st")
	writeFile(t, path, []byte("E 1 5 \"a.png\"\nE 2 6 \"gone.png\"\nD \"nothing\"\nE 9 9 \"../evil\"\nE 3 7 \"a.p"))
	st, err := openState(path, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	if len(st.entries) != 1 || !st.emitted("a.png", stamp{1, 5}) {
		t.Errorf("entries %v, want only a.png", st.entries)
	}
}

func TestProbe(t *testing.T) {
	dir := t.TempDir()
	d, err := New(drivers.Spec{Name: "aoi"}, &Config{Dir: dir, Patterns: []string{"*.png"}, After: AfterMove, MaxFileBytes: 1 << 20, PartIDFrom: PartIDNone})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Probe(context.Background()); err != nil {
		t.Fatalf("probe of a writable folder: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "done")); err != nil {
		t.Errorf("done_dir not made: %v", err)
	}
	missing, err := New(drivers.Spec{Name: "aoi"}, &Config{Dir: filepath.Join(dir, "nope"), Patterns: []string{"*.png"}, After: AfterMove, MaxFileBytes: 1 << 20, PartIDFrom: PartIDNone})
	if err != nil {
		t.Fatal(err)
	}
	if err := missing.Probe(context.Background()); err == nil || !strings.Contains(err.Error(), `source "aoi": dir`) || !strings.Contains(err.Error(), "nope") {
		t.Errorf("probe of a missing folder: %v", err)
	}
	// done_dir where a plain file stands: a place the driver cannot move files to,
	// whoever runs it.
	blocked := filepath.Join(dir, "blocked")
	if err := os.WriteFile(blocked, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	d2, err := New(drivers.Spec{Name: "aoi"}, &Config{Dir: dir, DoneDir: blocked, Patterns: []string{"*.png"}, After: AfterMove, MaxFileBytes: 1 << 20, PartIDFrom: PartIDNone})
	if err != nil {
		t.Fatal(err)
	}
	if err := d2.Probe(context.Background()); err == nil || !strings.Contains(err.Error(), `done_dir "`+blocked+`" is not writable`) {
		t.Errorf("probe with done_dir on a file: %v", err)
	}
}
