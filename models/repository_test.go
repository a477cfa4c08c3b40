package models_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/edgedrun/edged/models"
	"github.com/edgedrun/edged/models/demo"
)

// demoModel is the bundled model, a fresh copy for each call.
func demoModel(t *testing.T) (*models.Manifest, []byte) {
	t.Helper()
	m, onnx, err := demo.Load()
	if err != nil {
		t.Fatal(err)
	}
	return m, onnx
}

// variant is the demo model as another version with other bytes, so tests can tell
// versions apart by content.
func variant(t *testing.T, version string, tag byte) (*models.Manifest, []byte) {
	t.Helper()
	m, onnx := demoModel(t)
	onnx = append(onnx, tag)
	sum := sha256.Sum256(onnx)
	m.Version, m.Size, m.SHA256 = version, int64(len(onnx)), hex.EncodeToString(sum[:])
	m.Description = "variant " + string(tag)
	return m, onnx
}

func openRepo(t *testing.T, dir string) *models.Repository {
	t.Helper()
	r, err := models.OpenRepository(dir)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func install(t *testing.T, r *models.Repository, m *models.Manifest, onnx []byte, activate bool) {
	t.Helper()
	if err := r.Install(m, onnx); err != nil {
		t.Fatalf("install %s %s: %v", m.Name, m.Version, err)
	}
	if activate {
		if err := r.Activate(m.Name, m.Version); err != nil {
			t.Fatalf("activate %s %s: %v", m.Name, m.Version, err)
		}
	}
}

// leftovers lists what an install or activate left behind in the model's folder.
func leftovers(t *testing.T, nameDir string) []string {
	t.Helper()
	ents, err := os.ReadDir(nameDir)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			left = append(left, e.Name())
		}
	}
	return left
}

func TestInstallActivateLoadActive(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "repo")
	r := openRepo(t, dir) // creates the missing parents
	if r.Dir() != dir {
		t.Errorf("Dir() = %q, want %q", r.Dir(), dir)
	}
	m, onnx := demoModel(t)
	install(t, r, m, onnx, false)

	// Install alone does not activate.
	if v, err := r.ActiveVersion(m.Name); !errors.Is(err, models.ErrNotFound) {
		t.Fatalf("active version before Activate: %q, %v; want ErrNotFound", v, err)
	}
	if err := r.Activate(m.Name, m.Version); err != nil {
		t.Fatal(err)
	}
	if v, err := r.ActiveVersion(m.Name); err != nil || v != m.Version {
		t.Fatalf("active version %q, %v; want %q", v, err, m.Version)
	}
	got, gotONNX, err := r.LoadActive(m.Name)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Errorf("manifest changed on the round trip:\ngot  %+v\nwant %+v", got, m)
	}
	if !bytes.Equal(gotONNX, onnx) {
		t.Errorf("model bytes changed on the round trip (%d bytes, want %d)", len(gotONNX), len(onnx))
	}

	// The layout is the documented one, so people and tools can find the files.
	vdir := filepath.Join(dir, m.Name, m.Version)
	if b, err := os.ReadFile(filepath.Join(vdir, models.ModelFile)); err != nil || !bytes.Equal(b, onnx) {
		t.Errorf("%s: %d bytes, %v", models.ModelFile, len(b), err)
	}
	if b, err := os.ReadFile(filepath.Join(vdir, models.ManifestFile)); err != nil {
		t.Error(err)
	} else if _, err := models.ParseManifest(b); err != nil {
		t.Errorf("%s on disk does not parse: %v", models.ManifestFile, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, m.Name, models.ActiveFile)); err != nil || string(b) != m.Version+"\n" {
		t.Errorf("%s holds %q, %v", models.ActiveFile, b, err)
	}
	if left := leftovers(t, filepath.Join(dir, m.Name)); len(left) != 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}

