package spool

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for the zero values of Options, and limits.
const (
	DefaultMaxBytes     = 256 << 20
	DefaultSegmentBytes = 8 << 20
	// MaxSegmentBytes keeps every record offset within the 32 bits the index uses.
	MaxSegmentBytes = 1 << 30
	// MaxRecordBytes is the largest payload Append takes.
	MaxRecordBytes = maxPayload
)

// ErrClosed is returned by Append and Ack after Close.
var ErrClosed = errors.New("spool closed")

// Spool is an on-disk, bounded, acknowledged log of records. Its methods are safe for
// concurrent use: typically one goroutine appends while another sends (Next, Ack,
// Rewind).
type Spool struct {
	o         Options
	log       *slog.Logger
	ready     chan struct{}
	collector prometheus.Collector

	// flusher (FsyncInterval > 0)
	kick      chan struct{}
	stop      chan struct{}
	flushDone chan struct{}

	mu     sync.Mutex
	closed bool
	segs   []*segment // oldest first; IDs rise across and within segments
	active *segment   // the segment being written, segs[len-1]; nil until the next Append
	bytes  int64      // sum of segment sizes
	nextID uint64
	// wm is the acked watermark: every record below it is acked (or dropped). It is the
	// ID of the oldest unacked record, or nextID when there is none.
	wm uint64
	// cursor is the lowest ID Next may hand out next.
	cursor uint64
	// handed is the highest ID handed out since Open.
	handed uint64
	// acked holds acked IDs above wm; it is as small as the sender's in-flight window.
	acked   map[uint64]struct{}
	unacked int

	// ckptWM is the watermark last written to the checkpoint; atomic because the
	// flusher writes the checkpoint outside mu.
	ckptWM    atomic.Uint64
	ckptDirty bool // wm moved since (FsyncInterval > 0)
	dirDirty  bool // a segment was created since the folder was synced

	// One cached read handle, for the segment the sender is reading.
	rseg *segment
	rf   *os.File

	oldestID uint64 // cache for Stats.Oldest
	oldestAt time.Time

	wbuf []byte

	dropped, corrupt, appended, ackedTotal uint64
	// droppedDisk is the part of dropped that made room on a full disk (reason
	// "disk_full"); the rest made room within MaxBytes (reason "full").
	droppedDisk uint64
}

// segment is one segment file and the index of its records.
type segment struct {
	path    string
	name    uint64 // the ID in its file name
	base    uint64 // ID of its first indexed record
	entries []entry
	size    int64
	f       *os.File // open for writing while this is the active segment
	dirty   bool     // written since the last fsync
}

func (g *segment) id(i int) uint64 { return g.base + uint64(g.entries[i].d) }

func (g *segment) lastID() uint64 {
	if len(g.entries) == 0 {
		return 0
	}
	return g.id(len(g.entries) - 1)
}

// Open opens the spool in o.Dir, creating the folder if missing, and recovers what is
// there: see the package comment. It starts the flusher when FsyncInterval > 0; Close
// stops it.
func Open(o Options) (*Spool, error) {
	if err := o.normalize(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("open spool: %w", err)
	}
	s := &Spool{
		o:      o,
		log:    o.Log,
		ready:  make(chan struct{}, 1),
		acked:  make(map[uint64]struct{}),
		nextID: 1,
	}
	if err := s.recover(); err != nil {
		s.closeFiles()
		return nil, err
	}
	if o.Registerer != nil {
		s.collector = newCollector(s)
		if err := o.Registerer.Register(s.collector); err != nil {
			s.closeFiles()
			return nil, fmt.Errorf("open spool %s: register metrics: %w", o.Dir, err)
		}
	}
	if o.FsyncInterval > 0 {
		s.kick = make(chan struct{}, 1)
		s.stop = make(chan struct{})
		s.flushDone = make(chan struct{})
		go s.flushLoop()
	}
	if s.unacked > 0 {
		s.signal()
	}
	return s, nil
}

