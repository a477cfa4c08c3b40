package spool

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// mountTmpfs mounts a tmpfs of size bytes on a new folder, unmounted when the test
// ends, and returns the folder: a real disk that fills up.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("mount a %d-byte tmpfs on %s: %v: %s (the spool disk-full test needs root to mount tmpfs; make test runs as root)",
			size, dir, err, bytes.TrimSpace(out))
	}
	// Registered after t.TempDir's cleanup, so it runs before it; the spools opened
	// later are closed before this.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, bytes.TrimSpace(out))
		}
	})
	return dir
}

// bigPayload is record i of about 600 bytes.
func bigPayload(i int) []byte {
	return append(payload(i), bytes.Repeat([]byte{'a' + byte(i%26)}, 560)...)
}

func wantBigPayloads(t testing.TB, got []Record) {
	t.Helper()
	for _, r := range got {
		if want := bigPayload(int(r.ID)); !bytes.Equal(r.Data, want) {
			t.Fatalf("record %d data = %q, want %q", r.ID, r.Data, want)
		}
	}
}

// TestDiskFull fills a real (tmpfs) disk far below MaxBytes: Append keeps succeeding by
// dropping the oldest segments, counted as dropped for reason disk_full, and the
// newest records survive, in order, across a reopen.
func TestDiskFull(t *testing.T) {
	for _, interval := range []time.Duration{0, time.Millisecond} {
		t.Run(fmt.Sprintf("fsync=%s", interval), func(t *testing.T) { testDiskFull(t, interval) })
	}
}