func TestInstallRefusesUnverifiedModel(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(onnx []byte) []byte
		want   []string
	}{
		{"one byte flipped", func(b []byte) []byte { b[len(b)/2] ^= 0x01; return b }, []string{"sha256", "the manifest says"}},
		{"truncated", func(b []byte) []byte { return b[:len(b)-1] }, []string{"is 190760 bytes, the manifest says 190761"}},
		{"empty", func([]byte) []byte { return nil }, []string{"is 0 bytes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			r := openRepo(t, dir)
			m, onnx := demoModel(t)
			err := r.Install(m, tc.damage(onnx))
			if err == nil {
				t.Fatal("installed")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			// Nothing at all was written: a refused model leaves no trace.
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("repository holds %d entries after a refused install", len(ents))
			}
		})
	}
}

func TestLoadRefusesDamagedVersion(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, vdir string)
		// want are texts the error must hold; <dir> stands for the repository folder.
		want     []string
		notFound bool
	}{
		{
			name: "one byte flipped in the model",
			damage: func(t *testing.T, vdir string) {
				rewrite(t, filepath.Join(vdir, models.ModelFile), func(b []byte) []byte { b[1000] ^= 0x80; return b })
			},
			want: []string{"sha256", "push the model again", "remove <dir>/el-defect/1.0.0"},
		},
		{
			name: "model truncated",
			damage: func(t *testing.T, vdir string) {
				rewrite(t, filepath.Join(vdir, models.ModelFile), func(b []byte) []byte { return b[:len(b)/2] })
			},
			want: []string{"is 95380 bytes, the manifest says 190761", "push the model again"},
		},
		{
			name: "model missing",
			damage: func(t *testing.T, vdir string) {
				if err := os.Remove(filepath.Join(vdir, models.ModelFile)); err != nil {
					t.Fatal(err)
				}
			},
			want:     []string{"el-defect 1.0.0"},
			notFound: true,
		},
		{
			name: "manifest names another version",
			damage: func(t *testing.T, vdir string) {
				rewriteManifest(t, vdir, func(m *models.Manifest) { m.Version = "2.0.0" })
			},
			want: []string{"manifest names el-defect 2.0.0"},
		},
		{
			name: "manifest names another model",
			damage: func(t *testing.T, vdir string) {
				rewriteManifest(t, vdir, func(m *models.Manifest) { m.Name = "other" })
			},
			want: []string{"manifest names other 1.0.0"},
		},
		{
			name: "manifest no longer valid",
			damage: func(t *testing.T, vdir string) {
				rewriteManifest(t, vdir, func(m *models.Manifest) { m.Postprocess.Threshold = 0 })
			},
			want: []string{models.ManifestFile, "postprocess.threshold 0"},
		},
		{
			name: "manifest cut short",
			damage: func(t *testing.T, vdir string) {
				rewrite(t, filepath.Join(vdir, models.ManifestFile), func(b []byte) []byte { return b[:len(b)/2] })
			},
			want: []string{models.ManifestFile, "parse manifest"},
		},
		{
			name: "manifest missing",
			damage: func(t *testing.T, vdir string) {
				if err := os.Remove(filepath.Join(vdir, models.ManifestFile)); err != nil {
					t.Fatal(err)
				}
			},
			want:     []string{"el-defect 1.0.0"},
			notFound: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			r := openRepo(t, dir)
			m, onnx := demoModel(t)
			install(t, r, m, onnx, true)
			tc.damage(t, filepath.Join(dir, m.Name, m.Version))

			_, _, errLoad := r.Load(m.Name, m.Version)
			_, _, errActive := r.LoadActive(m.Name)
			for what, err := range map[string]error{"Load": errLoad, "LoadActive": errActive} {
				if err == nil {
					t.Errorf("%s: loaded a damaged version", what)
					continue
				}
				for _, w := range tc.want {
					w = strings.ReplaceAll(w, "<dir>", dir)
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s: error %q does not contain %q", what, err, w)
					}
				}
				if errors.Is(err, models.ErrNotFound) != tc.notFound {
					t.Errorf("%s: errors.Is(%v, ErrNotFound) = %v, want %v", what, err, !tc.notFound, tc.notFound)
				}
			}
		})
	}
}

func rewrite(t *testing.T, path string, f func([]byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, f(b), 0o644); err != nil {
		t.Fatal(err)
	}
}