func (o *Options) normalize() error {
	if o.Dir == "" {
		return errors.New("open spool: no folder (Options.Dir)")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.MaxBytes < 0 {
		return fmt.Errorf("open spool %s: max bytes %d is negative", o.Dir, o.MaxBytes)
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.SegmentBytes < 0 || o.SegmentBytes > MaxSegmentBytes {
		return fmt.Errorf("open spool %s: segment bytes %d is out of range 1..%d", o.Dir, o.SegmentBytes, MaxSegmentBytes)
	}
	if o.SegmentBytes == 0 {
		// Dropping a segment when full should cost a small part of the spool.
		o.SegmentBytes = min(DefaultSegmentBytes, max(o.MaxBytes/8, 1))
	}
	if o.SegmentBytes > o.MaxBytes {
		return fmt.Errorf("open spool %s: segment bytes %d exceed max bytes %d", o.Dir, o.SegmentBytes, o.MaxBytes)
	}
	if o.FsyncInterval < 0 {
		return fmt.Errorf("open spool %s: fsync interval %s is negative", o.Dir, o.FsyncInterval)
	}
	return nil
}

// Ready is signalled (capacity 1, never closed) after Append and Rewind, and on Open
// when records are waiting: the sender's cue to call Next until it reports none.
func (s *Spool) Ready() <-chan struct{} { return s.ready }

func (s *Spool) signal() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Append writes data as the next record. With FsyncInterval 0 it is on stable storage
// when Append returns; otherwise within FsyncInterval. When the spool would grow past
// MaxBytes the oldest segments are dropped first (their unacked records counted as
// dropped, reason "full"). When the disk itself is full (ENOSPC, EDQUOT) the write is
// cut off and retried after dropping the oldest segments one at a time (reason
// "disk_full"), never the segment the record was being written to; when only that one
// is left, Append fails with an error naming the folder and "disk full". An error means
// the record is not in the spool.
func (s *Spool) Append(data []byte) error {
	frame := int64(headerSize + len(data))
	if len(data) > maxPayload {
		return fmt.Errorf("append to spool %s: record of %d bytes exceeds the limit of %d bytes", s.o.Dir, len(data), maxPayload)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("append to spool %s: %w", s.o.Dir, ErrClosed)
	}
	if frame > s.o.MaxBytes {
		return fmt.Errorf("append to spool %s: record of %d bytes (%d on disk) exceeds the spool's max bytes %d", s.o.Dir, len(data), frame, s.o.MaxBytes)
	}
	if s.active != nil && s.active.size > 0 && s.active.size+frame > s.o.SegmentBytes {
		s.seal()
	}
	for s.bytes+frame > s.o.MaxBytes && len(s.segs) > 0 && s.segs[0] != s.active {
		path := s.segs[0].path
		lost, size := s.dropOldest()
		s.log.Warn("spool: full; dropped the oldest segment", "file", path, "records", lost, "bytes", size, "max_bytes", s.o.MaxBytes)
	}
	if s.bytes+frame > s.o.MaxBytes {
		// Cannot happen while SegmentBytes <= MaxBytes (Open checks): the active
		// segment alone then always leaves room or has been sealed above.
		return fmt.Errorf("append to spool %s: no room for %d bytes within max bytes %d", s.o.Dir, frame, s.o.MaxBytes)
	}
	id := s.nextID
	s.wbuf = appendFrame(s.wbuf[:0], id, time.Now().UnixNano(), data)
	g, err := s.writeFrame()
	if err != nil && diskFull(err) {
		g, err = s.makeRoom(g, err)
	}
	if cap(s.wbuf) > 1<<20 {
		s.wbuf = nil
	}
	if err != nil {
		return err
	}
	g.entries = append(g.entries, entry{d: uint32(id - g.base), off: uint32(g.size)})
	g.size += frame
	s.bytes += frame
	s.nextID++
	s.unacked++
	s.appended++
	s.signal()
	return nil
}

// writeFrame writes s.wbuf at the end of the active segment, starting one if there is
// none. It returns the segment written to, or nil when none could be started.
func (s *Spool) writeFrame() (*segment, error) {
	created := false
	if s.active == nil {
		if err := s.create(); err != nil {
			return nil, err
		}
		created = true
	}
	g := s.active
	return g, s.write(g, created)
}

// makeRoom handles a write that failed because the disk is full: write has cut it off
// (and sealed or removed the segment); makeRoom drops the oldest segment and writes
// again, one segment at a time, until the write succeeds or only the segment the record
// was first being written to is left. g and err are the failed write's.
func (s *Spool) makeRoom(g *segment, err error) (*segment, error) {
	// keep is the segment the record was being written to, if it holds records: it
	// has the newest ones and stays. A segment started for the retry holds none (write
	// removes it when it fails), so it never needs keeping.
	var keep *segment
	if g != nil && len(g.entries) > 0 {
		keep = g
	}
	cause := err
	lost, segs := 0, 0
	var freed int64
	defer func() {
		if segs > 0 {
			s.log.Warn("spool: disk full; dropped the oldest segments to make room",
				"dir", s.o.Dir, "records", lost, "segments", segs, "bytes", freed, "err", cause)
		}
	}()
	for diskFull(err) {
		if len(s.segs) == 0 || s.segs[0] == keep {
			return nil, fmt.Errorf("append to spool %s: disk full, and no older segment left to drop: %w", s.o.Dir, err)
		}
		n, size := s.dropOldest()
		s.droppedDisk += uint64(n)
		lost += n
		segs++
		freed += size
		g, err = s.writeFrame()
		if err == nil {
			return g, nil
		}
	}
	return nil, err
}

// diskFull reports whether err means the file system (or the user's quota) is out of
// space.
func diskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// create starts a new active segment named by the next ID.
func (s *Spool) create() error {
	path := filepath.Join(s.o.Dir, segName(s.nextID))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return fmt.Errorf("append to spool: create segment: %w", err)
	}
	g := &segment{path: path, name: s.nextID, base: s.nextID, f: f}
	s.segs = append(s.segs, g)
	s.active = g
	s.dirDirty = true
	return nil
}

// write writes s.wbuf at the end of the active segment and syncs per the policy. On
// failure it undoes what it can and seals the segment, so the next Append starts a
// fresh file rather than writing after a torn record.
func (s *Spool) write(g *segment, created bool) error {
	_, err := g.f.Write(s.wbuf)
	if err == nil && s.o.FsyncInterval == 0 {
		err = g.f.Sync()
		if err == nil && created {
			err = s.syncDir()
			if err == nil {
				s.dirDirty = false
			}
		}
	}
	if err == nil {
		if s.o.FsyncInterval > 0 {
			g.dirty = true
			s.kickFlusher()
		}
		return nil
	}
	err = fmt.Errorf("append to %s: %w", g.path, err)
	if terr := g.f.Truncate(g.size); terr != nil {
		s.log.Error("spool: cannot cut off a failed append; recovery will skip it", "file", g.path, "err", terr)
	}
	if len(g.entries) == 0 {
		_ = g.f.Close()
		g.f = nil
		s.active = nil
		s.segs = s.segs[:len(s.segs)-1]
		if rerr := os.Remove(g.path); rerr != nil {
			s.log.Error("spool: cannot remove empty segment", "file", g.path, "err", rerr)
		}
		return err
	}
	s.seal()
	return err
}

// seal ends the active segment: sync and close. With a flusher it syncs whatever the
// dirty flag says: the flusher may have cleared it and not synced yet, and its sync
// fails on the closed file.
func (s *Spool) seal() {
	g := s.active
	if g == nil {
		return
	}
	s.active = nil
	if g.dirty || s.o.FsyncInterval > 0 {
		if err := g.f.Sync(); err != nil {
			s.log.Error("spool: fsync segment", "file", g.path, "err", err)
		}
		g.dirty = false
	}
	if err := g.f.Close(); err != nil {
		s.log.Error("spool: close segment", "file", g.path, "err", err)
	}
	g.f = nil
	if len(g.entries) == 0 {
		s.removeSeg(0, g)
	}
}

// dropOldest drops segs[0] to make room, counting its unacked records as dropped, and
// returns their number and the bytes freed; the caller logs why.
func (s *Spool) dropOldest() (lost int, size int64) {
	g := s.segs[0]
	for i := range g.entries {
		id := g.id(i)
		if id < s.wm {
			continue
		}
		if _, ok := s.acked[id]; ok {
			delete(s.acked, id)
			continue
		}
		lost++
	}
	size = g.size
	s.removeSeg(0, g)
	s.unacked -= lost
	s.dropped += uint64(lost)
	if last := g.lastID(); last >= s.wm {
		s.wm = last + 1
		s.normalizeWM()
		s.cursor = max(s.cursor, s.wm)
		s.wmChanged()
	}
	return lost, size
}

// removeSeg deletes segment i (which is g) from the index and from disk.
func (s *Spool) removeSeg(i int, g *segment) {
	if g.f != nil {
		_ = g.f.Close()
		g.f = nil
	}
	if s.active == g {
		s.active = nil
	}
	if s.rseg == g {
		_ = s.rf.Close()
		s.rseg, s.rf = nil, nil
	}
	s.segs = append(s.segs[:i], s.segs[i+1:]...)
	s.bytes -= g.size
	if err := os.Remove(g.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Error("spool: remove segment", "file", g.path, "err", err)
	}
}

// locate returns the position of the first record with an ID at or above id;
// si == len(s.segs) when there is none.
func (s *Spool) locate(id uint64) (si, ei int) {
	si = sort.Search(len(s.segs), func(i int) bool { return s.segs[i].base > id }) - 1
	if si < 0 {
		return 0, 0
	}
	g := s.segs[si]
	ei = sort.Search(len(g.entries), func(i int) bool { return g.id(i) >= id })
	if ei == len(g.entries) {
		return si + 1, 0
	}
	return si, ei
}

// has reports whether a record with this ID is in the spool.
func (s *Spool) has(id uint64) bool {
	si, ei := s.locate(id)
	return si < len(s.segs) && ei < len(s.segs[si].entries) && s.segs[si].id(ei) == id
}

// normalizeWM moves wm onto the oldest record at or above it that is not acked.
func (s *Spool) normalizeWM() {
	si, ei := s.locate(s.wm)
	for si < len(s.segs) {
		g := s.segs[si]
		if ei >= len(g.entries) {
			si, ei = si+1, 0
			continue
		}
		id := g.id(ei)
		if _, ok := s.acked[id]; !ok {
			s.wm = id
			return
		}
		delete(s.acked, id)
		ei++
	}
	s.wm = s.nextID
}

// removeAcked deletes the oldest segments while every record in them is acked.
func (s *Spool) removeAcked() {
	for len(s.segs) > 0 && s.segs[0] != s.active && s.segs[0].lastID() < s.wm {
		s.removeSeg(0, s.segs[0])
	}
}

// wmChanged persists the watermark per the fsync policy.
func (s *Spool) wmChanged() {
	if s.o.FsyncInterval > 0 {
		s.ckptDirty = true
		s.kickFlusher()
		return
	}
	if err := s.writeCheckpoint(s.wm); err != nil {
		s.log.Error("spool: write checkpoint; acked records may be sent again after a restart", "err", err)
	}
}

// Next returns the next record not handed out yet, in append order, read from disk;
// false when there is none. The record's Data is the caller's. A record found damaged
// now (the disk changed since Open) is skipped, logged and counted as corrupt.
func (s *Spool) Next() (Record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Record{}, false
	}
	skipped := false
	defer func() {
		if skipped {
			s.removeAcked()
		}
	}()
	si, ei := s.locate(s.cursor)
	for si < len(s.segs) {
		g := s.segs[si]
		if ei >= len(g.entries) {
			si, ei = si+1, 0
			continue
		}
		id := g.id(ei)
		if _, ok := s.acked[id]; ok {
			ei++
			continue
		}
		rec, err := s.read(g, ei)
		if err != nil {
			s.log.Error("spool: unreadable record skipped", "file", g.path, "offset", g.entries[ei].off, "id", id, "err", err)
			s.corrupt++
			s.forget(id)
			s.cursor = max(id+1, s.wm)
			skipped = true
			// forget may have moved the watermark over acked records, which leave
			// the acked set then: find the place again.
			si, ei = s.locate(s.cursor)
			continue
		}
		s.cursor = id + 1
		s.handed = max(s.handed, id)
		return rec, true
	}
	return Record{}, false
}

