package imagedir

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/imagedir/sniff"
)

// Quarantine reasons besides sniff's.
const (
	reasonTooLarge   = "too_large"
	reasonUnreadable = "unreadable"
)

var reasons = []string{sniff.ReasonEmpty, sniff.ReasonUnknown, sniff.ReasonUndecodable, reasonTooLarge, reasonUnreadable}

// Backoff after the folder vanished or the watch failed, and after a refused emit.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 5 * time.Second
	maxRetry   = time.Second
)

// Driver watches one folder.
//
// Exactly once: before a file's reading is emitted, the file's name, size and
// modification time go into the state file, synced; after the emit the file is moved
// or deleted and the entry dropped. A restart finds entries for files still in the
// folder and finishes them (move, delete) without emitting again. A crash between the
// sync and the emit therefore loses that one reading rather than inferring it twice;
// that is the side the line wants, since a second verdict on a part can fire the
// reject gate for the part behind it.
//
// Backpressure: a refused emit (Pressure.Accepted false: the ring was full under
// drop_newest, or the source is stopping) means the pipeline never took the frame, so
// the file is still the driver's: its entry is dropped and it is emitted again later,
// first in line. The pipeline counts each refused try as a frame dropped for a full
// ring, which is what happened to that try. A frame the pipeline took and dropped
// later (stale, evicted under drop_oldest or latest, shut down) was handed over and is
// the pipeline's to account for; its file counts as done. Sources that must infer
// every file use backpressure: block (the default), under which Emit waits for room.
// Between emits the driver keeps to Pressure.MaxRateHz; waiting files stay on disk, and
// only the file being emitted is in memory.
type Driver struct {
	spec drivers.Spec
	cfg  Config
}

var _ drivers.Driver = (*Driver)(nil)

// New builds an image-folder driver for a source; it touches nothing on disk.
func New(spec drivers.Spec, cfg *Config) (*Driver, error) {
	if spec.Name == "" {
		return nil, errors.New("imagedir: source name is empty")
	}
	if cfg == nil {
		return nil, fmt.Errorf("imagedir: source %q: nil config", spec.Name)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("imagedir: source %q: %w", spec.Name, err)
	}
	return &Driver{spec: spec, cfg: cfg.withDefaults()}, nil
}

// Run watches the folder until ctx ends, then returns nil. A folder missing at start is
// an error; one that vanishes later is reported through Health and watched again when
// it comes back.
func (d *Driver) Run(ctx context.Context, e drivers.Emitter) error {
	if fi, err := os.Stat(d.cfg.Dir); err != nil {
		return fmt.Errorf("imagedir: source %q: dir %q: %w", d.spec.Name, d.cfg.Dir, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("imagedir: source %q: dir %q is not a folder", d.spec.Name, d.cfg.Dir)
	}
	base := d.spec.Log
	if base == nil {
		base = slog.Default()
	}
	w := &watch{
		d:           d,
		e:           e,
		log:         base.With("source", d.spec.Name, "driver", "imagedir"),
		quarantined: d.quarantineCounter(base),
	}
	backoff := minBackoff
	for {
		err := w.session(ctx, func() { backoff = minBackoff })
		if ctx.Err() != nil {
			return nil
		}
		e.Health(false, err)
		w.log.Warn("image folder not watched", "dir", d.cfg.Dir, "err", err, "retry_in", backoff)
		t := time.NewTimer(jitter(backoff))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

func (d *Driver) quarantineCounter(log *slog.Logger) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edged_imagedir_quarantined_total",
		Help: "Files an image-folder source moved to quarantine, by reason.",
	}, []string{"source", "reason"})
	if reg := d.spec.Registerer; reg != nil {
		if err := reg.Register(c); err != nil {
			// Another imagedir source, or an earlier Run of this one, registered it.
			var are prometheus.AlreadyRegisteredError
			if ex, ok := existing(err, &are); ok {
				c = ex
			} else {
				log.Warn("imagedir metrics not registered", "source", d.spec.Name, "err", err)
			}
		}
	}
	for _, r := range reasons {
		c.WithLabelValues(d.spec.Name, r)
	}
	return c
}

func existing(err error, are *prometheus.AlreadyRegisteredError) (*prometheus.CounterVec, bool) {
	if !errors.As(err, are) {
		return nil, false
	}
	c, ok := are.ExistingCollector.(*prometheus.CounterVec)
	return c, ok
}