func rewriteManifest(t *testing.T, vdir string, f func(m *models.Manifest)) {
	t.Helper()
	rewrite(t, filepath.Join(vdir, models.ManifestFile), func(b []byte) []byte {
		var m models.Manifest
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		f(&m)
		out, err := json.Marshal(&m)
		if err != nil {
			t.Fatal(err)
		}
		return out
	})
}

func TestActiveVersionUnknownModel(t *testing.T) {
	dir := t.TempDir()
	r := openRepo(t, dir)
	m, onnx := demoModel(t)
	install(t, r, m, onnx, false) // el-defect exists but has no active version
	for _, name := range []string{"never-installed", m.Name} {
		t.Run(name, func(t *testing.T) {
			v, err := r.ActiveVersion(name)
			if !errors.Is(err, models.ErrNotFound) {
				t.Fatalf("ActiveVersion(%q) = %q, %v; want an error wrapping ErrNotFound", name, v, err)
			}
			if !strings.Contains(err.Error(), name) {
				t.Errorf("error %q does not name the model %q", err, name)
			}
			if _, _, err := r.LoadActive(name); !errors.Is(err, models.ErrNotFound) {
				t.Errorf("LoadActive(%q): %v; want ErrNotFound", name, err)
			}
		})
	}
	if _, _, err := r.Load("never-installed", "1.0.0"); !errors.Is(err, models.ErrNotFound) {
		t.Errorf("Load of a model never installed: %v; want ErrNotFound", err)
	}
	if _, _, err := r.Load(m.Name, "9.9.9"); !errors.Is(err, models.ErrNotFound) {
		t.Errorf("Load of a version never installed: %v; want ErrNotFound", err)
	}
}

func TestUnsafeNamesRefused(t *testing.T) {
	for _, bad := range []string{
		"", "../x", "..", ".", "a/b", "/abs", `a\b`, ".hidden", "-flag", "a b", "x\x00y",
		"tab\t", "ü", strings.Repeat("a", 129),
	} {
		t.Run(strings.ToValidUTF8(bad, "?"), func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join(root, "repo")
			r := openRepo(t, dir)
			good, onnx := demoModel(t)
			install(t, r, good, onnx, true)

			asName, _ := demoModel(t)
			asName.Name = bad
			asVersion, _ := demoModel(t)
			asVersion.Version = bad
			calls := map[string]error{
				"Install(name)":       r.Install(asName, onnx),
				"Install(version)":    r.Install(asVersion, onnx),
				"Activate(name)":      r.Activate(bad, good.Version),
				"Activate(version)":   r.Activate(good.Name, bad),
				"ActiveVersion(name)": func() error { _, err := r.ActiveVersion(bad); return err }(),
				"Load(name)":          func() error { _, _, err := r.Load(bad, good.Version); return err }(),
				"Load(version)":       func() error { _, _, err := r.Load(good.Name, bad); return err }(),
				"LoadActive(name)":    func() error { _, _, err := r.LoadActive(bad); return err }(),
				"InstallStream(name)": r.InstallStream(asName, bytes.NewReader(onnx)),
				"InstallStream(ver)":  r.InstallStream(asVersion, bytes.NewReader(onnx)),
				"Remove(name)":        r.Remove(bad, good.Version),
				"Remove(version)":     r.Remove(good.Name, bad),
				"Previous(name)":      func() error { _, err := r.Previous(bad); return err }(),
				"Versions(name)":      func() error { _, err := r.Versions(bad); return err }(),
				"Prune(name)":         func() error { _, err := r.Prune(bad, 1); return err }(),
			}
			for call, err := range calls {
				if err == nil {
					t.Errorf("%s accepted %q", call, bad)
					continue
				}
				if !strings.Contains(err.Error(), "use letters, digits") {
					t.Errorf("%s: error %q does not say which names are allowed", call, err)
				}
			}
			// Nothing escaped the repository and the good model is untouched.
			if ents, _ := os.ReadDir(root); len(ents) != 1 {
				t.Errorf("%d entries beside the repository, want none", len(ents)-1)
			}
			if v, err := r.ActiveVersion(good.Name); err != nil || v != good.Version {
				t.Errorf("active version now %q, %v", v, err)
			}
		})
	}
}

