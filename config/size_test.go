package config

import (
	"os"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{
		"268435456": 256 * MiB,
		"256MiB":    256 * MiB,
		"256 MiB":   256 * MiB,
		"256mib":    256 * MiB,
		"64MB":      64_000_000,
		"64kB":      64_000,
		"64KB":      64_000,
		"64KiB":     64 * KiB,
		"1.5GiB":    3 * GiB / 2,
		"2TiB":      2 * TiB,
		"1GB":       1e9,
		"0":         0,
		"512B":      512,
	} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"":                    "is not a size",
		"MiB":                 "is not a size",
		"-1":                  "is negative",
		"-1MiB":               "is negative",
		"12M":                 `unknown unit "M"`,
		"1.5":                 "not a whole number of bytes",
		"1e6":                 "is not a size",
		"9223372036854775808": "too large",
		"8EiB":                `unknown unit "EiB"`,
		"0x100":               "is not a size",
		"1,024":               "is not a size",
	} {
		if _, err := ParseByteSize(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseByteSize(%q): error %v, want %q", in, err, want)
		}
	}
	for b, want := range map[ByteSize]string{
		0: "0B", 1000: "1000B", 1536 * KiB: "1536KiB", 256 * MiB: "256MiB", GiB: "1GiB", 3 * TiB: "3TiB", -2 * KiB: "-2KiB",
	} {
		if got := b.String(); got != want {
			t.Errorf("ByteSize(%d).String() = %q, want %q", int64(b), got, want)
		}
	}
}

func TestByteSizeAndFsyncYAML(t *testing.T) {
	in := Spool{Dir: "d", MaxBytes: 1536 * KiB, SegmentBytes: 1000, Fsync: Fsync(10 * time.Millisecond)}
	out, err := yaml.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := "dir: d\nmax_bytes: 1536KiB\nsegment_bytes: 1000B\nfsync: 10ms\n"; string(out) != want {
		t.Errorf("marshal: %q, want %q", out, want)
	}
	var back Spool
	if err := yaml.Unmarshal(out, &back); err != nil || back != in {
		t.Errorf("round trip: %+v, %v", back, err)
	}

	var s Spool
	if err := yaml.Unmarshal([]byte("fsync: always"), &s); err != nil || s.Fsync != FsyncAlways || s.Fsync.Interval() != 0 || s.Fsync.String() != "always" {
		t.Errorf("always: %v, %v", s.Fsync, err)
	}
	for in, want := range map[string]string{
		"fsync: 10":     `"10" is not always or a duration`,
		"fsync: 0ms":    "write always to sync every record",
		"fsync: [1ms]":  "not a list",
		"fsync: ALWAYS": `"ALWAYS" is not always or a duration`,
	} {
		if err := yaml.Unmarshal([]byte(in), &s); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", in, err, want)
		}
	}
}

func writeConcat(t *testing.T, dst string, srcs ...string) {
	t.Helper()
	var b []byte
	for _, s := range srcs {
		p, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, p...)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