// watch is one Run's state.
type watch struct {
	d           *Driver
	e           drivers.Emitter
	log         *slog.Logger
	quarantined *prometheus.CounterVec
	seq         uint64
}

// file is a candidate in the folder.
type file struct {
	name  string
	st    stamp
	since time.Time // when st was last seen to change, or a write was reported
	ready bool      // complete: settled, or renamed into place
}

// entry is a ready file in the queue, as it was when it became ready; it is stale
// when the file changed or went since.
type entry struct {
	mtime int64
	name  string
	f     *file
}

type queue []entry

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if q[i].mtime != q[j].mtime {
		return q[i].mtime < q[j].mtime
	}
	return q[i].name < q[j].name
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(entry)) }
func (q *queue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// session is one watch of the folder: from adding the watch until the folder vanishes,
// the watch fails (an error) or ctx ends (nil).
type session struct {
	*watch
	cfg       *Config
	st        *state
	files     map[string]*file
	unsettled map[string]*file
	ready     queue
	nextEmit  time.Time
	retry     time.Duration
}

func (w *watch) session(ctx context.Context, up func()) error {
	cfg := &w.d.cfg
	if fi, err := os.Stat(cfg.Dir); err != nil {
		return fmt.Errorf("dir %q: %w", cfg.Dir, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("dir %q is not a folder", cfg.Dir)
	}
	for _, dir := range []string{cfg.DoneDir, cfg.QuarantineDir} {
		if dir == cfg.DoneDir && cfg.After != AfterMove {
			continue
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("make folder: %w", err)
		}
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch dir %q: %w", cfg.Dir, err)
	}
	defer fw.Close()
	if err := fw.Add(cfg.Dir); err != nil {
		return fmt.Errorf("watch dir %q: %w", cfg.Dir, err)
	}
	st, err := openState(cfg.StateFile, cfg.Dir)
	if err != nil {
		return err
	}
	defer st.close()
	s := &session{watch: w, cfg: cfg, st: st, files: map[string]*file{}, unsettled: map[string]*file{}}
	// Watched before the scan, so a file arriving in between is seen by one or both.
	if err := s.scan(); err != nil {
		return err
	}
	w.e.Health(true, nil)
	w.log.Info("watching image folder", "dir", cfg.Dir, "files", len(s.files), "patterns", cfg.Patterns, "after", cfg.After)
	up()
	return s.loop(ctx, fw)
}

func (s *session) scan() error {
	ents, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return fmt.Errorf("read dir %q: %w", s.cfg.Dir, err)
	}
	now := time.Now()
	for _, de := range ents {
		if de.Type().IsRegular() && s.wanted(de.Name()) {
			s.track(de.Name(), now, false)
		}
	}
	return nil
}

// wanted reports whether a name in the folder is an image to take.
func (s *session) wanted(name string) bool {
	if filepath.Join(s.cfg.Dir, name) == s.cfg.StateFile || filepath.Join(s.cfg.Dir, name) == s.cfg.StateFile+".tmp" {
		return false
	}
	return s.cfg.matches(name)
}

// track notes that name changed at now (or was found); complete marks it ready at once.
func (s *session) track(name string, now time.Time, complete bool) {
	fi, err := os.Lstat(filepath.Join(s.cfg.Dir, name))
	if err != nil || !fi.Mode().IsRegular() {
		s.forget(name)
		return
	}
	f := s.files[name]
	if f == nil {
		f = &file{name: name}
		s.files[name] = f
	}
	f.st, f.since = stampOf(fi), now
	if complete {
		s.setReady(f)
		return
	}
	f.ready = false
	s.unsettled[name] = f
}

func (s *session) setReady(f *file) {
	delete(s.unsettled, f.name)
	f.ready = true
	heap.Push(&s.ready, entry{f.st.mtime, f.name, f})
}

func (s *session) forget(name string) {
	if f := s.files[name]; f != nil {
		f.ready = false
	}
	delete(s.files, name)
	delete(s.unsettled, name)
}

// settle checks the files whose settle time is up: unchanged ones are complete.
func (s *session) settle(now time.Time) {
	for name, f := range s.unsettled {
		if now.Sub(f.since) < s.cfg.Settle.Std() {
			continue
		}
		fi, err := os.Lstat(filepath.Join(s.cfg.Dir, name))
		if err != nil || !fi.Mode().IsRegular() {
			s.forget(name)
			continue
		}
		if st := stampOf(fi); st != f.st {
			f.st, f.since = st, now
			continue
		}
		s.setReady(f)
	}
}

// peek returns the oldest ready file, dropping stale queue entries.
func (s *session) peek() *file {
	for len(s.ready) > 0 {
		en := s.ready[0]
		if s.files[en.name] == en.f && en.f.ready && en.f.st.mtime == en.mtime {
			return en.f
		}
		heap.Pop(&s.ready)
	}
	return nil
}

// errFolderGone ends a session when the watched folder is removed or renamed.
var errFolderGone = errors.New("folder removed or renamed")

func (s *session) loop(ctx context.Context, fw *fsnotify.Watcher) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		// Take every event already waiting before doing work, so a burst of files
		// does not fill the watcher's queue while one is emitted.
		for drained := false; !drained; {
			select {
			case <-ctx.Done():
				return nil
			case ev, ok := <-fw.Events:
				if err := s.event(ev, ok); err != nil {
					return err
				}
			case err, ok := <-fw.Errors:
				if err := s.watchError(err, ok); err != nil {
					return err
				}
			default:
				drained = true
			}
		}

		now := time.Now()
		s.settle(now)
		var wake time.Time
		if f := s.peek(); f != nil {
			if !now.Before(s.nextEmit) {
				if err := s.process(ctx, f, now); err != nil {
					return err
				}
				continue
			}
			wake = s.nextEmit
		}
		for _, f := range s.unsettled {
			if t := f.since.Add(s.cfg.Settle.Std()); wake.IsZero() || t.Before(wake) {
				wake = t
			}
		}
		// The folder itself is checked now and then too: on some file systems (network
		// mounts) its removal sends no event.
		if check := now.Add(time.Second); wake.IsZero() || check.Before(wake) {
			wake = check
		}
		timer.Reset(max(time.Until(wake), 0))

		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.Events:
			if err := s.event(ev, ok); err != nil {
				return err
			}
		case err, ok := <-fw.Errors:
			if err := s.watchError(err, ok); err != nil {
				return err
			}
		case <-timer.C:
			if _, err := os.Stat(s.cfg.Dir); err != nil {
				return fmt.Errorf("dir %q: %w", s.cfg.Dir, err)
			}
		}
	}
}

