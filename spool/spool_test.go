package spool

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, Options{})
	if _, ok := s.Next(); ok {
		t.Fatal("Next on an empty spool returned a record")
	}
	before := time.Now()
	appendN(t, s, 1, 3)
	select {
	case <-s.Ready():
	default:
		t.Fatal("Ready not signalled after Append")
	}
	if n := s.Len(); n != 3 {
		t.Fatalf("Len = %d, want 3", n)
	}
	got := drain(t, s)
	wantIDs(t, got, seq(1, 3))
	wantPayloads(t, got, 0)
	for _, r := range got {
		if r.Appended.Before(before.Add(-time.Second)) || r.Appended.After(time.Now()) {
			t.Errorf("record %d appended at %v, outside the test", r.ID, r.Appended)
		}
		if err := s.Ack(r.ID); err != nil {
			t.Fatalf("Ack %d: %v", r.ID, err)
		}
	}
	if n := s.Len(); n != 0 {
		t.Fatalf("Len after acks = %d, want 0", n)
	}
	st := s.Stats()
	if st.Appended != 3 || st.Acked != 3 || st.Records != 0 || !st.Oldest.IsZero() {
		t.Fatalf("Stats = %+v", st)
	}
	if v := f.metric(t, "edged_mqtt_spool_acked_total"); v != 3 {
		t.Errorf("acked_total = %v, want 3", v)
	}
	if v := f.metric(t, "edged_mqtt_spool_appended_total"); v != 3 {
		t.Errorf("appended_total = %v, want 3", v)
	}
}

func TestAckRules(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, Options{})
	appendN(t, s, 1, 3)
	if err := s.Ack(1); err == nil || !strings.Contains(err.Error(), "not handed out") {
		t.Fatalf("Ack of a record not handed out: %v", err)
	}
	if err := s.Ack(99); err == nil {
		t.Fatal("Ack of an unknown id succeeded")
	}
	drain(t, s)
	if err := s.Ack(2); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(2); err != nil {
		t.Fatalf("second Ack of the same id: %v", err)
	}
	if err := s.Ack(1); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(1); err != nil {
		t.Fatalf("Ack below the watermark: %v", err)
	}
	if st := s.Stats(); st.Acked != 2 || st.Records != 1 {
		t.Fatalf("Stats = %+v, want 2 acked, 1 left", st)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(3); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ack after Close: %v, want ErrClosed", err)
	}
	if err := s.Append(payload(4)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v, want ErrClosed", err)
	}
	if _, ok := s.Next(); ok {
		t.Fatal("Next after Close returned a record")
	}
}

func TestOrderAcrossSegments(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, Options{SegmentBytes: 512, MaxBytes: 1 << 20})
	appendN(t, s, 1, 100)
	if n := len(segFiles(t, f.dir)); n < 5 {
		t.Fatalf("%d segment files, want rotation into several", n)
	}
	// Interleave appends with reading, across segment boundaries.
	var got []Record
	for i := 101; i <= 150; i++ {
		r, ok := s.Next()
		if !ok {
			t.Fatal("Next ran dry")
		}
		got = append(got, r)
		appendN(t, s, i, i)
	}
	got = append(got, drain(t, s)...)
	wantIDs(t, got, seq(1, 150))
	wantPayloads(t, got, 0)
	for _, r := range got {
		if err := s.Ack(r.ID); err != nil {
			t.Fatal(err)
		}
	}
	// Everything acked: only the segment being written is left.
	if files := segFiles(t, f.dir); len(files) != 1 {
		t.Fatalf("segment files after acking all: %v, want only the active one", files)
	}
	if st := s.Stats(); st.Bytes > 512 || st.Records != 0 {
		t.Fatalf("Stats after acking all = %+v", st)
	}
}