// forget drops an unacked record that cannot be read, as if acked.
func (s *Spool) forget(id uint64) {
	s.unacked--
	s.acked[id] = struct{}{}
	if id == s.wm {
		s.normalizeWM()
		s.wmChanged()
	}
}

// readSizeGuess is how much Next reads in one go: a typical record and its header.
const readSizeGuess = 64 << 10

// read reads and checks record ei of g.
func (s *Spool) read(g *segment, ei int) (Record, error) {
	off := int64(g.entries[ei].off)
	end := g.size
	if ei+1 < len(g.entries) {
		end = int64(g.entries[ei+1].off)
	}
	span := end - off
	if span < headerSize {
		return Record{}, fmt.Errorf("record at offset %d overruns the segment", off)
	}
	buf := make([]byte, min(span, readSizeGuess))
	if err := s.readAt(g, buf, off); err != nil {
		return Record{}, err
	}
	h, ok := parseHeader(buf)
	if !ok || int64(headerSize+h.n) > span {
		return Record{}, fmt.Errorf("no record header at offset %d", off)
	}
	if headerSize+h.n > len(buf) {
		whole := make([]byte, headerSize+h.n)
		copy(whole, buf)
		if err := s.readAt(g, whole[len(buf):], off+int64(len(buf))); err != nil {
			return Record{}, err
		}
		buf = whole
	}
	buf = buf[:headerSize+h.n]
	if frameCRC(buf) != h.crc {
		return Record{}, fmt.Errorf("checksum mismatch at offset %d", off)
	}
	if h.id != g.id(ei) {
		return Record{}, fmt.Errorf("record at offset %d has id %d, want %d", off, h.id, g.id(ei))
	}
	return Record{ID: h.id, Data: buf[headerSize:len(buf):len(buf)], Appended: time.Unix(0, h.ts)}, nil
}