// errWatchClosed ends a session whose watcher closed under it.
var errWatchClosed = errors.New("watch closed")

// watchError takes an error from the watcher: lost events mean a rescan, anything else
// ends the session.
func (s *session) watchError(err error, ok bool) error {
	if !ok {
		return errWatchClosed
	}
	if errors.Is(err, fsnotify.ErrEventOverflow) {
		s.log.Warn("image folder events overflowed; rescanning", "dir", s.cfg.Dir)
		return s.scan()
	}
	return fmt.Errorf("watch dir %q: %w", s.cfg.Dir, err)
}

// event takes one change in the folder; ok false means the watcher closed.
func (s *session) event(ev fsnotify.Event, ok bool) error {
	if !ok {
		return errWatchClosed
	}
	if filepath.Clean(ev.Name) == s.cfg.Dir {
		if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
			return fmt.Errorf("dir %q: %w", s.cfg.Dir, errFolderGone)
		}
		return nil
	}
	name := filepath.Base(ev.Name)
	if !s.wanted(name) {
		return nil
	}
	now := time.Now()
	switch {
	case ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename):
		s.forget(name)
	case ev.Has(fsnotify.Create):
		// A writer that renames a finished file into place is done with it: no need
		// to wait for it to settle.
		s.track(name, now, renamedWithin(ev))
	default: // Write, Chmod
		s.track(name, now, false)
	}
	return nil
}

// renamedWithin reports whether a Create event is the arrival end of a rename within
// the watched folder. fsnotify v1.10 knows the old name but keeps the field private;
// its String method is the only place it shows, written after an arrow.
func renamedWithin(ev fsnotify.Event) bool {
	return ev.String() != fmt.Sprintf("%-13s %q", ev.Op.String(), ev.Name)
}

