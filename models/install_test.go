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
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgedrun/edged/models"
)

// sized is a model of n bytes with a manifest that matches it.
func sized(t testing.TB, version string, n int, tag byte) (*models.Manifest, []byte) {
	t.Helper()
	m, err := models.ParseManifest(demoManifestBytes(t))
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ tag
	}
	sum := sha256.Sum256(b)
	m.Version, m.Size, m.SHA256 = version, int64(n), hex.EncodeToString(sum[:])
	return m, b
}

// noTemps fails the test when anything temporary is left in the repository.
func noTemps(t *testing.T, dir string) {
	t.Helper()
	var left []string
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".") {
			left = append(left, path)
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("temporary entries left: %v", left)
	}
}

// failingReader gives its bytes and then an error, as a cut connection does.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func TestInstallStreamRefuses(t *testing.T) {
	cut := errors.New("connection reset by peer")
	for _, tc := range []struct {
		name string
		body func(onnx []byte) io.Reader
		is   error
		want []string
	}{
		{"truncated", func(b []byte) io.Reader { return bytes.NewReader(b[:1234]) }, models.ErrTruncated, []string{"truncated: 1234 of 5678 bytes"}},
		{"empty", func([]byte) io.Reader { return strings.NewReader("") }, models.ErrTruncated, []string{"truncated: 0 of 5678 bytes"}},
		{"one byte too many", func(b []byte) io.Reader { return bytes.NewReader(append(b, 0)) }, models.ErrTooLarge, []string{"too large", "5678 bytes"}},
		{"endless", func([]byte) io.Reader { return endless{} }, models.ErrTooLarge, []string{"too large"}},
		{"one byte flipped", func(b []byte) io.Reader { b[100] ^= 1; return bytes.NewReader(b) }, models.ErrHashMismatch, []string{"sha256 mismatch", "the manifest says"}},
		{"read error", func(b []byte) io.Reader { return &failingReader{bytes.NewReader(b[:300]), cut} }, cut, []string{"after 300 bytes", "connection reset"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			r := openRepo(t, dir)
			m, onnx := sized(t, "2.0.0", 5678, 'x')
			err := r.InstallStream(m, tc.body(bytes.Clone(onnx)))
			if !errors.Is(err, tc.is) {
				t.Fatalf("InstallStream: %v; want an error wrapping %v", err, tc.is)
			}
			for _, w := range append(tc.want, "el-defect 2.0.0") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("repository holds %v after a refused install", ents)
			}
		})
	}
}

// endless is a body that never ends: InstallStream must stop at Size+1 bytes.
type endless struct{}

func (endless) Read(p []byte) (int, error) { return len(p), nil }