// readAt fills p from g at off, through the active segment's handle or the cached
// read handle.
func (s *Spool) readAt(g *segment, p []byte, off int64) error {
	f := g.f
	if f == nil {
		if s.rseg != g {
			if s.rf != nil {
				_ = s.rf.Close()
				s.rseg, s.rf = nil, nil
			}
			rf, err := os.Open(g.path)
			if err != nil {
				return err
			}
			s.rseg, s.rf = g, rf
		}
		f = s.rf
	}
	n, err := f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil {
		err = errors.New("short read")
	}
	return fmt.Errorf("read %s: %w", g.path, err)
}

// Ack marks the record with this ID delivered. Acking an ID below the watermark (acked
// before, or dropped) is a no-op; an ID not handed out yet is an error.
func (s *Spool) Ack(id uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("ack %d: %w", id, ErrClosed)
	}
	if id < s.wm {
		return nil
	}
	if _, ok := s.acked[id]; ok {
		return nil
	}
	if id > s.handed {
		return fmt.Errorf("ack %d: not handed out by spool %s (last handed out: %d)", id, s.o.Dir, s.handed)
	}
	if !s.has(id) {
		return fmt.Errorf("ack %d: no such record in spool %s", id, s.o.Dir)
	}
	s.acked[id] = struct{}{}
	s.unacked--
	s.ackedTotal++
	if id == s.wm {
		s.normalizeWM()
		s.removeAcked()
		s.wmChanged()
	}
	return nil
}

