package models

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Repository is the on-disk model store: <dir>/<name>/<version>/{model.onnx,manifest.json}
// with the active version per name in <dir>/<name>/active. Every write goes to a
// temporary entry whose name starts with '.', is synced, and is renamed into place, so a
// crash at any instant leaves the repository readable and the previous active version
// in force; OpenRepository clears what a crash left.
//
// One Repository serialises its own changes. Several processes may share a folder
// (edged and the edged model command): their installs and removals are safe together,
// and no process clears another's temporary entries; two processes activating the same
// model at once may lose an entry of the activation history, never the active version.
type Repository struct {
	dir string
	// mu orders the steps that look at the repository and then change it (is this
	// version installed, is it active), so that they act on what they looked at.
	mu sync.Mutex
	// auditMu keeps audit lines whole.
	auditMu sync.Mutex
}

// Files inside a version folder and a model folder, and the audit log at the root.
const (
	ModelFile    = "model.onnx"
	ManifestFile = "manifest.json"
	// InstalledFile holds when the version was installed (RFC 3339, UTC): folder
	// times change when people copy or back up a repository, this does not.
	InstalledFile = "installed"
	ActiveFile    = "active"
	AuditFile     = "audit.log"
)

// historyLen bounds the activation history kept in the pointer file; rollback needs
// one entry, the rest is for people reading it.
const historyLen = 16

// Prefixes of temporary entries. They start with '.' so that listings skip them.
const (
	tmpInstall = ".install-"
	tmpRemove  = ".remove-"
	tmpActive  = ".active"
)

// ErrNotFound is returned when a model or version is not in the repository.
var ErrNotFound = errors.New("not in the model repository")

// Errors of InstallStream about the model bytes offered.
var (
	ErrTruncated    = errors.New("truncated")
	ErrTooLarge     = errors.New("too large")
	ErrHashMismatch = errors.New("sha256 mismatch")
)

// ErrVersionExists is returned by Install for a version already installed with other
// content: a version names one build forever, so that every result's model.version and
// sha256 keep meaning the same thing.
var ErrVersionExists = errors.New("model version already installed with different content")

// VersionInfo describes one installed version. SHA256 and KeyID are empty for a version
// whose manifest cannot be read (a damaged copy, to remove or push again).
type VersionInfo struct {
	Name      string    `json:"name"`
	Version   string    `json:"version"`
	SHA256    string    `json:"sha256"`
	KeyID     string    `json:"key_id,omitempty"`
	Size      int64     `json:"size"`
	Installed time.Time `json:"installed"`
	Active    bool      `json:"active"`
}

// OpenRepository opens (creating if needed) the repository at dir and clears what a
// crash left there: temporary install and removal folders and unfinished pointer files.
// While another process is installing into the same folder the clearing waits for a
// later open, so as not to pull a folder from under it.
func OpenRepository(dir string) (*Repository, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("model repository %s: %w", dir, err)
	}
	r := &Repository{dir: dir}
	if err := r.clearLeftovers(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Repository) clearLeftovers() error {
	unlock, ok, err := tryLockExclusive(r.dir)
	if err != nil {
		return err
	}
	if !ok {
		return nil
	}
	defer unlock()
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		return fmt.Errorf("model repository %s: %w", r.dir, err)
	}
	var errs []error
	clear := func(dir, name string, prefixes ...string) {
		for _, p := range prefixes {
			if strings.HasPrefix(name, p) {
				if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
					errs = append(errs, fmt.Errorf("model repository: clear crash leftover: %w", err))
				}
				return
			}
		}
	}
	for _, e := range ents {
		clear(r.dir, e.Name(), tmpInstall, tmpRemove)
		if !e.IsDir() || CheckName(e.Name()) != nil {
			continue
		}
		nameDir := filepath.Join(r.dir, e.Name())
		sub, err := os.ReadDir(nameDir)
		if err != nil {
			errs = append(errs, fmt.Errorf("model repository: %w", err))
			continue
		}
		for _, s := range sub {
			clear(nameDir, s.Name(), tmpInstall, tmpRemove, tmpActive)
		}
	}
	return errors.Join(errs...)
}

// Dir is the repository's root folder.
func (r *Repository) Dir() string { return r.dir }

