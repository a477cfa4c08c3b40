package spool

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func garbage(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.UintN(256))
	}
	// Keep it free of markers, so the case is about garbage, not forged records.
	return bytes.ReplaceAll(b, magic[:1], []byte{0})
}

func TestRecoverDamage(t *testing.T) {
	rec := int64(headerSize + len(payload(1)))
	write := func(t *testing.T, path string, b []byte) {
		t.Helper()
		if err := os.WriteFile(path, b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name    string
		damage  func(t *testing.T, dir, seg string, b []byte)
		want    []uint64
		corrupt uint64
		log     string
		// after recovery
		segSize       int64  // size of the first segment, 0: not checked
		quarantined   string // file name expected with .corrupt
		reopenCorrupt uint64 // Corrupt on the next Open (middle damage stays)
	}{
		{
			name:   "intact",
			damage: func(t *testing.T, dir, seg string, b []byte) {},
			want:   seq(1, 3), segSize: 3 * rec,
		},
		{
			name: "truncated tail",
			damage: func(t *testing.T, dir, seg string, b []byte) {
				write(t, seg, b[:3*rec-5])
			},
			want: seq(1, 2), corrupt: 1, log: "torn record at the end cut off", segSize: 2 * rec,
		},
		{
			name: "torn header",
			damage: func(t *testing.T, dir, seg string, b []byte) {
				write(t, seg, b[:2*rec+10])
			},
			want: seq(1, 2), corrupt: 1, log: "torn record", segSize: 2 * rec,
		},
		{
			name: "flipped payload byte in the middle record",
			damage: func(t *testing.T, dir, seg string, b []byte) {
				b[rec+headerSize+5] ^= 0x40
				write(t, seg, b)
			},
			want: []uint64{1, 3}, corrupt: 1, log: "damaged bytes skipped", segSize: 3 * rec, reopenCorrupt: 1,
		},
		{
			name: "flipped length in the middle record",
			damage: func(t *testing.T, dir, seg string, b []byte) {
				b[rec+4] ^= 0x01
				write(t, seg, b)
			},
			want: []uint64{1, 3}, corrupt: 1, log: "offset=" + itoa(rec), reopenCorrupt: 1,
		},
		{
			name: "huge length in the middle record",
			damage: func(t *testing.T, dir, seg string, b []byte) {
				copy(b[rec+4:], []byte{0xff, 0xff, 0xff, 0x7f})
				write(t, seg, b)
			},
			want: []uint64{1, 3}, corrupt: 1, reopenCorrupt: 1,
		},
		{
			name: "flipped marker in the middle record",
			damage: func(t *testing.T, dir, seg string, b []byte) {
				b[rec] ^= 0xff
				write(t, seg, b)
			},
			want: []uint64{1, 3}, corrupt: 1, log: "bytes=" + itoa(rec), reopenCorrupt: 1,
		},
		{
			name: "garbage appended",
			damage: func(t *testing.T, dir, seg string, b []byte) {
				write(t, seg, append(b, garbage(100, 1)...))
			},
			want: seq(1, 3), corrupt: 1, log: "damaged bytes at the end cut off", segSize: 3 * rec,
		},
		{
			name: "garbage prepended",
			damage: func(t *testing.T, dir, seg string, b []byte) {
				write(t, seg, append(garbage(77, 2), b...))
			},
			want: seq(1, 3), corrupt: 1, log: "bytes=77", reopenCorrupt: 1,
		},
		{
			name: "zeros after a power cut",
			damage: func(t *testing.T, dir, seg string, b []byte) {
				write(t, seg, append(b, make([]byte, 4096)...))
			},
			want: seq(1, 3), corrupt: 1, segSize: 3 * rec,
		},
		{
			name: "whole garbage segment",
			damage: func(t *testing.T, dir, seg string, b []byte) {
				write(t, filepath.Join(dir, segName(50)), garbage(1000, 3))
			},
			want: seq(1, 3), corrupt: 1, log: "quarantined", quarantined: segName(50),
		},
		{
			name: "stray copy of a segment",
			damage: func(t *testing.T, dir, seg string, b []byte) {
				write(t, filepath.Join(dir, segName(2)), b)
			},
			want: seq(1, 3), corrupt: 1, log: "quarantined", quarantined: segName(2),
		},
		{
			name: "segment of one torn record",
			damage: func(t *testing.T, dir, seg string, b []byte) {
				write(t, filepath.Join(dir, segName(4)), b[:rec-1])
			},
			want: seq(1, 3), corrupt: 1, log: "only a torn record",
		},
		{
			name: "zero-length segment",
			damage: func(t *testing.T, dir, seg string, b []byte) {
				write(t, filepath.Join(dir, segName(4)), nil)
			},
			want: seq(1, 3), log: "removed empty segment",
		},
		{
			name: "zero-length only segment",
			damage: func(t *testing.T, dir, seg string, b []byte) {
				write(t, seg, nil)
			},
			want: nil, log: "removed empty segment",
		},
		{
			name: "damaged checkpoint",
			damage: func(t *testing.T, dir, seg string, b []byte) {
				write(t, filepath.Join(dir, checkpointName), []byte("nonsense"))
			},
			want: seq(1, 3), corrupt: 1, log: "checkpoint unreadable",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			s := f.open(t, Options{})
			appendN(t, s, 1, 3)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			seg := filepath.Join(f.dir, segName(1))
			b, err := os.ReadFile(seg)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(b)) != 3*rec {
				t.Fatalf("segment is %d bytes, want %d", len(b), 3*rec)
			}
			tc.damage(t, f.dir, seg, b)

			s = f.open(t, Options{})
			got := drain(t, s)
			wantIDs(t, got, tc.want)
			wantPayloads(t, got, 0)
			if st := s.Stats(); st.Corrupt != tc.corrupt || st.Records != len(tc.want) {
				t.Errorf("Stats = %+v, want %d corrupt, %d records", st, tc.corrupt, len(tc.want))
			}
			if tc.log != "" && !strings.Contains(f.log.String(), tc.log) {
				t.Errorf("log lacks %q:\n%s", tc.log, f.log)
			}
			if tc.segSize > 0 {
				if fi, err := os.Stat(seg); err != nil || fi.Size() != tc.segSize {
					t.Errorf("segment after recovery: %v, want %d bytes", fi, tc.segSize)
				}
			}
			if tc.quarantined != "" {
				if _, err := os.Stat(filepath.Join(f.dir, tc.quarantined+corruptSuffix)); err != nil {
					t.Errorf("not quarantined: %v", err)
				}
			}
			// The spool goes on: IDs continue after the highest intact one, the
			// survivors come back after a restart.
			next := uint64(1)
			if len(tc.want) > 0 {
				next = tc.want[len(tc.want)-1] + 1
			}
			if err := s.Append(payload(int(next))); err != nil {
				t.Fatal(err)
			}
			if r, ok := s.Next(); !ok || r.ID != next {
				t.Fatalf("record after recovery: %d %v, want id %d", r.ID, ok, next)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = f.open(t, Options{})
			wantIDs(t, drain(t, s), append(tc.want, next))
			if st := s.Stats(); st.Corrupt != tc.reopenCorrupt {
				t.Errorf("Corrupt on reopen = %d, want %d", st.Corrupt, tc.reopenCorrupt)
			}
		})
	}
}

