package opcua

import (
	"encoding/binary"
	"testing"

	"github.com/gopcua/opcua/ua"
)

// Values decoded from the server's bytes go through toFloat and partIDString: any
// variant gopcua decodes must give a number or an error, never a panic.
func FuzzValue(f *testing.F) {
	for _, v := range []any{true, int8(-3), uint16(7), int32(-70000), uint64(1 << 60), float32(1.5), 2.25, "P17", []byte("id"), []float64{1, 2}, ua.NewLocalizedText("x")} {
		b, err := ua.MustVariant(v).Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var v ua.Variant
		if !decodes(&v, b) {
			return
		}
		if x, err := toFloat(&v); err == nil && v.ArrayLength() > 0 {
			t.Errorf("array %v gave scalar %v", v.Value(), x)
		}
		_ = partIDString(&v)
	})
}

// Node ids come from the config; checkNodeID must refuse or accept, never panic, and
// what it accepts gopcua parses.
func FuzzCheckNodeID(f *testing.F) {
	for _, s := range []string{"ns=2;s=Line1.Speed", "i=2258", "ns=1;g=5eac051c-c313-43d7-b790-24fa7c4b3e1c", "ns=2;b=YWJj", "foo", "ns=2;", "s="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if checkNodeID(s) == nil {
			if _, err := ua.ParseNodeID(s); err != nil {
				t.Errorf("checkNodeID took %q, which gopcua refuses: %v", s, err)
			}
		}
	})
}

// decodes reports whether gopcua decodes b. gopcua v0.8.0 panics on an array length
// below -1 (testdata/fuzz/FuzzValue holds one), inside its own channel reader where
// the driver cannot recover it; that is gopcua's to fix, and not what this target
// checks.
// It also allocates whatever array length the bytes declare, so inputs declaring a
// large array are skipped to keep the fuzzer's memory bounded.
func decodes(v *ua.Variant, b []byte) (ok bool) {
	if len(b) >= 5 && b[0]&0x80 != 0 && binary.LittleEndian.Uint32(b[1:5]) > 1<<12 || len(b) > 0 && b[0]&0x40 != 0 {
		return false
	}
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	_, err := v.Decode(b)
	return err == nil
}