// CheckName checks a model name or version is safe as a folder name: 1 to 128 letters,
// digits, '.', '_' and '-', starting with a letter or digit, with no "..".
func CheckName(s string) error {
	ok := len(s) > 0 && len(s) <= 128 && !strings.Contains(s, "..") && isAlnum(s[0])
	for i := 0; ok && i < len(s); i++ {
		c := s[i]
		ok = isAlnum(c) || c == '.' || c == '_' || c == '-'
	}
	if !ok {
		return fmt.Errorf("%q: use letters, digits, '.', '_' and '-' only (1 to 128, starting with a letter or digit, no \"..\")", s)
	}
	return nil
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func checkNames(name, version string) error {
	if err := CheckName(name); err != nil {
		return fmt.Errorf("model name %w", err)
	}
	if err := CheckName(version); err != nil {
		return fmt.Errorf("model version %w", err)
	}
	// The model folder sits beside the audit log, the version folder beside the
	// pointer file.
	if name == AuditFile {
		return fmt.Errorf("model name %q is reserved for the audit log", name)
	}
	if version == ActiveFile {
		return fmt.Errorf("model version %q is reserved for the active-version pointer", version)
	}
	return nil
}

func checkName(name string) error {
	return checkNames(name, "x")
}

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
	return r.InstallStream(m, bytes.NewReader(onnx))
}

// copyBuf sizes the reads of InstallStream: large enough that hashing, not system
// calls, sets the pace.
const copyBuf = 256 << 10

// InstallStream writes the model read from body as <name>/<version>, checking it
// against the manifest as it goes, without holding the model in memory. It reads at most
// m.Size+1 bytes. A body shorter than m.Size is refused with ErrTruncated, a longer
// one with ErrTooLarge, other bytes with ErrHashMismatch; nothing is left behind. It
// does not activate the version. The same build again is a no-op (body is not read);
// another build under an installed version is refused with ErrVersionExists.
func (r *Repository) InstallStream(m *Manifest, body io.Reader) error {
	if err := checkNames(m.Name, m.Version); err != nil {
		return err
	}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("install %s %s: %w", m.Name, m.Version, err)
	}
	r.mu.Lock()
	done, err := r.alreadyInstalled(m)
	r.mu.Unlock()
	if done || err != nil {
		return err
	}

	unlock, err := lockShared(r.dir)
	if err != nil {
		return err
	}
	defer unlock()
	tmp, err := os.MkdirTemp(r.dir, tmpInstall)
	if err != nil {
		return fmt.Errorf("install %s %s: %w", m.Name, m.Version, err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed into place
	if err := r.writeVersion(tmp, m, body); err != nil {
		return err
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	// Another install of this version may have landed while this one streamed.
	if done, err := r.alreadyInstalled(m); done || err != nil {
		return err
	}
	nameDir := filepath.Join(r.dir, m.Name)
	newName := false
	if _, err := os.Stat(nameDir); errors.Is(err, fs.ErrNotExist) {
		newName = true
	}
	if err := os.MkdirAll(nameDir, 0o755); err != nil {
		return fmt.Errorf("install %s %s: %w", m.Name, m.Version, err)
	}
	final := filepath.Join(nameDir, m.Version)
	// A damaged copy of this version (alreadyInstalled found it unsound) is moved aside
	// in one step, then deleted; a sound one never is.
	if _, err := os.Lstat(final); err == nil {
		aside, err := os.MkdirTemp(r.dir, tmpRemove)
		if err != nil {
			return fmt.Errorf("install %s %s: %w", m.Name, m.Version, err)
		}
		if err := os.Rename(final, filepath.Join(aside, "v")); err != nil {
			os.Remove(aside)
			return fmt.Errorf("install %s %s: move the damaged copy aside: %w", m.Name, m.Version, err)
		}
		defer os.RemoveAll(aside)
	}
	if err := os.Rename(tmp, final); err != nil {
		if newName {
			os.Remove(nameDir)
		}
		return fmt.Errorf("install %s %s: %w", m.Name, m.Version, err)
	}
	if err := syncDir(nameDir); err != nil {
		return err
	}
	if newName {
		return syncDir(r.dir)
	}
	return nil
}

// alreadyInstalled reports whether this build is installed and sound. It refuses
// another build under the version; a damaged copy counts as not installed.
func (r *Repository) alreadyInstalled(m *Manifest) (bool, error) {
	vdir := filepath.Join(r.dir, m.Name, m.Version)
	have, err := readManifest(vdir)
	if err != nil || have.Name != m.Name || have.Version != m.Version {
		return false, nil
	}
	if !strings.EqualFold(have.SHA256, m.SHA256) {
		return false, fmt.Errorf("install %s %s: %w (sha256 %s installed, %s offered); give the new build a new version", m.Name, m.Version, ErrVersionExists, have.SHA256, m.SHA256)
	}
	return verifyFile(have, filepath.Join(vdir, ModelFile)) == nil, nil
}

func (r *Repository) writeVersion(tmp string, m *Manifest, body io.Reader) error {
	path := filepath.Join(tmp, ModelFile)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("install %s %s: %w", m.Name, m.Version, err)
	}
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(f, h), io.LimitReader(body, m.Size+1), make([]byte, copyBuf))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("install %s %s: after %d bytes: %w", m.Name, m.Version, n, err)
	}
	if err := checkStream(m, n, h.Sum(nil)); err != nil {
		return fmt.Errorf("install %s %s: %w", m.Name, m.Version, err)
	}
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("install %s %s: encode manifest: %w", m.Name, m.Version, err)
	}
	if err := writeSynced(filepath.Join(tmp, ManifestFile), append(mb, '\n')); err != nil {
		return err
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	if err := writeSynced(filepath.Join(tmp, InstalledFile), []byte(now+"\n")); err != nil {
		return err
	}
	return syncDir(tmp)
}