// TestRecoverMetrics checks damage found on Open reaches the counter.
func TestRecoverMetrics(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, Options{})
	appendN(t, s, 1, 3)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	seg := filepath.Join(f.dir, segName(1))
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(seg, append(b, garbage(10, 4)...), 0o640); err != nil {
		t.Fatal(err)
	}
	_ = f.open(t, Options{})
	if v := f.metric(t, "edged_mqtt_spool_corrupt_total"); v != 1 {
		t.Fatalf("corrupt_total = %v, want 1", v)
	}
}

// TestRecoverAcrossSegments damages one segment of several: the others are whole.
func TestRecoverAcrossSegments(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, Options{SegmentBytes: 256})
	appendN(t, s, 1, 20)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	files := segFiles(t, f.dir)
	if len(files) < 4 {
		t.Fatalf("want several segments, got %v", files)
	}
	if err := os.WriteFile(files[1], garbage(300, 5), 0o640); err != nil {
		t.Fatal(err)
	}
	s = f.open(t, Options{SegmentBytes: 256})
	got := drain(t, s)
	wantPayloads(t, got, 0)
	if len(got) >= 20 || got[0].ID != 1 || got[len(got)-1].ID != 20 {
		t.Fatalf("got %v, want 1..20 less the damaged segment", ids(got))
	}
	if st := s.Stats(); st.Corrupt != 1 {
		t.Fatalf("Corrupt = %d", st.Corrupt)
	}
	appendN(t, s, 21, 21)
	if r, ok := s.Next(); !ok || r.ID != 21 {
		t.Fatalf("next id %d, want 21", r.ID)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
