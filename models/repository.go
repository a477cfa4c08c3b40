package models

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Repository is the on-disk model store: <dir>/<name>/<version>/{model.onnx,manifest.json}
// with the active version per name in <dir>/<name>/active. Every write goes to a
// temporary file, is synced, and is renamed into place, so a crash at any instant leaves
// the repository readable and the previous active version in force.
type Repository struct {
	dir string
}

// Files inside a version folder and a model folder.
const (
	ModelFile    = "model.onnx"
	ManifestFile = "manifest.json"
	ActiveFile   = "active"
)

// ErrNotFound is returned when a model or version is not in the repository.
var ErrNotFound = errors.New("not in the model repository")

var safeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// OpenRepository opens (creating if needed) the repository at dir.
func OpenRepository(dir string) (*Repository, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("model repository %s: %w", dir, err)
	}
	return &Repository{dir: dir}, nil
}

// Dir is the repository's root folder.
func (r *Repository) Dir() string { return r.dir }

func checkNames(name, version string) error {
	if !safeName.MatchString(name) {
		return fmt.Errorf("model name %q: use letters, digits, '.', '_' and '-' only", name)
	}
	if !safeName.MatchString(version) {
		return fmt.Errorf("model version %q: use letters, digits, '.', '_' and '-' only", version)
	}
	// The version folder sits beside the pointer file.
	if version == ActiveFile {
		return fmt.Errorf("model version %q is reserved for the active-version pointer", version)
	}
	return nil
}

// ErrVersionExists is returned by Install for a version already installed with other
// content: a version names one build forever, so that every result's model.version and
// sha256 keep meaning the same thing.
var ErrVersionExists = errors.New("model version already installed with different content")

// Verify checks the model bytes against the manifest's size and sha256.
func Verify(m *Manifest, onnx []byte) error {
	if int64(len(onnx)) != m.Size {
		return fmt.Errorf("model %s %s is %d bytes, the manifest says %d", m.Name, m.Version, len(onnx), m.Size)
	}
	sum := sha256.Sum256(onnx)
	if got := hex.EncodeToString(sum[:]); !strings.EqualFold(got, m.SHA256) {
		return fmt.Errorf("model %s %s has sha256 %s, the manifest says %s", m.Name, m.Version, got, m.SHA256)
	}
	return nil
}

// Install verifies the model and writes it as <name>/<version>. It does not activate it.
// Installing the same build again is a no-op; another build under an installed version
// is refused with ErrVersionExists, so an installed version never changes under a reader.
func (r *Repository) Install(m *Manifest, onnx []byte) error {
	if err := checkNames(m.Name, m.Version); err != nil {
		return err
	}
	if err := Verify(m, onnx); err != nil {
		return err
	}
	if have, _, err := r.Load(m.Name, m.Version); err == nil {
		if strings.EqualFold(have.SHA256, m.SHA256) {
			return nil
		}
		return fmt.Errorf("install %s %s: %w (sha256 %s installed, %s offered); give the new build a new version", m.Name, m.Version, ErrVersionExists, have.SHA256, m.SHA256)
	}
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	nameDir := filepath.Join(r.dir, m.Name)
	if err := os.MkdirAll(nameDir, 0o755); err != nil {
		return fmt.Errorf("install model: %w", err)
	}
	tmp, err := os.MkdirTemp(nameDir, ".install-")
	if err != nil {
		return fmt.Errorf("install model: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := writeSynced(filepath.Join(tmp, ModelFile), onnx); err != nil {
		return err
	}
	if err := writeSynced(filepath.Join(tmp, ManifestFile), append(mb, '\n')); err != nil {
		return err
	}
	if err := syncDir(tmp); err != nil {
		return err
	}
	// A damaged copy of this version (Load failed above) is replaced; a sound one never is.
	final := filepath.Join(nameDir, m.Version)
	if err := os.RemoveAll(final); err != nil {
		return fmt.Errorf("install model: replace %s: %w", final, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("install model: %w", err)
	}
	return syncDir(nameDir)
}

// Activate makes version the active one for name.
func (r *Repository) Activate(name, version string) error {
	if err := checkNames(name, version); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(r.dir, name, version, ManifestFile)); err != nil {
		return fmt.Errorf("activate %s %s: %w", name, version, notFound(err))
	}
	nameDir := filepath.Join(r.dir, name)
	tmp := filepath.Join(nameDir, "."+ActiveFile+".tmp")
	if err := writeSynced(tmp, []byte(version+"\n")); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(nameDir, ActiveFile)); err != nil {
		return fmt.Errorf("activate %s %s: %w", name, version, err)
	}
	return syncDir(nameDir)
}

// ActiveVersion reads the active version of name.
func (r *Repository) ActiveVersion(name string) (string, error) {
	if err := checkNames(name, "x"); err != nil {
		return "", err
	}
	b, err := os.ReadFile(filepath.Join(r.dir, name, ActiveFile))
	if err != nil {
		return "", fmt.Errorf("model %s: %w", name, notFound(err))
	}
	v := strings.TrimSpace(string(b))
	if err := checkNames(name, v); err != nil {
		return "", fmt.Errorf("model %s: active file %s: %w", name, filepath.Join(r.dir, name, ActiveFile), err)
	}
	return v, nil
}

// Load reads and verifies one version.
func (r *Repository) Load(name, version string) (*Manifest, []byte, error) {
	if err := checkNames(name, version); err != nil {
		return nil, nil, err
	}
	dir := filepath.Join(r.dir, name, version)
	mb, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return nil, nil, fmt.Errorf("model %s %s: %w", name, version, notFound(err))
	}
	m, err := ParseManifest(mb)
	if err != nil {
		return nil, nil, fmt.Errorf("model %s %s: %s: %w", name, version, filepath.Join(dir, ManifestFile), err)
	}
	if m.Name != name || m.Version != version {
		return nil, nil, fmt.Errorf("model %s %s: manifest names %s %s", name, version, m.Name, m.Version)
	}
	onnx, err := os.ReadFile(filepath.Join(dir, ModelFile))
	if err != nil {
		return nil, nil, fmt.Errorf("model %s %s: %w", name, version, notFound(err))
	}
	if err := Verify(m, onnx); err != nil {
		return nil, nil, fmt.Errorf("%s: %w; the file is damaged: push the model again or remove %s", filepath.Join(dir, ModelFile), err, dir)
	}
	return m, onnx, nil
}

// LoadActive reads and verifies the active version of name.
func (r *Repository) LoadActive(name string) (*Manifest, []byte, error) {
	v, err := r.ActiveVersion(name)
	if err != nil {
		return nil, nil, err
	}
	return r.Load(name, v)
}

func notFound(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w (%v)", ErrNotFound, err)
	}
	return err
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