// checkStream judges n bytes with the given sha256 against the manifest.
func checkStream(m *Manifest, n int64, sum []byte) error {
	switch {
	case n < m.Size:
		return fmt.Errorf("%w: %d of %d bytes", ErrTruncated, n, m.Size)
	case n > m.Size:
		return fmt.Errorf("%w: more than the %d bytes the manifest says", ErrTooLarge, m.Size)
	}
	if got := hex.EncodeToString(sum); !strings.EqualFold(got, m.SHA256) {
		return fmt.Errorf("%w: got %s, the manifest says %s", ErrHashMismatch, got, m.SHA256)
	}
	return nil
}

// verifyFile checks a model file against its manifest, reading it in pieces.
func verifyFile(m *Manifest, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, io.LimitReader(f, m.Size+1), make([]byte, copyBuf))
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return checkStream(m, n, h.Sum(nil))
}

func readManifest(vdir string) (*Manifest, error) {
	b, err := os.ReadFile(filepath.Join(vdir, ManifestFile))
	if err != nil {
		return nil, err
	}
	return ParseManifest(b)
}

// Activate makes version the active one for name. The version active until now becomes
// the first entry of the history that Previous reads.
func (r *Repository) Activate(name, version string) error {
	if err := checkNames(name, version); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := os.Stat(filepath.Join(r.dir, name, version, ManifestFile)); err != nil {
		return fmt.Errorf("activate %s %s: %w", name, version, notFound(err))
	}
	hist := []string{version}
	if old, err := r.pointer(name); err == nil {
		for _, v := range old {
			if v != version && len(hist) < historyLen {
				hist = append(hist, v)
			}
		}
	}
	unlock, err := lockShared(r.dir)
	if err != nil {
		return err
	}
	defer unlock()
	nameDir := filepath.Join(r.dir, name)
	f, err := os.CreateTemp(nameDir, tmpActive+"-*.tmp")
	if err != nil {
		return fmt.Errorf("activate %s %s: %w", name, version, err)
	}
	tmp := f.Name()
	_, err = f.WriteString(strings.Join(hist, "\n") + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(nameDir, ActiveFile))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("activate %s %s: %w", name, version, err)
	}
	return syncDir(nameDir)
}

