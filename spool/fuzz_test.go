package spool

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzOpen feeds arbitrary bytes to recovery as a segment file: Open must not panic or
// fail, and every record it hands out must be one intact, checksummed frame of the
// input, in rising ID order. The spool must then work as usual. Each run fsyncs a few
// times (Close writes the checkpoint); TMPDIR=/dev/shm makes fuzzing ~10x faster.
func FuzzOpen(f *testing.F) {
	var valid []byte
	for i := 1; i <= 3; i++ {
		valid = appendFrame(valid, uint64(i), int64(i)*1e9, payload(i))
	}
	rec := headerSize + len(payload(1))
	flipped := bytes.Clone(valid)
	flipped[rec+headerSize] ^= 1
	hugeLen := bytes.Clone(valid)
	binary.LittleEndian.PutUint32(hugeLen[rec+4:], 0xFFFFFFFF)
	outOfOrder := appendFrame(appendFrame(nil, 5, 0, []byte("b")), 4, 0, []byte("a"))
	bigID := appendFrame(appendFrame(nil, 1, 0, nil), 1<<63, 0, []byte("x"))
	for _, seed := range [][]byte{
		valid,
		valid[:len(valid)-3],
		valid[:rec+5],
		flipped,
		hugeLen,
		append(bytes.Clone(valid), "garbage after the end"...),
		append([]byte("garbage before"), valid...),
		append(bytes.Clone(valid), valid...),
		outOfOrder,
		bigID,
		magic[:],
		magic[:2],
		{},
		[]byte("not a spool at all"),
	} {
		f.Add(seed)
	}
	log := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, segName(1)), data, 0o640); err != nil {
			t.Fatal(err)
		}
		s, err := Open(Options{Dir: dir, Log: log, MaxBytes: 64 << 20, SegmentBytes: 1 << 20, FsyncInterval: time.Hour})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer s.Close()
		var last uint64
		for {
			r, ok := s.Next()
			if !ok {
				break
			}
			if r.ID <= last {
				t.Fatalf("id %d after %d", r.ID, last)
			}
			last = r.ID
			if !bytes.Contains(data, appendFrame(nil, r.ID, r.Appended.UnixNano(), r.Data)) {
				t.Fatalf("record %d (%d bytes) is not an intact frame of the input", r.ID, len(r.Data))
			}
			if err := s.Ack(r.ID); err != nil {
				t.Fatalf("Ack %d: %v", r.ID, err)
			}
		}
		if err := s.Append([]byte("after")); err != nil {
			t.Fatalf("Append after recovery: %v", err)
		}
		r, ok := s.Next()
		if !ok || r.ID <= last || string(r.Data) != "after" {
			t.Fatalf("record after recovery: %+v %v (last %d)", r, ok, last)
		}
		if err := s.Ack(r.ID); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		// Everything was acked: a restart hands nothing out.
		s, err = Open(Options{Dir: dir, Log: log})
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		if n := s.Len(); n != 0 {
			t.Fatalf("Len after reopen = %d, want 0", n)
		}
	})
}