// TestInstallStreamReadsAtMostSizePlusOne: a server sending more than announced costs
// one byte over, never the disk.
func TestInstallStreamReadsAtMostSizePlusOne(t *testing.T) {
	r := openRepo(t, t.TempDir())
	m, onnx := sized(t, "2.0.0", 5000, 'y')
	body := &countingReader{r: bytes.NewReader(append(onnx, make([]byte, 1<<20)...))}
	if err := r.InstallStream(m, body); !errors.Is(err, models.ErrTooLarge) {
		t.Fatalf("InstallStream: %v", err)
	}
	if body.n != m.Size+1 {
		t.Errorf("read %d bytes, want %d", body.n, m.Size+1)
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func TestInstallStreamInstalls(t *testing.T) {
	dir := t.TempDir()
	r := openRepo(t, dir)
	m, onnx := sized(t, "2.0.0", 3<<20+17, 'z')
	// A reader without WriterTo, as a network body is, in small pieces.
	if err := r.InstallStream(m, bufio.NewReaderSize(iotestHalf{bytes.NewReader(onnx)}, 16)); err != nil {
		t.Fatal(err)
	}
	got, gotONNX, err := r.Load(m.Name, m.Version)
	if err != nil || !bytes.Equal(gotONNX, onnx) || got.SHA256 != m.SHA256 {
		t.Fatalf("Load: %v (same bytes %v)", err, bytes.Equal(gotONNX, onnx))
	}
	noTemps(t, dir)

	// The same build again is a no-op that does not read the body.
	body := &countingReader{r: bytes.NewReader(onnx)}
	if err := r.InstallStream(m, body); err != nil || body.n != 0 {
		t.Errorf("same build again: %v, read %d bytes", err, body.n)
	}
	// Another build under the version is refused, also before reading.
	other, otherONNX := sized(t, "2.0.0", 100, 'w')
	body = &countingReader{r: bytes.NewReader(otherONNX)}
	if err := r.InstallStream(other, body); !errors.Is(err, models.ErrVersionExists) || body.n != 0 {
		t.Errorf("other build as 2.0.0: %v, read %d bytes; want ErrVersionExists before reading", err, body.n)
	}
}

// iotestHalf reads half of what is asked, as a slow connection does.
type iotestHalf struct{ r io.Reader }

func (h iotestHalf) Read(p []byte) (int, error) { return h.r.Read(p[:(len(p)+1)/2]) }

// TestInstallStreamReplacesDamagedCopy: a version whose file was damaged on disk is
// installed afresh by a push of the same build.
func TestInstallStreamReplacesDamagedCopy(t *testing.T) {
	dir := t.TempDir()
	r := openRepo(t, dir)
	m, onnx := sized(t, "2.0.0", 4096, 'd')
	install(t, r, m, onnx, true)
	rewrite(t, filepath.Join(dir, m.Name, m.Version, models.ModelFile), func(b []byte) []byte { b[7] ^= 1; return b })
	if _, _, err := r.LoadActive(m.Name); err == nil {
		t.Fatal("damage not seen")
	}
	if err := r.InstallStream(m, bytes.NewReader(onnx)); err != nil {
		t.Fatal(err)
	}
	if _, got, err := r.LoadActive(m.Name); err != nil || !bytes.Equal(got, onnx) {
		t.Fatalf("after the new push: %v", err)
	}
	noTemps(t, dir)
}

func TestInstallStreamRefusesInvalidManifest(t *testing.T) {
	dir := t.TempDir()
	r := openRepo(t, dir)
	m, onnx := sized(t, "2.0.0", 100, 'i')
	m.Postprocess.Threshold = 7
	err := r.InstallStream(m, bytes.NewReader(onnx))
	if err == nil || !strings.Contains(err.Error(), "postprocess.threshold 7") || !strings.Contains(err.Error(), "el-defect 2.0.0") {
		t.Errorf("InstallStream of an invalid manifest: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("repository holds %v", ents)
	}
}

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"a", "el-defect", "1.0.0", "v2_rc.1", "A-b_c.d", strings.Repeat("x", 128)} {
		if err := models.CheckName(ok); err != nil {
			t.Errorf("CheckName(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "../x", "..", ".", "a/b", `a\b`, ".hidden", "-x", "_x", "1..2", "a..", "a b", "a\n", "é", strings.Repeat("x", 129)} {
		err := models.CheckName(bad)
		if err == nil {
			t.Errorf("CheckName(%q) accepted", bad)
			continue
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
			t.Errorf("CheckName(%q): %q does not name the value", bad, err)
		}
	}
}

// TestReservedNames: names of the repository's own files are refused as a model name
// or version, so that no install replaces them.
func TestReservedNames(t *testing.T) {
	dir := t.TempDir()
	r := openRepo(t, dir)
	if err := r.Audit(models.AuditRecord{Action: models.AuditPush, Name: "x", Version: "1", Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	m, onnx := sized(t, "1.0.0", 10, 'r')
	m.Name = models.AuditFile
	if err := r.Install(m, onnx); err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Errorf("model named %q: %v", models.AuditFile, err)
	}
	m, onnx = sized(t, models.ActiveFile, 10, 'r')
	if err := r.Install(m, onnx); err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Errorf("version named %q: %v", models.ActiveFile, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, models.AuditFile)); err != nil || !bytes.HasPrefix(b, []byte("{")) {
		t.Errorf("audit log: %q, %v", b, err)
	}
}

func TestRemove(t *testing.T) {
	dir := t.TempDir()
	r := openRepo(t, dir)
	a, aONNX := sized(t, "1.0.0", 100, 'a')
	b, bONNX := sized(t, "1.1.0", 100, 'b')
	install(t, r, a, aONNX, true)
	install(t, r, b, bONNX, false)

	err := r.Remove(a.Name, "1.0.0")
	if err == nil || !strings.Contains(err.Error(), "active") || !strings.Contains(err.Error(), "el-defect 1.0.0") {
		t.Errorf("Remove of the active version: %v", err)
	}
	if _, _, err := r.LoadActive(a.Name); err != nil {
		t.Errorf("active version after the refused remove: %v", err)
	}
	if err := r.Remove(a.Name, "9.9.9"); !errors.Is(err, models.ErrNotFound) {
		t.Errorf("Remove of a version not installed: %v; want ErrNotFound", err)
	}
	if err := r.Remove(a.Name, "../1.0.0"); err == nil || !strings.Contains(err.Error(), "use letters, digits") {
		t.Errorf("Remove of ../1.0.0: %v", err)
	}
	if err := r.Remove(a.Name, "1.1.0"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Load(a.Name, "1.1.0"); !errors.Is(err, models.ErrNotFound) {
		t.Errorf("Load after Remove: %v; want ErrNotFound", err)
	}
	noTemps(t, dir)
	// Removed, it can be installed again.
	install(t, r, b, bONNX, false)
}

func TestPreviousAndRollback(t *testing.T) {
	dir := t.TempDir()
	r := openRepo(t, dir)
	var ms []*models.Manifest
	for i, v := range []string{"1.0.0", "1.1.0", "1.2.0"} {
		m, onnx := sized(t, v, 100, byte(i))
		install(t, r, m, onnx, false)
		ms = append(ms, m)
	}
	name := ms[0].Name

	if _, err := r.Previous("never-installed"); !errors.Is(err, models.ErrNotFound) {
		t.Errorf("Previous of an unknown model: %v; want ErrNotFound", err)
	}
	activate := func(v string) {
		t.Helper()
		if err := r.Activate(name, v); err != nil {
			t.Fatal(err)
		}
	}
	previous := func(want string) {
		t.Helper()
		got, err := r.Previous(name)
		if want == "" {
			if !errors.Is(err, models.ErrNotFound) || !strings.Contains(err.Error(), name) {
				t.Errorf("Previous = %q, %v; want ErrNotFound naming the model", got, err)
			}
			return
		}
		if err != nil || got != want {
			t.Errorf("Previous = %q, %v; want %q", got, err, want)
		}
	}
	activate("1.0.0")
	previous("") // no history yet
	activate("1.0.0")
	previous("") // activating the active version again is not a change
	activate("1.1.0")
	previous("1.0.0")
	activate("1.2.0")
	previous("1.1.0")

	// Rollback is one call: Activate(Previous). Rolling back again goes forward again:
	// the version active before the current one is the one rolled back from.
	p, _ := r.Previous(name)
	activate(p)
	previous("1.2.0")

	// A removed version is no rollback target; the next earlier one is.
	activate("1.0.0") // history: 1.0.0, 1.1.0, 1.2.0
	if err := r.Remove(name, "1.1.0"); err != nil {
		t.Fatal(err)
	}
	previous("1.2.0")
	if err := r.Remove(name, "1.2.0"); err != nil {
		t.Fatal(err)
	}
	previous("")

	// The history survives a restart.
	install(t, r, ms[1], sizedBytes(t, "1.1.0", 100, 1), true)
	again := openRepo(t, dir)
	if p, err := again.Previous(name); err != nil || p != "1.0.0" {
		t.Errorf("Previous after re-opening: %q, %v", p, err)
	}
}

func sizedBytes(t *testing.T, version string, n int, tag byte) []byte {
	_, b := sized(t, version, n, tag)
	return b
}

func TestPointerHistoryBounded(t *testing.T) {
	dir := t.TempDir()
	r := openRepo(t, dir)
	var name string
	for i := range 40 {
		m, onnx := sized(t, fmt.Sprintf("1.0.%d", i), 64, byte(i))
		install(t, r, m, onnx, true)
		name = m.Name
	}
	b, err := os.ReadFile(filepath.Join(dir, name, models.ActiveFile))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) > 16 || len(lines) < 2 {
		t.Errorf("pointer file holds %d lines after 40 activations, want 2 to 16:\n%s", len(lines), b)
	}
	if lines[0] != "1.0.39" || lines[1] != "1.0.38" {
		t.Errorf("pointer file starts %q, want the active version then the one before", lines[:2])
	}
	if p, err := r.Previous(name); err != nil || p != "1.0.38" {
		t.Errorf("Previous = %q, %v", p, err)
	}
}

// TestOldPointerFile: a pointer file written before the history was kept (one line,
// perhaps without a newline) still reads, and the next activation keeps it as history.
func TestOldPointerFile(t *testing.T) {
	for _, content := range []string{"1.0.0\n", "1.0.0", "1.0.0\r\n", " 1.0.0 \n\n"} {
		dir := t.TempDir()
		r := openRepo(t, dir)
		a, aONNX := sized(t, "1.0.0", 64, 'a')
		b, bONNX := sized(t, "1.1.0", 64, 'b')
		install(t, r, a, aONNX, false)
		install(t, r, b, bONNX, false)
		if err := os.WriteFile(filepath.Join(dir, a.Name, models.ActiveFile), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if v, err := r.ActiveVersion(a.Name); err != nil || v != "1.0.0" {
			t.Errorf("pointer %q: active %q, %v", content, v, err)
		}
		if _, err := r.Previous(a.Name); !errors.Is(err, models.ErrNotFound) {
			t.Errorf("pointer %q: Previous: %v; want ErrNotFound", content, err)
		}
		if err := r.Activate(a.Name, "1.1.0"); err != nil {
			t.Fatal(err)
		}
		if p, err := r.Previous(a.Name); err != nil || p != "1.0.0" {
			t.Errorf("pointer %q then Activate 1.1.0: Previous %q, %v", content, p, err)
		}
	}
}

// TestPointerHistoryDamaged: a bad history entry costs at most a rollback target, never
// the active version.
func TestPointerHistoryDamaged(t *testing.T) {
	dir := t.TempDir()
	r := openRepo(t, dir)
	a, aONNX := sized(t, "1.0.0", 64, 'a')
	b, bONNX := sized(t, "1.1.0", 64, 'b')
	install(t, r, a, aONNX, false)
	install(t, r, b, bONNX, false)
	if err := os.WriteFile(filepath.Join(dir, a.Name, models.ActiveFile), []byte("1.1.0\n../../etc\n\x00\n1.0.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if v, err := r.ActiveVersion(a.Name); err != nil || v != "1.1.0" {
		t.Errorf("active %q, %v", v, err)
	}
	if p, err := r.Previous(a.Name); err != nil || p != "1.0.0" {
		t.Errorf("Previous %q, %v", p, err)
	}
}

func TestVersionsAndNames(t *testing.T) {
	dir := t.TempDir()
	r := openRepo(t, dir)
	if names, err := r.Names(); err != nil || len(names) != 0 {
		t.Errorf("Names of an empty repository: %v, %v", names, err)
	}
	_, priv := testKey(1)
	var want []string
	for i, v := range []string{"1.0.0", "0.9.0", "2.0.0"} { // install order is not version order
		m, onnx := sized(t, v, 100+i, byte(i))
		if v == "0.9.0" {
			if err := models.Sign(m, priv); err != nil {
				t.Fatal(err)
			}
		}
		install(t, r, m, onnx, v == "0.9.0")
		want = append([]string{v}, want...)
	}
	other, otherONNX := sized(t, "1", 10, 'o')
	other.Name = "press-fit"
	install(t, r, other, otherONNX, false)
	if err := r.Audit(models.AuditRecord{Action: "push", Name: "x", Version: "1", Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	// Leftovers of a crash and stray files are not models nor versions.
	os.Mkdir(filepath.Join(dir, ".install-123"), 0o755)
	os.Mkdir(filepath.Join(dir, "el-defect", ".install-456"), 0o755)
	os.WriteFile(filepath.Join(dir, "README"), nil, 0o644)

	names, err := r.Names()
	if err != nil || !slices.Equal(names, []string{"el-defect", "press-fit"}) {
		t.Errorf("Names = %v, %v", names, err)
	}
	vs, err := r.Versions("el-defect")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range vs {
		got = append(got, v.Version)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Versions = %v, want newest install first %v", got, want)
	}
	for i, v := range vs {
		if v.Name != "el-defect" || v.Size != int64(100+2-i) || len(v.SHA256) != 64 || v.Installed.IsZero() || v.Active != (v.Version == "0.9.0") {
			t.Errorf("version %d: %+v", i, v)
		}
		if i > 0 && v.Installed.After(vs[i-1].Installed) {
			t.Errorf("version %s installed after %s but listed later", v.Version, vs[i-1].Version)
		}
		if time.Since(v.Installed) > time.Hour || v.Installed.After(time.Now()) {
			t.Errorf("version %s installed at %v", v.Version, v.Installed)
		}
	}
	if vs[1].KeyID == "" || vs[0].KeyID != "" {
		t.Errorf("key ids %q, %q; want the signed 0.9.0's only", vs[0].KeyID, vs[1].KeyID)
	}
	// The install time survives a restart (it is recorded, not the folder's).
	again, err := openRepo(t, dir).Versions("el-defect")
	if err != nil || !again[0].Installed.Equal(vs[0].Installed) {
		t.Errorf("after re-opening: %v, %v", again, err)
	}
	if _, err := r.Versions("never-installed"); !errors.Is(err, models.ErrNotFound) {
		t.Errorf("Versions of an unknown model: %v", err)
	}
}

func TestPrune(t *testing.T) {
	for _, tc := range []struct {
		name     string
		activate []string // in order
		keep     int
		removed  []string
	}{
		{"newest active", []string{"v1", "v2", "v3", "v4", "v5", "v6"}, 3, []string{"v3", "v2", "v1"}},
		{"keep 0 spares active and previous", []string{"v1", "v6"}, 0, []string{"v5", "v4", "v3", "v2"}},
		{"rolled back to the oldest", []string{"v6", "v1"}, 2, []string{"v4", "v3", "v2"}},
		{"previous is old", []string{"v2", "v5"}, 1, []string{"v4", "v3", "v1"}},
		{"keep more than installed", []string{"v3"}, 10, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			r := openRepo(t, dir)
			for i := 1; i <= 6; i++ {
				m, onnx := sized(t, fmt.Sprintf("v%d", i), 64, byte(i))
				install(t, r, m, onnx, false)
			}
			for _, v := range tc.activate {
				if err := r.Activate("el-defect", v); err != nil {
					t.Fatal(err)
				}
			}
			active, _ := r.ActiveVersion("el-defect")
			prev, _ := r.Previous("el-defect")
			removed, err := r.Prune("el-defect", tc.keep)
			if err != nil || !slices.Equal(removed, tc.removed) {
				t.Errorf("Prune(keep %d) = %v, %v; want %v", tc.keep, removed, err, tc.removed)
			}
			if a, _ := r.ActiveVersion("el-defect"); a != active {
				t.Errorf("active %q became %q", active, a)
			}
			if p, _ := r.Previous("el-defect"); p != prev {
				t.Errorf("previous %q became %q", prev, p)
			}
			vs, _ := r.Versions("el-defect")
			if len(vs) != 6-len(tc.removed) {
				t.Errorf("%d versions left, want %d", len(vs), 6-len(tc.removed))
			}
			noTemps(t, dir)
		})
	}
	r := openRepo(t, t.TempDir())
	if _, err := r.Prune("el-defect", -1); err == nil || !strings.Contains(err.Error(), "-1") {
		t.Errorf("Prune(keep -1): %v", err)
	}
}

func TestAudit(t *testing.T) {
	dir := t.TempDir()
	r := openRepo(t, dir)
	at := time.Date(2026, 11, 28, 3, 0, 0, 0, time.FixedZone("plant", 3600))
	recs := []models.AuditRecord{
		{Time: at, Action: models.AuditPush, Name: "el-defect", Version: "1.1.0", SHA256: strings.Repeat("a", 64), KeyID: "ed25519:0011223344556677", Via: "http 127.0.0.1:5555", Result: "ok"},
		{Action: models.AuditRefuse, Name: "el-defect", Version: "1.2.0", Via: "mqtt", Result: "model el-defect 1.2.0: manifest signature does not match\nits content \"quoted\""},
		{Action: models.AuditRollback, Name: "el-defect", Version: "1.0.0", Via: "cli", Result: "ok"},
	}
	before := time.Now()
	for _, rec := range recs {
		if err := r.Audit(rec); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, models.AuditFile))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != len(recs) || !strings.HasSuffix(string(b), "\n") {
		t.Fatalf("%d lines for %d records:\n%s", len(lines), len(recs), b)
	}
	for i, l := range lines {
		dec := json.NewDecoder(strings.NewReader(l))
		dec.DisallowUnknownFields()
		var got models.AuditRecord
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("line %d %q: %v", i, l, err)
		}
		want := recs[i]
		if want.Time.IsZero() {
			if got.Time.Before(before.Add(-time.Second)) || got.Time.After(time.Now()) {
				t.Errorf("line %d: time %v not set to now", i, got.Time)
			}
			want.Time = got.Time
		}
		if !got.Time.Equal(want.Time) || got.Time.Location() != time.UTC {
			t.Errorf("line %d: time %v, want %v in UTC", i, got.Time, want.Time)
		}
		got.Time, want.Time = time.Time{}, time.Time{}
		if got != want {
			t.Errorf("line %d:\ngot  %+v\nwant %+v", i, got, want)
		}
	}
	if !strings.Contains(lines[0], `"action":"push"`) || strings.Contains(lines[2], "sha256") {
		t.Errorf("field names or omitempty differ from the agreed ones:\n%s", b)
	}
}

// TestOpenClearsLeftovers: what a crash left is gone once the repository is opened,
// and only that: settled versions, the pointer and the audit log stay.
func TestOpenClearsLeftovers(t *testing.T) {
	dir := t.TempDir()
	r := openRepo(t, dir)
	m, onnx := sized(t, "1.0.0", 100, 'a')
	install(t, r, m, onnx, true)
	if err := r.Audit(models.AuditRecord{Action: models.AuditActivate, Name: m.Name, Version: m.Version, Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{".install-1", ".remove-2/v", "el-defect/.install-3", "el-defect/.remove-4"} {
		if err := os.MkdirAll(filepath.Join(dir, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{".install-5", "el-defect/.active.tmp", "el-defect/.active-123.tmp", ".install-1/model.onnx"} {
		if err := os.WriteFile(filepath.Join(dir, p), []byte("9.9.9\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Not ours: left alone.
	if err := os.WriteFile(filepath.Join(dir, ".keep"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	openRepo(t, dir)
	if left := tempEntries(dir); !slices.Equal(left, []string{filepath.Join(dir, ".keep")}) {
		t.Errorf("after OpenRepository: %v; want only .keep", left)
	}
	if _, got, err := r.LoadActive(m.Name); err != nil || !bytes.Equal(got, onnx) {
		t.Errorf("LoadActive: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, models.AuditFile)); len(b) == 0 {
		t.Error("audit log gone")
	}
}

// TestOpenLeavesInstallInProgress: an edged model command opening the repository while
// edged streams a push into it must not pull the push's temporary folder away.
func TestOpenLeavesInstallInProgress(t *testing.T) {
	dir := t.TempDir()
	r := openRepo(t, dir)
	m, onnx := sized(t, "1.0.0", 1<<20, 'p')
	pr, pw := io.Pipe()
	result := make(chan error, 1)
	go func() { result <- r.InstallStream(m, pr) }()
	// Once the first piece is taken, the temporary folder exists.
	if _, err := pw.Write(onnx[:1000]); err != nil {
		t.Fatal(err)
	}
	if left := tempEntries(dir); len(left) != 1 {
		t.Fatalf("temporary entries during the install: %v", left)
	}
	openRepo(t, dir)
	if left := tempEntries(dir); len(left) != 1 {
		t.Errorf("OpenRepository during an install cleared its folder: %v", left)
	}
	if _, err := pw.Write(onnx[1000:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if err := <-result; err != nil {
		t.Fatalf("the install: %v", err)
	}
	if _, got, err := r.Load(m.Name, m.Version); err != nil || !bytes.Equal(got, onnx) {
		t.Errorf("Load: %v", err)
	}
	noTemps(t, dir)
}

// TestConcurrentChanges: pushes, activations, prunes and reads from several goroutines
// at once (HTTP and MQTT pushes, a status page) leave a consistent repository.
func TestConcurrentChanges(t *testing.T) {
	dir := t.TempDir()
	r := openRepo(t, dir)
	base, baseONNX := sized(t, "1.0.0", 1000, 0)
	install(t, r, base, baseONNX, true)
	same, sameONNX := sized(t, "2.0.0", 200<<10, 'S')
	var wg sync.WaitGroup
	errs := make(chan error, 256)
	// Several goroutines push the same build at once: all succeed, one copy lands.
	for range 4 {
		wg.Go(func() {
			if err := r.InstallStream(same, iotestHalf{bytes.NewReader(sameONNX)}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	if _, got, err := r.Load(same.Name, same.Version); err != nil || !bytes.Equal(got, sameONNX) {
		t.Errorf("the build pushed several times at once: %v", err)
	}
	noTemps(t, dir)

	for g := range 6 {
		wg.Go(func() {
			for i := range 5 {
				m, onnx := sized(t, fmt.Sprintf("3.%d.%d", g, i), 1000+i, byte(g*10+i))
				if err := r.InstallStream(m, bytes.NewReader(onnx)); err != nil {
					errs <- err
					return
				}
				// Another goroutine's prune may take it first: a push that runs its
				// prunes out of step with its activations can lose the race, never
				// the repository's consistency.
				if err := r.Activate(m.Name, m.Version); err != nil && !errors.Is(err, models.ErrNotFound) {
					errs <- err
				}
				if _, err := r.Prune(m.Name, 4); err != nil {
					errs <- err
				}
				if _, _, err := r.LoadActive(m.Name); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	vs, err := r.Versions(base.Name)
	if err != nil {
		t.Fatal(err)
	}
	// Every install was followed by a prune, so the last prune saw them all.
	if len(vs) > 4+2 {
		t.Errorf("%d versions left after pruning to 4", len(vs))
	}
	if p, err := r.Previous(base.Name); err != nil || !slices.ContainsFunc(vs, func(v models.VersionInfo) bool { return v.Version == p }) {
		t.Errorf("Previous %q, %v; not among %v", p, err, vs)
	}
	noTemps(t, dir)
}