func testDiskFull(t *testing.T, interval time.Duration) {
	const fsSize = 512 << 10
	f := newFixture(t)
	f.dir = filepath.Join(mountTmpfs(t, fsSize), "spool")
	o := Options{MaxBytes: 64 << 20, SegmentBytes: 64 << 10, FsyncInterval: interval}
	s := f.open(t, o)

	frame := int64(headerSize + len(bigPayload(1)))
	n := int(3 * fsSize / frame) // three times what the disk holds
	for i := 1; i <= n; i++ {
		if err := s.Append(bigPayload(i)); err != nil {
			t.Fatalf("Append %d of %d (%d bytes each) on a %d-byte disk: %v", i, n, frame, fsSize, err)
		}
	}

	st := s.Stats()
	t.Logf("%d records of %d bytes on a %d-byte tmpfs: %d kept (%d bytes), %d dropped", n, frame, fsSize, st.Records, st.Bytes, st.Dropped)
	if st.Dropped == 0 {
		t.Fatal("nothing dropped, yet the disk cannot hold all records")
	}
	if st.Appended != uint64(n) || st.Dropped+uint64(st.Records) != st.Appended {
		t.Fatalf("Stats = %+v: want %d appended, each dropped or kept", st, n)
	}
	if st.Bytes > fsSize {
		t.Fatalf("spool holds %d bytes on a %d-byte disk", st.Bytes, fsSize)
	}
	// Drops make room, one segment at a time: most of the disk stays in use.
	if st.Bytes < fsSize/2 {
		t.Errorf("spool holds only %d bytes of a %d-byte disk: dropped too much", st.Bytes, fsSize)
	}
	if v := f.metric(t, "edged_mqtt_spool_dropped_total", "disk_full"); v != float64(st.Dropped) {
		t.Errorf("dropped_total{reason=disk_full} = %v, want %d", v, st.Dropped)
	}
	if v := f.metric(t, "edged_mqtt_spool_dropped_total", "full"); v != 0 {
		t.Errorf("dropped_total{reason=full} = %v, want 0 (MaxBytes is far off)", v)
	}
	logs := f.log.String()
	if !strings.Contains(logs, "disk full") || !strings.Contains(logs, f.dir) || !strings.Contains(logs, "records=") {
		t.Errorf("no disk-full warning naming the folder and a count in the log:\n%s", logs)
	}

	// The newest records are all there, handed out in order.
	got := drain(t, s)
	if len(got) != st.Records {
		t.Fatalf("handed out %d records, Stats say %d", len(got), st.Records)
	}
	first := uint64(n) - uint64(len(got)) + 1
	wantIDs(t, got, seq(first, uint64(n)))
	wantBigPayloads(t, got)

	if err := s.Close(); err != nil {
		t.Fatalf("Close on a full disk: %v", err)
	}
	s = f.open(t, o)
	if st := s.Stats(); st.Corrupt != 0 || st.Records != len(got) {
		t.Fatalf("after reopen Stats = %+v, want %d records and none corrupt", st, len(got))
	}
	again := drain(t, s)
	wantIDs(t, again, seq(first, uint64(n)))
	wantBigPayloads(t, again)

	// The disk is still full after the reopen: appends go on making room.
	for i := n + 1; i <= n+200; i++ {
		if err := s.Append(bigPayload(i)); err != nil {
			t.Fatalf("Append %d after reopen: %v", i, err)
		}
	}
	if s.Stats().Dropped == 0 {
		t.Fatal("nothing dropped after reopening a full spool")
	}
	s.Rewind()
	again = drain(t, s)
	if len(again) == 0 || again[len(again)-1].ID != uint64(n+200) {
		t.Fatalf("after more appends got %d records ending at %v, want the newest ending at %d", len(again), ids(again)[max(len(again)-1, 0):], n+200)
	}
	wantIDs(t, again, seq(again[0].ID, uint64(n+200)))
	wantBigPayloads(t, again)
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestDiskFullNothingToDrop: when the disk is full of something else and the record's
// own segment is all the spool holds, Append fails with a clear error and keeps what
// it has; the acked watermark is still checkpointed on the full disk.
func TestDiskFullNothingToDrop(t *testing.T) {
	const fsSize = 256 << 10
	mnt := mountTmpfs(t, fsSize)
	f := newFixture(t)
	f.dir = filepath.Join(mnt, "spool")
	o := Options{MaxBytes: 64 << 20, SegmentBytes: 64 << 10}
	s := f.open(t, o)

	// Record 1 is acked while there is room, so a checkpoint file exists.
	if err := s.Append(bigPayload(1)); err != nil {
		t.Fatal(err)
	}
	if r, ok := s.Next(); !ok || s.Ack(r.ID) != nil {
		t.Fatalf("Next/Ack of record 1: %v %v", r.ID, ok)
	}

	// Another program fills the disk up to the last 20 KiB.
	var fs syscall.Statfs_t
	if err := syscall.Statfs(mnt, &fs); err != nil {
		t.Fatal(err)
	}
	free := int64(fs.Bavail) * fs.Bsize
	if err := os.WriteFile(filepath.Join(mnt, "ballast"), make([]byte, free-20<<10), 0o600); err != nil {
		t.Fatalf("ballast of %d bytes: %v", free-20<<10, err)
	}

	var err error
	i := 2
	for ; i < 1000; i++ {
		if err = s.Append(bigPayload(i)); err != nil {
			break
		}
	}
	if err == nil {
		t.Fatal("a disk with 20 KiB free took 1000 records")
	}
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "disk full") || !strings.Contains(err.Error(), f.dir) {
		t.Fatalf("Append %d on a full disk: %v; want ENOSPC, naming the folder and \"disk full\"", i, err)
	}
	t.Logf("Append %d: %v", i, err)
	st := s.Stats()
	if st.Dropped != 0 || st.Records != i-2 {
		t.Fatalf("Stats = %+v: want the %d records before the failure, none dropped", st, i-2)
	}
	got := drain(t, s)
	wantIDs(t, got, seq(2, uint64(i-1)))
	wantBigPayloads(t, got)

	// Acks on the full disk still move the checkpoint (overwritten in place).
	for _, r := range got[:3] {
		if err := s.Ack(r.ID); err != nil {
			t.Fatal(err)
		}
	}
	if logs := f.log.String(); strings.Contains(logs, "write checkpoint") {
		t.Errorf("checkpoint not written on the full disk:\n%s", logs)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close on a full disk: %v", err)
	}
	s = f.open(t, o)
	wantIDs(t, drain(t, s), seq(5, uint64(i-1)))

	// The next record no longer has a segment of its own to keep: the old one goes.
	if err := s.Append(bigPayload(i)); err != nil {
		t.Fatalf("Append %d with an older segment to drop: %v", i, err)
	}
	if st := s.Stats(); st.Dropped != uint64(i-5) || st.Records != 1 {
		t.Fatalf("Stats = %+v: want the %d unacked older records dropped, 1 left", st, i-5)
	}
	if v := f.metric(t, "edged_mqtt_spool_dropped_total", "disk_full"); v != float64(i-5) {
		t.Errorf("dropped_total{reason=disk_full} = %v, want %d", v, i-5)
	}
	s.Rewind()
	got = drain(t, s)
	wantIDs(t, got, []uint64{uint64(i)})
	wantBigPayloads(t, got)
}