func TestLongestSafeNameAccepted(t *testing.T) {
	r := openRepo(t, t.TempDir())
	m, onnx := demoModel(t)
	m.Name = strings.Repeat("n", 128)
	m.Version = "1.0.0-rc_1"
	install(t, r, m, onnx, true)
	if _, _, err := r.LoadActive(m.Name); err != nil {
		t.Fatal(err)
	}
}

func TestActivateVersionNotInstalled(t *testing.T) {
	r := openRepo(t, t.TempDir())
	if err := r.Activate("never-installed", "1.0.0"); !errors.Is(err, models.ErrNotFound) {
		t.Errorf("Activate of a model never installed: %v; want an error wrapping ErrNotFound", err)
	}
	if _, err := r.ActiveVersion("never-installed"); !errors.Is(err, models.ErrNotFound) {
		t.Errorf("a failed Activate created an active pointer: %v", err)
	}

	m, onnx := demoModel(t)
	install(t, r, m, onnx, true)
	if err := r.Activate(m.Name, "9.9.9"); !errors.Is(err, models.ErrNotFound) || !strings.Contains(err.Error(), "9.9.9") {
		t.Errorf("Activate of a version not installed: %v; want an error naming it and wrapping ErrNotFound", err)
	}
	// The previous active version stays in force.
	if v, err := r.ActiveVersion(m.Name); err != nil || v != m.Version {
		t.Errorf("active version %q, %v; want %q", v, err, m.Version)
	}
}

// A version names one build forever: the same build again is a no-op, another build
// under the same version is refused and the installed one stays.
func TestReinstallSameVersion(t *testing.T) {
	dir := t.TempDir()
	r := openRepo(t, dir)
	first, firstONNX := variant(t, "1.0.0", 'a')
	install(t, r, first, firstONNX, true)
	if err := r.Install(first, firstONNX); err != nil {
		t.Fatalf("re-install of the same build: %v", err)
	}
	second, secondONNX := variant(t, "1.0.0", 'b')
	err := r.Install(second, secondONNX)
	if !errors.Is(err, models.ErrVersionExists) || !strings.Contains(err.Error(), "new version") {
		t.Fatalf("another build as 1.0.0: %v; want ErrVersionExists telling to pick a new version", err)
	}
	m, onnx, err := r.LoadActive("el-defect")
	if err != nil || !bytes.Equal(onnx, firstONNX) || m.SHA256 != first.SHA256 {
		t.Fatalf("after the refused install: %v, first build kept: %v", err, bytes.Equal(onnx, firstONNX))
	}
	if left := leftovers(t, filepath.Join(dir, "el-defect")); len(left) != 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}

// TestReinstallWhileReading: installs of an installed version never disturb a reader
// of it.
func TestReinstallWhileReading(t *testing.T) {
	r := openRepo(t, t.TempDir())
	a, aONNX := variant(t, "1.0.0", 'a')
	b, bONNX := variant(t, "1.0.0", 'b')
	install(t, r, a, aONNX, true)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var loadErr error
	var loads int
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, onnx, err := r.LoadActive("el-defect")
			loads++
			if err != nil {
				loadErr = err
				return
			}
			if !bytes.Equal(onnx, aONNX) {
				loadErr = errors.New("loaded bytes of another build")
				return
			}
		}
	})
	for i := 0; i < 200; i++ {
		m, onnx := a, aONNX
		if i%2 == 0 {
			m, onnx = b, bONNX
		}
		err := r.Install(m, onnx)
		if (i%2 == 0) != errors.Is(err, models.ErrVersionExists) || (i%2 == 1 && err != nil) {
			close(stop)
			wg.Wait()
			t.Fatalf("install %d: %v", i, err)
		}
	}
	close(stop)
	wg.Wait()
	if loadErr != nil {
		t.Fatalf("a reader failed during re-installs (after %d loads): %v", loads, loadErr)
	}
}

