package imagedir

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// stamp tells one version of a file from another under the same name: a camera that
// reuses a name writes a new file, with a new size or modification time.
type stamp struct {
	size  int64
	mtime int64 // UnixNano
}

func stampOf(fi fs.FileInfo) stamp { return stamp{fi.Size(), fi.ModTime().UnixNano()} }

// state is the record of files handed to the pipeline but not yet moved or deleted
// (and, with after: keep, of every file kept). It is an append-only log of lines
//
//	E <size> <mtime> <quoted name>   emitted: never emit this version again
//	D <quoted name>                  done: moved or deleted, or the emit was refused
//
// rewritten with only the live entries when it opens and when dead lines outnumber
// live ones. An E line is synced before the emit, so a crash after the emit cannot
// lead to a second inference; a lost D line only means the finish runs again.
type state struct {
	path    string
	f       *os.File
	entries map[string]stamp
	lines   int
}

// openState reads the log at path, keeps the entries whose file is still in dir, and
// compacts the log. A torn last line (a crash while appending) is skipped.
func openState(path, dir string) (*state, error) {
	s := &state{path: path, entries: map[string]stamp{}}
	f, err := os.Open(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("open state file %q: %w", path, err)
	default:
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 4096), 1<<20)
		for sc.Scan() {
			s.apply(sc.Text())
		}
		err := sc.Err()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("read state file %q: %w", path, err)
		}
	}
	for name := range s.entries {
		if _, err := os.Lstat(filepath.Join(dir, name)); errors.Is(err, fs.ErrNotExist) {
			delete(s.entries, name)
		}
	}
	if err := s.compact(); err != nil {
		return nil, err
	}
	return s, nil
}

// apply replays one log line; malformed lines are ignored, since the only writer is
// this driver and the only damage a crash can do is a torn last line.
func (s *state) apply(line string) {
	switch {
	case strings.HasPrefix(line, "E "):
		parts := strings.SplitN(line[2:], " ", 3)
		if len(parts) != 3 {
			return
		}
		size, err1 := strconv.ParseInt(parts[0], 10, 64)
		mtime, err2 := strconv.ParseInt(parts[1], 10, 64)
		name, err3 := strconv.Unquote(parts[2])
		if err1 != nil || err2 != nil || err3 != nil || !validName(name) {
			return
		}
		s.entries[name] = stamp{size, mtime}
	case strings.HasPrefix(line, "D "):
		if name, err := strconv.Unquote(line[2:]); err == nil {
			delete(s.entries, name)
		}
	}
}

func validName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00") && !strings.ContainsRune(name, filepath.Separator)
}

// compact rewrites the log with the live entries through a synced temporary file and an
// atomic rename, so a crash leaves the old log or the new one, never half of one.
func (s *state) compact() error {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
	tmp := s.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("write state file %q: %w", tmp, err)
	}
	w := bufio.NewWriter(f)
	for name, st := range s.entries {
		fmt.Fprintf(w, "E %d %d %s\n", st.size, st.mtime, strconv.Quote(name))
	}
	err = w.Flush()
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write state file %q: %w", s.path, err)
	}
	syncDir(filepath.Dir(s.path))
	s.lines = len(s.entries)
	s.f, err = os.OpenFile(s.path, os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("open state file %q: %w", s.path, err)
	}
	return nil
}

// emitted reports whether this version of the file was handed to the pipeline.
func (s *state) emitted(name string, st stamp) bool {
	got, ok := s.entries[name]
	return ok && got == st
}

// markEmitted records the file, synced, before it is emitted.
func (s *state) markEmitted(name string, st stamp) error {
	s.entries[name] = st
	return s.append(fmt.Sprintf("E %d %d %s\n", st.size, st.mtime, strconv.Quote(name)), true)
}

// markDone forgets the file: it was moved or deleted, or its emit was refused (sync
// then, or a crash would leave the file marked emitted and never inferred).
func (s *state) markDone(name string, sync bool) error {
	if _, ok := s.entries[name]; !ok {
		return nil
	}
	delete(s.entries, name)
	return s.append("D "+strconv.Quote(name)+"\n", sync)
}

func (s *state) append(line string, sync bool) error {
	if _, err := s.f.WriteString(line); err != nil {
		return fmt.Errorf("append to state file %q: %w", s.path, err)
	}
	if sync {
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("sync state file %q: %w", s.path, err)
		}
	}
	if s.lines++; s.lines > 2*len(s.entries)+1024 {
		return s.compact()
	}
	return nil
}

func (s *state) close() {
	if s != nil && s.f != nil {
		s.f.Close()
		s.f = nil
	}
}

// syncDir makes a rename in dir durable; file systems that cannot sync a directory
// are left to their own ordering.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
