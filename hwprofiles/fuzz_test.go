package hwprofiles

import (
	"strings"
	"testing"
)

// The parsers below read bytes edged does not write: sysfs attributes, nvpmodel's output
// and state files, the loader's config. None may panic, and what they return must hold
// what the callers rely on.

func FuzzParseSysfsInt(f *testing.F) {
	for _, s := range []string{"5064\n", "-8\n", "", "0x10", "99999999999999999999", " 7 "} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseSysfsInt(b)
	})
}

func FuzzParseNVPModel(f *testing.F) {
	f.Add([]byte("NV Power Mode: MAXN\n0\n"))
	f.Add([]byte("NVPM WARN: fan mode is not set!\nNV Power Mode: 15W\n0\n"))
	f.Add([]byte("pmode:0002 fmode:quiet\n"))
	f.Add([]byte("< POWER_MODEL ID=0 NAME=MAXN >\n< POWER_MODEL ID=1 NAME=10W >\n"))
	f.Add([]byte("<>\n< POWER_MODEL ID=-1 NAME= >\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := ParseNVPModelQuery(b); err == nil && (m.Name == "" || m.ID < -1) {
			t.Fatalf("ParseNVPModelQuery(%q) = %+v without error", b, m)
		}
		if id, err := ParseNVPModelStatus(b); err == nil && id < 0 {
			t.Fatalf("ParseNVPModelStatus(%q) = %d", b, id)
		}
		for id, name := range ParseNVPModelConf(b) {
			if id < 0 || name == "" || strings.ContainsAny(name, " \n>") {
				t.Fatalf("ParseNVPModelConf(%q): mode %d %q", b, id, name)
			}
		}
		for _, d := range ParseLdSoConf(b) {
			if !strings.HasPrefix(d, "/") || strings.Contains(d, "#") {
				t.Fatalf("ParseLdSoConf(%q): folder %q", b, d)
			}
		}
	})
}