// TestVersionNamedActive: a version may not take the name of the active pointer file,
// or installing it would replace the pointer with a folder.
func TestVersionNamedActive(t *testing.T) {
	r := openRepo(t, t.TempDir())
	m, onnx := demoModel(t)
	install(t, r, m, onnx, true)
	clash, _ := demoModel(t)
	clash.Version = models.ActiveFile
	err := r.Install(clash, onnx)
	if v, verr := r.ActiveVersion(m.Name); verr != nil || v != m.Version {
		t.Errorf("after Install of version %q (err %v): active version %q, %v; want %q", models.ActiveFile, err, v, verr, m.Version)
	}
	if err == nil {
		t.Errorf("Install of version %q accepted", models.ActiveFile)
	}
}

func TestCrashLeftoversIgnored(t *testing.T) {
	dir := t.TempDir()
	r := openRepo(t, dir)
	m, onnx := variant(t, "1.0.0", 'a')
	install(t, r, m, onnx, true)
	nameDir := filepath.Join(dir, m.Name)

	// What a crash in Install leaves: a half-written version in a temporary folder. Its
	// manifest names a version that is not installed, to catch a loader that reads it.
	stray := filepath.Join(nameDir, ".install-1234567")
	if err := os.Mkdir(stray, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stray, models.ModelFile), onnx[:100], 0o644); err != nil {
		t.Fatal(err)
	}
	// What a crash in Activate leaves: the next pointer, not yet renamed into place.
	if err := os.WriteFile(filepath.Join(nameDir, ".active.tmp"), []byte("9.9.9\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	got, gotONNX, err := r.LoadActive(m.Name)
	if err != nil {
		t.Fatalf("LoadActive with crash leftovers: %v", err)
	}
	if got.Version != "1.0.0" || !bytes.Equal(gotONNX, onnx) {
		t.Errorf("loaded %s (%d bytes), want 1.0.0 (%d bytes)", got.Version, len(gotONNX), len(onnx))
	}

	// Work goes on over the leftovers: install and activate another version.
	m2, onnx2 := variant(t, "1.1.0", 'b')
	install(t, r, m2, onnx2, true)
	if _, got, err := r.LoadActive(m.Name); err != nil || !bytes.Equal(got, onnx2) {
		t.Errorf("after activating 1.1.0 over the leftovers: %d bytes, %v", len(got), err)
	}
}

func TestActiveSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	r := openRepo(t, dir)
	m1, onnx1 := variant(t, "1.0.0", 'a')
	m2, onnx2 := variant(t, "1.1.0", 'b')
	install(t, r, m1, onnx1, true)
	install(t, r, m2, onnx2, true)
	if err := r.Activate(m1.Name, "1.0.0"); err != nil { // roll back
		t.Fatal(err)
	}

	again := openRepo(t, dir)
	if v, err := again.ActiveVersion(m1.Name); err != nil || v != "1.0.0" {
		t.Fatalf("active version after re-opening: %q, %v; want 1.0.0", v, err)
	}
	if _, got, err := again.LoadActive(m1.Name); err != nil || !bytes.Equal(got, onnx1) {
		t.Errorf("LoadActive after re-opening: %d bytes, %v; want the 1.0.0 build", len(got), err)
	}
	// The other version is still there to roll forward to.
	if _, got, err := again.Load(m2.Name, "1.1.0"); err != nil || !bytes.Equal(got, onnx2) {
		t.Errorf("Load 1.1.0 after re-opening: %d bytes, %v", len(got), err)
	}
}

func TestActivePointerDamaged(t *testing.T) {
	for _, tc := range []struct {
		name, content, want string
	}{
		{"escaping path", "../../etc\n", "use letters, digits"},
		{"empty", "", "use letters, digits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			r := openRepo(t, dir)
			m, onnx := demoModel(t)
			install(t, r, m, onnx, true)
			active := filepath.Join(dir, m.Name, models.ActiveFile)
			if err := os.WriteFile(active, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := r.ActiveVersion(m.Name)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), active) {
				t.Errorf("ActiveVersion: %v; want an error naming %s and containing %q", err, active, tc.want)
			}
		})
	}
}

func TestOpenRepositoryOnAFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := models.OpenRepository(file); err == nil || !strings.Contains(err.Error(), file) {
		t.Errorf("OpenRepository on a file: %v; want an error naming it", err)
	}
}