// Rewind puts every handed-out, unacked record back in line: Next starts again from
// the oldest unacked record, skipping those acked since.
func (s *Spool) Rewind() {
	s.mu.Lock()
	if !s.closed {
		s.cursor = s.wm
	}
	s.mu.Unlock()
	s.signal()
}

// Len is the number of records not yet acked.
func (s *Spool) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unacked
}

// Stats describe the spool now.
func (s *Spool) Stats() Stats {
	st, _ := s.snapshot()
	return st
}

// snapshot returns Stats and, from the same moment, how many of the dropped records
// made room on a full disk.
func (s *Spool) snapshot() (Stats, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{
		Records:  s.unacked,
		Bytes:    s.bytes,
		Oldest:   s.oldest(),
		Dropped:  s.dropped,
		Corrupt:  s.corrupt,
		Appended: s.appended,
		Acked:    s.ackedTotal,
	}, s.droppedDisk
}

// oldest returns the append time of the oldest unacked record, reading its header
// when the watermark has moved since the last call.
func (s *Spool) oldest() time.Time {
	if s.unacked == 0 {
		return time.Time{}
	}
	if s.oldestID == s.wm || s.closed {
		return s.oldestAt
	}
	si, ei := s.locate(s.wm)
	if si >= len(s.segs) {
		return time.Time{}
	}
	g := s.segs[si]
	var b [headerSize]byte
	if err := s.readAt(g, b[:], int64(g.entries[ei].off)); err != nil {
		return time.Time{}
	}
	h, ok := parseHeader(b[:])
	if !ok {
		return time.Time{}
	}
	s.oldestID, s.oldestAt = s.wm, time.Unix(0, h.ts)
	return s.oldestAt
}