func TestRewind(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, Options{SegmentBytes: 256})
	appendN(t, s, 1, 8)
	wantIDs(t, drain(t, s), seq(1, 8))
	for _, id := range []uint64{2, 4, 5} {
		if err := s.Ack(id); err != nil {
			t.Fatal(err)
		}
	}
	<-s.Ready() // consume the appends' signal
	s.Rewind()
	select {
	case <-s.Ready():
	default:
		t.Fatal("Ready not signalled after Rewind")
	}
	wantIDs(t, drain(t, s), []uint64{1, 3, 6, 7, 8})

	// Ack the head: the watermark passes the acked run; a late ack of a re-handed
	// record lands, and Rewind skips it.
	for _, id := range []uint64{1, 7} {
		if err := s.Ack(id); err != nil {
			t.Fatal(err)
		}
	}
	s.Rewind()
	got := drain(t, s)
	wantIDs(t, got, []uint64{3, 6, 8})
	wantPayloads(t, got, 0)
	if n := s.Len(); n != 3 {
		t.Fatalf("Len = %d, want 3", n)
	}
}

func TestReopen(t *testing.T) {
	f := newFixture(t)
	o := Options{SegmentBytes: 300}
	s := f.open(t, o)
	appendN(t, s, 1, 10)
	drain(t, s)
	for _, id := range []uint64{1, 2, 3, 4, 7} {
		if err := s.Ack(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	s = f.open(t, o)
	select {
	case <-s.Ready():
	default:
		t.Fatal("Ready not signalled on Open with records waiting")
	}
	// 1..4 are below the watermark and gone; 7 was acked above it, so it may come back
	// (at least once).
	got := drain(t, s)
	wantIDs(t, got, seq(5, 10))
	wantPayloads(t, got, 0)
	appendN(t, s, 11, 11)
	r, ok := s.Next()
	if !ok || r.ID != 11 {
		t.Fatalf("new record after reopen: %v %v, want id 11", r.ID, ok)
	}
	for id := uint64(5); id <= 11; id++ {
		if err := s.Ack(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// All acked: nothing comes back, and IDs still continue.
	s = f.open(t, o)
	if n := s.Len(); n != 0 {
		t.Fatalf("Len after reopening a fully acked spool = %d", n)
	}
	if files := segFiles(t, f.dir); len(files) != 0 {
		t.Fatalf("segment files left: %v", files)
	}
	appendN(t, s, 12, 12)
	if r, ok := s.Next(); !ok || r.ID != 12 {
		t.Fatalf("id after reopening a fully acked spool = %d, want 12", r.ID)
	}
}

func TestCrashAtLeastOnce(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
		want     []uint64 // handed out from the crash copy
	}{
		// Each ack advance is checkpointed before Ack returns.
		{"fsync each", 0, seq(6, 10)},
		// The checkpoint is not due yet: acked records come back.
		{"fsync later", time.Hour, seq(1, 10)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			// One segment: acked segments are deleted at once, whatever the
			// checkpoint, so only records in a live segment can come back.
			o := Options{FsyncInterval: tc.interval}
			s := f.open(t, o)
			appendN(t, s, 1, 10)
			drain(t, s)
			for id := uint64(1); id <= 5; id++ {
				if err := s.Ack(id); err != nil {
					t.Fatal(err)
				}
			}
			crash := copyDir(t, f.dir)

			c, err := Open(Options{Dir: crash, Log: f.opts(Options{}).Log})
			if err != nil {
				t.Fatal(err)
			}
			got := drain(t, c)
			wantIDs(t, got, tc.want)
			wantPayloads(t, got, 0)
			appendN(t, c, 11, 11)
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}

			// A clean Close persists what the crash lost.
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = f.open(t, o)
			wantIDs(t, drain(t, s), seq(6, 10))
		})
	}
}

func TestCrashTornAppend(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, Options{})
	appendN(t, s, 1, 5)
	crash := copyDir(t, f.dir)
	// Half a record written when the power went.
	seg := filepath.Join(crash, segName(1))
	half := appendFrame(nil, 6, time.Now().UnixNano(), payload(6))[:20]
	fh, err := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.Write(half); err != nil {
		t.Fatal(err)
	}
	_ = fh.Close()

	c, err := Open(Options{Dir: crash, Log: f.opts(Options{}).Log})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wantIDs(t, drain(t, c), seq(1, 5))
	if st := c.Stats(); st.Corrupt != 1 {
		t.Fatalf("Corrupt = %d, want 1", st.Corrupt)
	}
	if !strings.Contains(f.log.String(), "torn record") {
		t.Fatalf("no torn-record log line in:\n%s", f.log)
	}
	appendN(t, c, 6, 6)
	if r, ok := c.Next(); !ok || r.ID != 6 {
		t.Fatalf("after torn tail: %v %v, want id 6", r.ID, ok)
	}
}

