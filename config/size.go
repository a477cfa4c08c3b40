package config

import (
	"fmt"
	"math/big"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ByteSize is a number of bytes, written in YAML as a plain integer (268435456) or as a
// number with a unit: 256MiB, 64MB, 1.5GiB. KiB, MiB, GiB and TiB are powers of 1024;
// kB (or KB), MB, GB and TB are powers of 1000, as their standards define them. A unit
// is needed to tell the two apart, so there is no "M" alone.
type ByteSize int64

// Size units.
const (
	KiB ByteSize = 1 << 10
	MiB ByteSize = 1 << 20
	GiB ByteSize = 1 << 30
	TiB ByteSize = 1 << 40
)

// byteUnits maps each accepted unit, lower-cased, to its size in bytes.
var byteUnits = map[string]int64{
	"":    1,
	"b":   1,
	"kb":  1e3,
	"mb":  1e6,
	"gb":  1e9,
	"tb":  1e12,
	"kib": 1 << 10,
	"mib": 1 << 20,
	"gib": 1 << 30,
	"tib": 1 << 40,
}

const sizeHelp = "a size like 268435456, 256MiB or 64MB"

var sizeRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)$`)

// ParseByteSize reads a size as UnmarshalYAML does.
func ParseByteSize(s string) (ByteSize, error) {
	m := sizeRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		if strings.HasPrefix(strings.TrimSpace(s), "-") {
			return 0, fmt.Errorf("%q is negative; want %s", s, sizeHelp)
		}
		return 0, fmt.Errorf("%q is not %s", s, sizeHelp)
	}
	unit, ok := byteUnits[strings.ToLower(m[2])]
	if !ok {
		return 0, fmt.Errorf("%q has unknown unit %q; use B, KiB, MiB, GiB, TiB (powers of 1024) or kB, MB, GB, TB (powers of 1000)", s, m[2])
	}
	// Exact arithmetic: 1.5GiB is a whole number of bytes, 0.3B is not, and neither
	// float rounding nor int64 overflow may pass unnoticed.
	n, ok := new(big.Rat).SetString(m[1])
	if !ok {
		return 0, fmt.Errorf("%q is not %s", s, sizeHelp)
	}
	n.Mul(n, new(big.Rat).SetInt64(unit))
	if !n.IsInt() {
		return 0, fmt.Errorf("%q is not a whole number of bytes", s)
	}
	if !n.Num().IsInt64() {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return ByteSize(n.Num().Int64()), nil
}

// UnmarshalYAML reads an integer number of bytes or a size string.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want %s, not %s", sizeHelp, describe(n))
	}
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// MarshalYAML writes the size as String does, which UnmarshalYAML reads back.
func (b ByteSize) MarshalYAML() (any, error) { return b.String(), nil }

// String writes the size in the largest power-of-1024 unit that holds it exactly:
// 256MiB, 1536KiB, 1000B.
func (b ByteSize) String() string {
	for _, u := range []struct {
		name string
		size ByteSize
	}{{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}} {
		if b != 0 && b%u.size == 0 {
			return fmt.Sprintf("%d%s", b/u.size, u.name)
		}
	}
	return fmt.Sprintf("%dB", int64(b))
}

// Fsync is when the spool forces appended records to disk: FsyncAlways before each
// append returns, or else at most this long after an append. Written in YAML as
// "always" or a duration like 10ms. A power cut loses at most the last interval's
// records; "always" loses none and costs a disk flush per result.
type Fsync time.Duration

// FsyncAlways syncs every record before the append returns.
const FsyncAlways Fsync = 0

const fsyncHelp = "always or a duration like 10ms"

// UnmarshalYAML reads "always" or a duration. A zero duration is refused: it would
// read as "always", which the file should then say.
func (f *Fsync) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want %s, not %s", fsyncHelp, describe(n))
	}
	if n.Value == "always" {
		*f = FsyncAlways
		return nil
	}
	var d Duration
	if err := d.UnmarshalYAML(n); err != nil {
		return fmt.Errorf("%q is not %s", n.Value, fsyncHelp)
	}
	if d == 0 {
		return fmt.Errorf("%q: write always to sync every record, or a duration from %v to %v", n.Value, minFsync, maxFsync)
	}
	// A negative duration is kept for Validate, which reports it with the range.
	*f = Fsync(d)
	return nil
}

// MarshalYAML writes the policy as String does, which UnmarshalYAML reads back.
func (f Fsync) MarshalYAML() (any, error) { return f.String(), nil }

// Interval is the longest a record waits to be synced; 0 for FsyncAlways, as
// spool.Options.FsyncInterval takes it.
func (f Fsync) Interval() time.Duration { return time.Duration(f) }

// String is "always" or the duration.
func (f Fsync) String() string {
	if f == FsyncAlways {
		return "always"
	}
	return time.Duration(f).String()
}