// process takes the oldest ready file: emits it, or finishes it if it was emitted
// before, or quarantines it.
func (s *session) process(ctx context.Context, f *file, now time.Time) error {
	path := filepath.Join(s.cfg.Dir, f.name)
	fh, err := os.Open(path)
	if err != nil {
		s.forget(f.name)
		if !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("cannot open image file", "file", path, "err", err)
		}
		return nil
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		s.forget(f.name)
		s.log.Warn("cannot stat image file", "file", path, "err", err)
		return nil
	}
	if st := stampOf(fi); st != f.st {
		// Written again since it settled: wait for it to settle anew.
		s.track(f.name, now, false)
		return nil
	}
	if s.st.emitted(f.name, f.st) {
		s.finish(f, path)
		return nil
	}
	size := fi.Size()
	switch {
	case size == 0:
		s.quarantine(f, path, sniff.ReasonEmpty, "empty file")
		return nil
	case size > int64(s.cfg.MaxFileBytes):
		s.quarantine(f, path, reasonTooLarge, fmt.Sprintf("%d bytes is over max_file_bytes %v", size, s.cfg.MaxFileBytes))
		return nil
	}

	r := drivers.AcquireReading()
	buf := r.SetImage(drivers.FormatPNG, 0, 0, int(size))
	if _, err := io.ReadFull(fh, buf); err != nil {
		r.Release()
		if fi2, err2 := os.Lstat(path); err2 == nil && stampOf(fi2) != f.st {
			s.track(f.name, now, false)
			return nil
		}
		s.quarantine(f, path, reasonUnreadable, err.Error())
		return nil
	}
	format, _, err := sniff.Image(buf)
	if err != nil {
		r.Release()
		s.quarantine(f, path, sniff.Reason(err), err.Error())
		return nil
	}
	r.Image.Format = format
	s.seq++
	// The capture time is when the file is taken, not its modification time: a file
	// that waited on disk under backpressure, or across a restart, is not stale for
	// having waited, since the folder is the buffer.
	r.Source, r.Seq, r.CapturedAt = s.d.spec.Name, s.seq, now
	if s.d.spec.Budget > 0 {
		r.Deadline = now.Add(s.d.spec.Budget)
	}
	if s.cfg.PartIDFrom == PartIDFilename {
		r.PartID = strings.TrimSuffix(f.name, filepath.Ext(f.name))
	}
	if err := s.st.markEmitted(f.name, f.st); err != nil {
		r.Release()
		return err
	}
	p := s.e.Emit(ctx, r)
	if !p.Accepted {
		if err := s.st.markDone(f.name, true); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		// Still first in line; try again after a pause that grows while refusals last.
		s.retry = min(max(2*s.retry, 10*time.Millisecond), maxRetry)
		s.nextEmit = time.Now().Add(s.retry)
		s.log.Debug("image refused by the pipeline; retrying", "file", path, "retry_in", s.retry, "occupancy", p.Occupancy)
		return nil
	}
	s.retry = 0
	if p.MaxRateHz > 0 {
		s.nextEmit = now.Add(time.Duration(float64(time.Second) / p.MaxRateHz))
	} else {
		s.nextEmit = time.Time{}
	}
	s.finish(f, path)
	return nil
}

// finish moves or deletes an emitted file, or keeps it; the state entry goes once the
// file is gone from the folder.
func (s *session) finish(f *file, path string) {
	s.forget(f.name)
	var err error
	switch s.cfg.After {
	case AfterKeep:
		return
	case AfterDelete:
		if err = os.Remove(path); errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
	case AfterMove:
		_, err = moveNoClobber(path, s.cfg.DoneDir)
	}
	if err != nil {
		// The entry stays, so the file is not emitted again; the next scan (a restart,
		// the folder coming back) tries to finish it again.
		s.log.Warn("cannot finish emitted image file", "file", path, "after", s.cfg.After, "err", err)
		return
	}
	if err := s.st.markDone(f.name, false); err != nil {
		s.log.Warn("cannot update state file", "err", err)
	}
}

// quarantine moves a file that cannot be emitted out of the way, with its reason
// written beside it.
func (s *session) quarantine(f *file, path, reason, detail string) {
	s.forget(f.name)
	s.quarantined.WithLabelValues(s.d.spec.Name, reason).Inc()
	dst, err := moveNoClobber(path, s.cfg.QuarantineDir)
	if err != nil {
		s.log.Warn("image file refused, and cannot be quarantined", "file", path, "reason", reason, "detail", detail, "err", err)
		return
	}
	text := fmt.Sprintf("%s: %s\nfile: %s\nat: %s\n", reason, detail, path, time.Now().UTC().Format(time.RFC3339))
	if err := os.WriteFile(dst+".reason", []byte(text), 0o644); err != nil {
		s.log.Warn("cannot write quarantine reason", "file", dst, "err", err)
	}
	s.log.Warn("image file quarantined", "file", path, "to", dst, "reason", reason, "detail", detail)
}