func TestMaxBytesDropsOldest(t *testing.T) {
	f := newFixture(t)
	rec := int64(headerSize + len(payload(1)))
	o := Options{MaxBytes: 10 * rec, SegmentBytes: 2 * rec}
	s := f.open(t, o)
	// Hand out and ack a few, leave some in flight.
	appendN(t, s, 1, 4)
	r1, _ := s.Next()
	r2, _ := s.Next()
	if err := s.Ack(r1.ID); err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 5, 30)

	st := s.Stats()
	if st.Bytes > o.MaxBytes {
		t.Fatalf("spool holds %d bytes, over max %d", st.Bytes, o.MaxBytes)
	}
	if st.Dropped == 0 {
		t.Fatal("nothing dropped")
	}
	// Conservation: every record appended is acked, dropped or still here.
	if st.Acked+st.Dropped+uint64(st.Records) != st.Appended {
		t.Fatalf("acked %d + dropped %d + records %d != appended %d", st.Acked, st.Dropped, st.Records, st.Appended)
	}
	if v := f.metric(t, "edged_mqtt_spool_dropped_total", "full"); v != float64(st.Dropped) {
		t.Errorf("dropped_total{reason=full} = %v, want %d", v, st.Dropped)
	}
	if v := f.metric(t, "edged_mqtt_spool_bytes"); v != float64(st.Bytes) {
		t.Errorf("spool_bytes = %v, want %d", v, st.Bytes)
	}
	if !strings.Contains(f.log.String(), "full") || !strings.Contains(f.log.String(), "records=") {
		t.Errorf("no drop warning with a count in the log:\n%s", f.log)
	}
	// The newest records survive, in order; the ack of a dropped one is harmless.
	got := drain(t, s)
	if len(got) != st.Records || got[len(got)-1].ID != 30 {
		t.Fatalf("after drops got %v, want the newest %d ending at 30", ids(got), st.Records)
	}
	wantIDs(t, got, seq(got[0].ID, 30))
	wantPayloads(t, got, 0)
	if err := s.Ack(r2.ID); err != nil {
		t.Fatalf("Ack of a dropped record: %v", err)
	}
}

func TestRecordTooBig(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, Options{MaxBytes: 1000, SegmentBytes: 500})
	err := s.Append(make([]byte, 2000))
	if err == nil {
		t.Fatal("Append of a record larger than MaxBytes succeeded")
	}
	for _, want := range []string{"2000", "1000", f.dir} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	// Exactly at the limit fits.
	if err := s.Append(make([]byte, 1000-headerSize)); err != nil {
		t.Fatalf("Append of a record exactly MaxBytes: %v", err)
	}
	err = s.Append(make([]byte, MaxRecordBytes+1))
	if err == nil || !strings.Contains(err.Error(), "exceeds the limit") {
		t.Fatalf("Append over MaxRecordBytes: %v", err)
	}
	if st := s.Stats(); st.Appended != 1 || st.Dropped != 0 {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestOptionErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{}, "no folder"},
		{Options{Dir: dir, MaxBytes: -1}, "max bytes -1"},
		{Options{Dir: dir, SegmentBytes: -1}, "segment bytes -1"},
		{Options{Dir: dir, SegmentBytes: 2 << 30}, "out of range"},
		{Options{Dir: dir, MaxBytes: 100, SegmentBytes: 200}, "exceed max bytes 100"},
		{Options{Dir: dir, FsyncInterval: -time.Second}, "fsync interval -1s"},
	} {
		_, err := Open(tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%+v) = %v, want an error with %q", tc.o, err, tc.want)
		}
	}
	var nilSpool *Spool
	if err := nilSpool.Close(); err != nil {
		t.Errorf("Close on nil: %v", err)
	}
}