// Close syncs what is unsynced, writes the checkpoint and stops the flusher. It is
// safe to call twice and on nil.
func (s *Spool) Close() error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()

	if s.stop != nil {
		close(s.stop)
		<-s.flushDone
	}
	if s.collector != nil {
		s.o.Registerer.Unregister(s.collector)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	if g := s.active; g != nil {
		if g.dirty {
			if err := g.f.Sync(); err != nil {
				errs = append(errs, fmt.Errorf("close spool: fsync %s: %w", g.path, err))
			}
			g.dirty = false
		}
	}
	if s.dirDirty {
		if err := s.syncDir(); err != nil {
			errs = append(errs, fmt.Errorf("close spool: %w", err))
		}
		s.dirDirty = false
	}
	if err := s.writeCheckpoint(s.wm); err != nil {
		errs = append(errs, fmt.Errorf("close spool: %w", err))
	}
	if err := s.closeFiles(); err != nil {
		errs = append(errs, fmt.Errorf("close spool: %w", err))
	}
	return errors.Join(errs...)
}

func (s *Spool) closeFiles() error {
	var errs []error
	for _, g := range s.segs {
		if g.f != nil {
			if err := g.f.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close %s: %w", g.path, err))
			}
			g.f = nil
		}
	}
	s.active = nil
	if s.rf != nil {
		_ = s.rf.Close()
		s.rseg, s.rf = nil, nil
	}
	return errors.Join(errs...)
}

func (s *Spool) kickFlusher() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// flushLoop syncs, FsyncInterval after the first append or ack that finds everything
// synced, whatever was written since. One timer, no ticking while idle.
func (s *Spool) flushLoop() {
	defer close(s.flushDone)
	t := time.NewTimer(s.o.FsyncInterval)
	t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-s.kick:
		}
		t.Reset(s.o.FsyncInterval)
		select {
		case <-s.stop:
			t.Stop()
			return
		case <-t.C:
		}
		s.flush()
	}
}

// flush syncs outside the lock, so Append does not wait on the disk. A segment sealed
// meanwhile was synced by seal; its closed handle is then expected.
func (s *Spool) flush() {
	s.mu.Lock()
	var f *os.File
	var path string
	if g := s.active; g != nil && g.dirty {
		f, path = g.f, g.path
		g.dirty = false
	}
	dir := s.dirDirty
	s.dirDirty = false
	ckpt := s.ckptDirty
	s.ckptDirty = false
	wm := s.wm
	s.mu.Unlock()

	if f != nil {
		if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
			s.log.Error("spool: fsync segment", "file", path, "err", err)
		}
	}
	if dir {
		if err := s.syncDir(); err != nil {
			s.log.Error("spool: fsync folder", "err", err)
		}
	}
	if ckpt {
		if err := s.writeCheckpoint(wm); err != nil {
			s.log.Error("spool: write checkpoint; acked records may be sent again after a restart", "err", err)
			s.mu.Lock()
			s.ckptDirty = true
			s.mu.Unlock()
		}
	}
}

func (s *Spool) syncDir() error {
	d, err := os.Open(s.o.Dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	// Some file systems cannot sync a folder; there is nothing more to do there.
	if err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("fsync folder %s: %w", s.o.Dir, err)
	}
	return nil
}

// writeCheckpoint persists wm unless it is already on disk. Only one goroutine writes
// at a time: Ack (FsyncInterval 0, under the lock), the flusher, or Close after the
// flusher stopped.
func (s *Spool) writeCheckpoint(wm uint64) error {
	if wm == s.ckptWM.Load() {
		return nil
	}
	final := filepath.Join(s.o.Dir, checkpointName)
	b := encodeCheckpoint(wm)
	err := s.replaceCheckpoint(final, b)
	if err != nil && diskFull(err) {
		// No room for a new file (the spool may have filled the disk): overwrite the
		// old checkpoint in place, which needs no new space. A torn overwrite fails
		// its checksum on Open, which then hands out everything again, as with no
		// checkpoint: at least once still holds.
		if ierr := overwriteCheckpoint(final, b); ierr == nil {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("write checkpoint %s: %w", final, err)
	}
	s.ckptWM.Store(wm)
	return nil
}

// replaceCheckpoint writes b to checkpoint.tmp, syncs it, renames it over final and
// syncs the folder. When the disk is full it removes what it wrote of the temp file.
func (s *Spool) replaceCheckpoint(final string, b []byte) error {
	tmp := filepath.Join(s.o.Dir, checkpointTemp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if diskFull(err) {
			_ = os.Remove(tmp)
		}
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	return s.syncDir()
}

// overwriteCheckpoint writes b over an existing checkpoint file in place.
func overwriteCheckpoint(final string, b []byte) error {
	f, err := os.OpenFile(final, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(b, 0)
	if err == nil {
		err = f.Truncate(int64(len(b)))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
