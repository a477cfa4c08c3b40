package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// recover rebuilds the index from the folder: the checkpoint first, then every segment
// in name order. It only cuts off a file's damaged tail, removes files with nothing
// left to send and quarantines files with nothing intact; damage in the middle of a
// segment stays on disk (skipped again, and reported again, on the next Open, until the
// segment is acked or dropped).
func (s *Spool) recover() error {
	dir := s.o.Dir
	wm := s.readCheckpoint()
	s.ckptWM.Store(wm)
	if err := os.Remove(filepath.Join(dir, checkpointTemp)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("spool: remove stale checkpoint temp file", "err", err)
	}

	des, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("open spool: %w", err)
	}
	type named struct {
		id   uint64
		path string
	}
	var files []named
	for _, de := range des {
		if id, ok := parseSegName(de.Name()); ok && de.Type().IsRegular() {
			files = append(files, named{id, filepath.Join(dir, de.Name())})
		}
	}
	slices.SortFunc(files, func(a, b named) int {
		switch {
		case a.id < b.id:
			return -1
		case a.id > b.id:
			return 1
		}
		return 0
	})

	var last, maxName uint64
	changed := false
	for _, file := range files {
		g, lastID, ch, err := s.recoverSegment(file.path, last, wm)
		changed = changed || ch
		if err != nil {
			return err
		}
		last = max(last, lastID)
		if g == nil {
			continue
		}
		g.name = file.id
		maxName = max(maxName, file.id)
		s.segs = append(s.segs, g)
		s.bytes += g.size
		s.unacked += len(g.entries)
	}
	if changed {
		if err := s.syncDir(); err != nil {
			return fmt.Errorf("open spool: %w", err)
		}
	}
	s.nextID = max(last+1, wm, maxName+1, 1)
	s.wm = s.nextID
	if len(s.segs) > 0 {
		s.wm = s.segs[0].id(0)
	}
	s.cursor = s.wm
	return nil
}

// recoverSegment scans one segment file and returns what is left of it to send (nil
// when nothing), the highest intact ID in it, and whether it changed the folder.
func (s *Spool) recoverSegment(path string, after, wm uint64) (g *segment, last uint64, changed bool, err error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, 0, false, fmt.Errorf("open spool: %w", err)
	}
	defer func() {
		if f != nil {
			_ = f.Close()
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, false, fmt.Errorf("open spool: %w", err)
	}
	size := fi.Size()
	if size == 0 {
		// A crash between creating a segment and writing to it.
		s.log.Info("spool: removed empty segment", "file", path)
		_ = f.Close()
		f = nil
		return nil, 0, true, s.remove(path)
	}
	res, err := scan(f, size, after)
	if err != nil {
		return nil, 0, false, fmt.Errorf("open spool: read %s: %w", path, err)
	}

	if len(res.entries) == 0 {
		_ = f.Close()
		f = nil
		s.corrupt++
		if len(res.damaged) == 1 && res.damaged[0].off == 0 && res.damaged[0].torn {
			s.log.Warn("spool: removed segment holding only a torn record", "file", path, "offset", 0, "bytes", size)
			return nil, 0, true, s.remove(path)
		}
		q, err := quarantine(path)
		if err != nil {
			return nil, 0, true, fmt.Errorf("open spool: quarantine %s: %w", path, err)
		}
		s.log.Warn("spool: segment holds no intact record; quarantined", "file", path, "renamed", q, "bytes", size)
		return nil, 0, true, nil
	}

	for _, d := range res.damaged {
		s.corrupt++
		switch {
		case d.torn:
			s.log.Warn("spool: torn record at the end cut off", "file", path, "offset", d.off, "bytes", d.n)
		case d.tail:
			s.log.Warn("spool: damaged bytes at the end cut off", "file", path, "offset", d.off, "bytes", d.n)
		default:
			s.log.Warn("spool: damaged bytes skipped", "file", path, "offset", d.off, "bytes", d.n)
		}
	}
	if res.end < size {
		if err := f.Truncate(res.end); err != nil {
			return nil, 0, false, fmt.Errorf("open spool: cut off damaged end of %s: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			return nil, 0, false, fmt.Errorf("open spool: fsync %s: %w", path, err)
		}
	}

	g = &segment{path: path, base: res.base, entries: res.entries, size: res.end}
	k := sort.Search(len(g.entries), func(i int) bool { return g.id(i) >= wm })
	if k == len(g.entries) {
		// Every record in it was acked before the checkpoint.
		_ = f.Close()
		f = nil
		return nil, res.last, true, s.remove(path)
	}
	if k > 0 {
		// Rebase so the acked prefix of the index can be freed.
		nb := g.id(k)
		rest := make([]entry, len(g.entries)-k)
		for i := range rest {
			rest[i] = entry{d: uint32(g.id(k+i) - nb), off: g.entries[k+i].off}
		}
		g.base, g.entries = nb, rest
	}
	return g, res.last, res.end < size, nil
}

func (s *Spool) remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("open spool: %w", err)
	}
	return nil
}

// quarantine renames a damaged file out of the way, keeping earlier quarantined ones.
func quarantine(path string) (string, error) {
	q := path + corruptSuffix
	for i := 1; ; i++ {
		if _, err := os.Lstat(q); err != nil {
			break
		}
		q = fmt.Sprintf("%s.%d%s", path, i, corruptSuffix)
	}
	return q, os.Rename(path, q)
}

// readCheckpoint returns the persisted watermark; 0 (hand out everything again) when
// it is missing or damaged.
func (s *Spool) readCheckpoint() uint64 {
	path := filepath.Join(s.o.Dir, checkpointName)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	var wm uint64
	if err == nil {
		wm, err = decodeCheckpoint(b)
	}
	if err != nil {
		s.corrupt++
		s.log.Warn("spool: checkpoint unreadable; acked records will be sent again", "file", path, "err", err)
		return 0
	}
	return wm
}

func parseSegName(name string) (uint64, bool) {
	digits, ok := strings.CutSuffix(name, segSuffix)
	if !ok || len(digits) != segNameDigits {
		return 0, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	id, err := strconv.ParseUint(digits, 10, 64)
	return id, err == nil
}