func TestFsyncPolicies(t *testing.T) {
	ckpt := func(dir string) (uint64, bool) {
		b, err := os.ReadFile(filepath.Join(dir, checkpointName))
		if err != nil {
			return 0, false
		}
		wm, err := decodeCheckpoint(b)
		return wm, err == nil
	}
	t.Run("each", func(t *testing.T) {
		f := newFixture(t)
		s := f.open(t, Options{})
		appendN(t, s, 1, 3)
		drain(t, s)
		if err := s.Ack(1); err != nil {
			t.Fatal(err)
		}
		// Written before Ack returned.
		if wm, ok := ckpt(f.dir); !ok || wm != 2 {
			t.Fatalf("checkpoint = %d %v, want 2", wm, ok)
		}
	})
	t.Run("interval", func(t *testing.T) {
		f := newFixture(t)
		s := f.open(t, Options{FsyncInterval: 5 * time.Millisecond})
		appendN(t, s, 1, 3)
		drain(t, s)
		if err := s.Ack(1); err != nil {
			t.Fatal(err)
		}
		// The flusher writes it shortly after.
		deadline := time.Now().Add(5 * time.Second)
		for {
			if wm, ok := ckpt(f.dir); ok && wm == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("flusher did not write the checkpoint")
			}
			time.Sleep(time.Millisecond)
		}
		if err := s.Ack(2); err != nil {
			t.Fatal(err)
		}
		// Close writes what is pending and stops the flusher (goleak checks).
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if wm, ok := ckpt(f.dir); !ok || wm != 3 {
			t.Fatalf("checkpoint after Close = %d %v, want 3", wm, ok)
		}
		s = f.open(t, Options{FsyncInterval: 5 * time.Millisecond})
		wantIDs(t, drain(t, s), []uint64{3})
	})
}

func TestDamageAfterOpen(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, Options{SegmentBytes: 200})
	appendN(t, s, 1, 6)
	// Flip a payload byte of record 2 (first segment is sealed; reads go to disk).
	seg := segFiles(t, f.dir)[0]
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	rec := headerSize + len(payload(1))
	b[rec+headerSize+3] ^= 0xFF
	if err := os.WriteFile(seg, b, 0o640); err != nil {
		t.Fatal(err)
	}
	got := drain(t, s)
	wantIDs(t, got, []uint64{1, 3, 4, 5, 6})
	if st := s.Stats(); st.Corrupt != 1 || st.Records != 5 {
		t.Fatalf("Stats = %+v, want 1 corrupt, 5 records", st)
	}
	for _, r := range got {
		if err := s.Ack(r.ID); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.Len(); n != 0 {
		t.Fatalf("Len = %d", n)
	}
}

func TestOldestAge(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, Options{})
	if v := f.metric(t, "edged_mqtt_spool_oldest_age_seconds"); v != 0 {
		t.Fatalf("oldest age of an empty spool = %v", v)
	}
	appendN(t, s, 1, 2)
	first, _ := s.Next()
	if st := s.Stats(); !st.Oldest.Equal(first.Appended) {
		t.Fatalf("Oldest = %v, want %v", st.Oldest, first.Appended)
	}
	if v := f.metric(t, "edged_mqtt_spool_oldest_age_seconds"); v < 0 || v > 60 {
		t.Fatalf("oldest age = %v", v)
	}
	if v := f.metric(t, "edged_mqtt_spool_records"); v != 2 {
		t.Fatalf("records = %v", v)
	}
	if err := s.Ack(first.ID); err != nil {
		t.Fatal(err)
	}
	second, _ := s.Next()
	if st := s.Stats(); !st.Oldest.Equal(second.Appended) {
		t.Fatalf("Oldest after ack = %v, want %v", st.Oldest, second.Appended)
	}
}