// pointer reads the pointer file of name: the active version, then the versions active
// before it, newest first. Entries after the first that are not valid names are
// dropped: they only cost a rollback target, the active version stays readable.
func (r *Repository) pointer(name string) ([]string, error) {
	path := filepath.Join(r.dir, name, ActiveFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", name, notFound(err))
	}
	lines := strings.Split(string(b), "\n")
	first := strings.TrimSpace(lines[0])
	if err := checkNames(name, first); err != nil {
		return nil, fmt.Errorf("model %s: active file %s: %w", name, path, err)
	}
	out := []string{first}
	for _, l := range lines[1:] {
		l = strings.TrimSpace(l)
		if l != "" && checkNames(name, l) == nil && !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	return out, nil
}

// ActiveVersion reads the active version of name.
func (r *Repository) ActiveVersion(name string) (string, error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	p, err := r.pointer(name)
	if err != nil {
		return "", err
	}
	return p[0], nil
}

// Previous is the version active before the current one that is still installed: the
// target of a rollback. ErrNotFound when there is none.
func (r *Repository) Previous(name string) (string, error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	p, err := r.pointer(name)
	if err != nil {
		return "", err
	}
	for _, v := range p[1:] {
		if _, err := os.Stat(filepath.Join(r.dir, name, v, ManifestFile)); err == nil {
			return v, nil
		}
	}
	return "", fmt.Errorf("model %s: no earlier active version is still installed: %w", name, ErrNotFound)
}

// Remove deletes an installed version that is not the active one.
func (r *Repository) Remove(name, version string) error {
	if err := checkNames(name, version); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.remove(name, version)
}

func (r *Repository) remove(name, version string) error {
	if active, err := r.ActiveVersion(name); err == nil && active == version {
		return fmt.Errorf("remove %s %s: it is the active version; activate another first", name, version)
	}
	vdir := filepath.Join(r.dir, name, version)
	if fi, err := os.Lstat(vdir); err != nil || !fi.IsDir() {
		if err == nil {
			err = fs.ErrNotExist
		}
		return fmt.Errorf("remove %s %s: %w", name, version, notFound(err))
	}
	unlock, err := lockShared(r.dir)
	if err != nil {
		return err
	}
	defer unlock()
	// One rename takes the version out of sight, so that a crash never leaves it half
	// deleted and still listed.
	aside, err := os.MkdirTemp(r.dir, tmpRemove)
	if err != nil {
		return fmt.Errorf("remove %s %s: %w", name, version, err)
	}
	if err := os.Rename(vdir, filepath.Join(aside, "v")); err != nil {
		os.Remove(aside)
		return fmt.Errorf("remove %s %s: %w", name, version, err)
	}
	if err := syncDir(filepath.Join(r.dir, name)); err != nil {
		return err
	}
	if err := os.RemoveAll(aside); err != nil {
		return fmt.Errorf("remove %s %s: %w", name, version, err)
	}
	return nil
}

// Versions lists the installed versions of name, newest install first.
func (r *Repository) Versions(name string) ([]VersionInfo, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	nameDir := filepath.Join(r.dir, name)
	ents, err := os.ReadDir(nameDir)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", name, notFound(err))
	}
	active, _ := r.ActiveVersion(name)
	var out []VersionInfo
	for _, e := range ents {
		v := e.Name()
		if !e.IsDir() || checkNames(name, v) != nil {
			continue
		}
		vdir := filepath.Join(nameDir, v)
		info := VersionInfo{Name: name, Version: v, Active: v == active, Installed: installedAt(vdir)}
		if m, err := readManifest(vdir); err == nil {
			info.SHA256, info.KeyID, info.Size = m.SHA256, m.KeyID, m.Size
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b VersionInfo) int {
		if c := b.Installed.Compare(a.Installed); c != 0 {
			return c
		}
		return strings.Compare(b.Version, a.Version)
	})
	return out, nil
}

// installedAt reads when a version was installed; for versions installed before the
// time was recorded, the manifest's file time stands in.
func installedAt(vdir string) time.Time {
	if b, err := os.ReadFile(filepath.Join(vdir, InstalledFile)); err == nil {
		if t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b))); err == nil {
			return t
		}
	}
	for _, p := range []string{filepath.Join(vdir, ManifestFile), vdir} {
		if fi, err := os.Stat(p); err == nil {
			return fi.ModTime().UTC()
		}
	}
	return time.Time{}
}

// Names lists the models in the repository, sorted.
func (r *Repository) Names() ([]string, error) {
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		return nil, fmt.Errorf("model repository %s: %w", r.dir, err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && checkName(e.Name()) == nil {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// Prune removes the installed versions of name beyond the newest keep, but never the
// active version nor Previous, so that a rollback always has its target. It returns the
// versions it removed. A version installed and not yet activated counts like any other:
// whoever installs, checks and then activates a version runs its prunes in step with
// that (the swap manager holds its lock across all three), or may find it gone.
func (r *Repository) Prune(name string, keep int) ([]string, error) {
	if keep < 0 {
		return nil, fmt.Errorf("prune %s: keep %d is negative", name, keep)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	vs, err := r.Versions(name)
	if err != nil {
		return nil, err
	}
	active, _ := r.ActiveVersion(name)
	prev, _ := r.Previous(name)
	var removed []string
	var errs []error
	for _, v := range vs[min(keep, len(vs)):] {
		if v.Version == active || v.Version == prev {
			continue
		}
		if err := r.remove(name, v.Version); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, v.Version)
	}
	return removed, errors.Join(errs...)
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
	// Between reading the pointer and the version, another process may activate a
	// newer one and prune this one: read the pointer again rather than fail.
	for range 3 {
		m, onnx, err := r.Load(name, v)
		if !errors.Is(err, ErrNotFound) {
			return m, onnx, err
		}
		now, aerr := r.ActiveVersion(name)
		if aerr != nil || now == v {
			return nil, nil, err
		}
		v = now
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
