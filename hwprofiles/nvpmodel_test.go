package hwprofiles

import (
	"os"
	"strings"
	"testing"
	"testing/fstest"
)

func TestParseNVPModelQuery(t *testing.T) {
	tests := []struct {
		out  string
		want PowerMode
	}{
		{"NV Power Mode: MAXN\n0\n", PowerMode{ID: 0, Name: "MAXN"}},
		{"NV Power Mode: MAXN_SUPER\n2\n", PowerMode{ID: 2, Name: "MAXN_SUPER"}},
		// Warnings come first when the fan or clocks service is not up.
		{"NVPM WARN: fan mode is not set!\nNV Power Mode: 15W\n0\n", PowerMode{ID: 0, Name: "15W"}},
		{"NV Power Mode: MODE_30W\n", PowerMode{ID: -1, Name: "MODE_30W"}},
	}
	for _, tt := range tests {
		got, err := ParseNVPModelQuery([]byte(tt.out))
		tt.want.From = "nvpmodel -q"
		if err != nil || got != tt.want {
			t.Errorf("ParseNVPModelQuery(%q) = %+v, %v; want %+v", tt.out, got, err, tt.want)
		}
	}
	if _, err := ParseNVPModelQuery([]byte("nvpmodel: command failed\n")); err == nil || !strings.Contains(err.Error(), "no \"NV Power Mode:\" line") {
		t.Errorf("output without a mode: %v", err)
	}
}

func TestParseNVPModelStatus(t *testing.T) {
	for in, want := range map[string]int{"pmode:0002 fmode:quiet\n": 2, "pmode:0000": 0, "fmode:cool pmode:0013": 13} {
		if got, err := ParseNVPModelStatus([]byte(in)); err != nil || got != want {
			t.Errorf("ParseNVPModelStatus(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "fmode:quiet", "pmode:", "pmode:-1", "pmode:two"} {
		if _, err := ParseNVPModelStatus([]byte(in)); err == nil {
			t.Errorf("ParseNVPModelStatus(%q): no error", in)
		}
	}
}

func TestParseNVPModelConf(t *testing.T) {
	conf := `# comment < POWER_MODEL ID=9 NAME=COMMENTED >
< PARAM TYPE=FILE NAME=CPU_ONLINE >
< POWER_MODEL ID=0 NAME=MAXN >
CPU_ONLINE CORE_0 1
<POWER_MODEL ID=1 NAME=10W>
< POWER_MODEL ID=2 NAME=15W >
< POWER_MODEL ID=2 NAME=DUPLICATE >
< POWER_MODEL NAME=NOID >
< PM_CONFIG DEFAULT=2 >
`
	got := ParseNVPModelConf([]byte(conf))
	want := map[int]string{0: "MAXN", 1: "10W", 2: "15W"}
	if len(got) != len(want) {
		t.Fatalf("ParseNVPModelConf = %v, want %v", got, want)
	}
	for id, name := range want {
		if got[id] != name {
			t.Errorf("mode %d: %q, want %q", id, got[id], name)
		}
	}
}

func TestReadPowerMode(t *testing.T) {
	tests := []struct {
		root string
		want string
	}{
		{"testdata/orin-nx", "MAXN (mode 0)"},
		{"testdata/agx-devkit", "MODE_50W (mode 3)"},
		{"testdata/orin-nano", ""}, // nvpmodel never ran: no status file
		{"testdata/raspberry-pi", ""},
	}
	for _, tt := range tests {
		mode, ok, err := ReadPowerMode(os.DirFS(tt.root))
		if err != nil {
			t.Errorf("%s: %v", tt.root, err)
			continue
		}
		if ok != (tt.want != "") || (ok && mode.String() != tt.want) {
			t.Errorf("%s: %v (ok %v), want %q", tt.root, mode, ok, tt.want)
		}
		if ok && !strings.Contains(mode.From, "/var/lib/nvpmodel/status") {
			t.Errorf("%s: From %q", tt.root, mode.From)
		}
	}
	// A status file without its catalogue still gives the number.
	mode, ok, err := ReadPowerMode(fstest.MapFS{"var/lib/nvpmodel/status": {Data: []byte("pmode:0001\n")}})
	if err != nil || !ok || mode.String() != "mode 1" {
		t.Errorf("status alone: %v %v %v", mode, ok, err)
	}
	_, _, err = ReadPowerMode(fstest.MapFS{"var/lib/nvpmodel/status": {Data: []byte("garbage\n")}})
	if err == nil || !strings.Contains(err.Error(), "var/lib/nvpmodel/status") {
		t.Errorf("bad status: %v", err)
	}
}