// TestConcurrent appends from one goroutine while another sends and acks, with a
// rewind now and then, as the publisher does across reconnects.
func TestConcurrent(t *testing.T) {
	for _, interval := range []time.Duration{0, time.Millisecond} {
		t.Run(interval.String(), func(t *testing.T) {
			f := newFixture(t)
			s := f.open(t, Options{SegmentBytes: 1024, FsyncInterval: interval})
			const n = 500
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 1; i <= n; i++ {
					if err := s.Append(payload(i)); err != nil {
						t.Error(err)
						return
					}
				}
			}()
			rewound := make(map[uint64]bool)
			var last uint64
			acked := 0
			deadline := time.After(30 * time.Second)
			for acked < n {
				r, ok := s.Next()
				if !ok {
					select {
					case <-s.Ready():
					case <-deadline:
						t.Fatalf("stalled after %d acks", acked)
					}
					continue
				}
				if r.ID <= last {
					t.Fatalf("record %d after %d", r.ID, last)
				}
				last = r.ID
				if r.ID%7 == 0 && !rewound[r.ID] {
					// Leave it unacked and rewind, as after a lost connection: it
					// must come back first.
					rewound[r.ID] = true
					s.Rewind()
					last = r.ID - 1
					continue
				}
				if err := s.Ack(r.ID); err != nil {
					t.Fatal(err)
				}
				acked++
			}
			wg.Wait()
			if st := s.Stats(); st.Appended != n || st.Acked != n || st.Records != 0 {
				t.Fatalf("Stats = %+v", st)
			}
		})
	}
}

// TestDamageAtWatermark: an unreadable record at the watermark lets it pass records
// acked above it; those must not be handed out again.
func TestDamageAtWatermark(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, Options{})
	appendN(t, s, 1, 5)
	wantIDs(t, drain(t, s), seq(1, 5))
	for _, id := range []uint64{2, 3} {
		if err := s.Ack(id); err != nil {
			t.Fatal(err)
		}
	}
	seg := segFiles(t, f.dir)[0]
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	b[headerSize+1] ^= 0xFF // record 1's payload
	if err := os.WriteFile(seg, b, 0o640); err != nil {
		t.Fatal(err)
	}
	s.Rewind()
	wantIDs(t, drain(t, s), []uint64{4, 5})
	if st := s.Stats(); st.Corrupt != 1 || st.Records != 2 {
		t.Fatalf("Stats = %+v, want 1 corrupt, 2 records", st)
	}
}

func TestLargeRecords(t *testing.T) {
	f := newFixture(t)
	o := Options{MaxBytes: 16 << 20, SegmentBytes: 1 << 20}
	s := f.open(t, o)
	big := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 300<<10+i) }
	for i := 1; i <= 5; i++ {
		if err := s.Append(big(i)); err != nil {
			t.Fatal(err)
		}
	}
	check := func(got []Record) {
		t.Helper()
		wantIDs(t, got, seq(1, 5))
		for _, r := range got {
			if !bytes.Equal(r.Data, big(int(r.ID))) {
				t.Fatalf("record %d: %d bytes, not what was appended", r.ID, len(r.Data))
			}
		}
	}
	check(drain(t, s))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = f.open(t, o)
	check(drain(t, s))
}

// TestAppendFailure: a failed write leaves the spool as it was, and the next Append
// starts a fresh segment.
func TestAppendFailure(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, Options{})
	appendN(t, s, 1, 2)
	s.mu.Lock()
	_ = s.active.f.Close() // the disk goes away under the spool
	s.mu.Unlock()
	if err := s.Append(payload(3)); err == nil || !strings.Contains(err.Error(), segName(1)) {
		t.Fatalf("Append on a failed file: %v, want an error naming the segment", err)
	}
	appendN(t, s, 3, 3)
	got := drain(t, s)
	wantIDs(t, got, seq(1, 3))
	wantPayloads(t, got, 0)
	if files := segFiles(t, f.dir); len(files) != 2 {
		t.Fatalf("segments %v, want a fresh one after the failure", files)
	}
}
