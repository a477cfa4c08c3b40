package hwprofiles

import (
	"os"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

func TestEveryProfileParses(t *testing.T) {
	names := Names()
	want := []string{"arm64", "jetson-orin-agx", "jetson-orin-nano", "jetson-orin-nx", "riscv64", "x86-64"}
	if !slices.Equal(names, want) {
		t.Fatalf("Names() = %v, want %v", names, want)
	}
	for _, name := range names {
		p, err := Get(name)
		if err != nil {
			t.Errorf("Get(%q): %v", name, err)
			continue
		}
		jetson := strings.HasPrefix(name, "jetson-")
		if jetson == p.Generic() {
			t.Errorf("%s: Generic() = %v", name, p.Generic())
		}
		if jetson {
			if !slices.Equal(p.Runtime.ExecutionProviders, []string{ProviderTensorRT, ProviderCUDA, ProviderCPU}) {
				t.Errorf("%s: execution providers %v", name, p.Runtime.ExecutionProviders)
			}
			if p.PowerMode == "" || p.Arch != "arm64" {
				t.Errorf("%s: power mode %q, arch %q", name, p.PowerMode, p.Arch)
			}
		} else if !slices.Equal(p.Runtime.ExecutionProviders, []string{ProviderCPU}) {
			t.Errorf("%s: execution providers %v", name, p.Runtime.ExecutionProviders)
		}
	}
}

func TestGetReturnsCopies(t *testing.T) {
	a, err := Get("jetson-orin-nano")
	if err != nil {
		t.Fatal(err)
	}
	a.Runtime.ExecutionProviders[0] = "changed"
	a.Pipeline.Workers = 99
	b, err := Get("jetson-orin-nano")
	if err != nil {
		t.Fatal(err)
	}
	if b.Runtime.ExecutionProviders[0] != ProviderTensorRT || b.Pipeline.Workers == 99 {
		t.Fatalf("a change to one Get result showed in the next: %+v", b)
	}
}

func TestGetUnknown(t *testing.T) {
	_, err := Get("jetson-tx2")
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{`"jetson-tx2"`, "known:", "jetson-orin-nx", "x86-64"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestParseRejects(t *testing.T) {
	good := `name: t
description: test
arch: arm64
cores: 4
runtime: {intra_op_threads: 2, inter_op_threads: 1, spinning: false, execution_providers: [CUDA, CPU]}
pipeline: {ring_size: 8, workers: 1, max_batch: 4}
memory_budget_mb: 256
power_mode: ""
`
	if _, err := parse([]byte(good)); err != nil {
		t.Fatalf("good profile: %v", err)
	}
	tests := []struct {
		name, from, to, want string
	}{
		{"unknown key", "power_mode", "power_mood", "field power_mood not found"},
		{"arch", "arch: arm64", "arch: arm", `arch: "arm" is not one of`},
		{"cpu last", "[CUDA, CPU]", "[CPU, CUDA]", "does not end with CPU"},
		{"unknown provider", "[CUDA, CPU]", "[ROCm, CPU]", `execution_providers[0]: "ROCm" is not one of`},
		{"duplicate provider", "[CUDA, CPU]", "[CPU, CPU]", `execution_providers[1]: "CPU" is listed twice`},
		{"board threads", "intra_op_threads: 2", "intra_op_threads: 0", "runtime.intra_op_threads: 0 is out of range 1..256"},
		{"batch over ring", "max_batch: 4", "max_batch: 9", "pipeline.max_batch: 9 is out of range 1..ring_size (8)"},
		{"memory", "memory_budget_mb: 256", "memory_budget_mb: 10", "memory_budget_mb: 10 is below 64"},
		{"two documents", `power_mode: ""`, "power_mode: \"\"\n---\nname: x", "more than one YAML document"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse([]byte(strings.Replace(good, tt.from, tt.to, 1)))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestThreadPlan(t *testing.T) {
	tests := []struct {
		cores, workers   int
		wantW, wantIntra int
		wantSpin         bool
	}{
		{1, 2, 1, 1, false},
		{2, 2, 1, 1, false}, // one thread is best on two cores, and it must not spin
		{3, 2, 1, 2, true},
		{4, 2, 2, 1, true},
		{8, 2, 2, 3, true},
		{16, 2, 2, 4, true},
		{64, 2, 2, 4, true},
		{6, 1, 1, 4, true},
		{3, 1, 1, 2, true},
	}
	for _, tt := range tests {
		w, intra, spin := threadPlan(tt.cores, tt.workers)
		if w != tt.wantW || intra != tt.wantIntra || spin != tt.wantSpin {
			t.Errorf("threadPlan(%d, %d) = %d, %d, %v; want %d, %d, %v",
				tt.cores, tt.workers, w, intra, spin, tt.wantW, tt.wantIntra, tt.wantSpin)
		}
		if w*intra > max(1, tt.cores-1) {
			t.Errorf("threadPlan(%d, %d): %d×%d threads oversubscribe the cores", tt.cores, tt.workers, w, intra)
		}
	}
}

func TestAdaptBoardProfile(t *testing.T) {
	p, err := Get("jetson-orin-agx")
	if err != nil {
		t.Fatal(err)
	}
	if reasons := p.Adapt(12); reasons != nil || p.Runtime.IntraOpThreads != 4 || p.Pipeline.Workers != 2 {
		t.Fatalf("Adapt(12) on a 12-core profile changed it: %v %+v", reasons, p)
	}
	// The 32 GB AGX Orin module has 8 cores, and a power mode may park more.
	reasons := p.Adapt(2)
	if len(reasons) != 1 || !strings.Contains(reasons[0], "2 of the profile's 12 cores online") {
		t.Fatalf("reasons %q", reasons)
	}
	if p.Cores != 2 || p.Pipeline.Workers != 1 || p.Runtime.IntraOpThreads != 1 || p.Runtime.Spinning {
		t.Fatalf("Adapt(2) gave %+v", p)
	}
}

func TestDetect(t *testing.T) {
	tests := []struct {
		name        string
		goarch      string
		cpus        int
		want        string
		wantReasons []string
	}{
		{name: "agx-devkit", goarch: "arm64", cpus: 12, want: "jetson-orin-agx",
			wantReasons: []string{`model file says "NVIDIA Jetson AGX Orin Developer Kit"`, `nv_tegra_release says "R36 (release), REVISION: 3.0`}},
		{name: "orin-nx", goarch: "arm64", cpus: 8, want: "jetson-orin-nx",
			wantReasons: []string{`model file says "NVIDIA Jetson Orin NX Engineering Reference Developer Kit"`}},
		{name: "orin-nano", goarch: "arm64", cpus: 6, want: "jetson-orin-nano",
			wantReasons: []string{"Orin Nano Engineering Reference Developer Kit Super"}},
		{name: "carrier-nano", goarch: "arm64", cpus: 6, want: "jetson-orin-nano",
			wantReasons: []string{`model file says "Seeed reComputer J3011"`, "compatible list names jetson-orin-nano"}},
		{name: "xavier-nx", goarch: "arm64", cpus: 6, want: "arm64",
			wantReasons: []string{"R35 (release)", "a Jetson without a board profile", "arch arm64: generic profile arm64"}},
		{name: "tegra-only", goarch: "arm64", cpus: 4, want: "arm64",
			wantReasons: []string{"a Jetson without a board profile", "generic profile on 4 cores"}},
		{name: "raspberry-pi", goarch: "arm64", cpus: 4, want: "arm64",
			wantReasons: []string{`model file says "Raspberry Pi 4 Model B Rev 1.4"`, "arch arm64"}},
		{name: "agx-devkit", goarch: "amd64", cpus: 12, want: "x86-64",
			wantReasons: []string{"ignoring the Jetson board: this build is for amd64", "arch amd64"}},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/"+tt.goarch, func(t *testing.T) {
			p, reasons, err := Detect(os.DirFS("testdata/"+tt.name), tt.goarch, tt.cpus)
			if err != nil {
				t.Fatal(err)
			}
			if p.Name != tt.want {
				t.Errorf("profile %s, want %s (reasons %q)", p.Name, tt.want, reasons)
			}
			all := strings.Join(reasons, "\n")
			for _, w := range tt.wantReasons {
				if !strings.Contains(all, w) {
					t.Errorf("reasons %q lack %q", reasons, w)
				}
			}
		})
	}
}

func TestDetectByArch(t *testing.T) {
	empty := fstest.MapFS{}
	for arch, want := range map[string]string{"amd64": "x86-64", "arm64": "arm64", "riscv64": "riscv64"} {
		p, reasons, err := Detect(empty, arch, 2)
		if err != nil {
			t.Fatalf("%s: %v", arch, err)
		}
		if p.Name != want {
			t.Errorf("%s: profile %s, want %s", arch, p.Name, want)
		}
		// Two cores: one worker, one intra-op thread, no spinning.
		if p.Cores != 2 || p.Pipeline.Workers != 1 || p.Runtime.IntraOpThreads != 1 || p.Runtime.Spinning {
			t.Errorf("%s on 2 cores: %+v", arch, p)
		}
		if !slices.Contains(reasons, "arch "+arch+": generic profile "+want) {
			t.Errorf("%s: reasons %q", arch, reasons)
		}
	}
	if _, _, err := Detect(empty, "mips", 1); err == nil || !strings.Contains(err.Error(), "no hardware profile for arch mips") {
		t.Fatalf("mips: error %v", err)
	}
}

func TestResolve(t *testing.T) {
	p, reasons, err := Resolve("x86-64", fstest.MapFS{}, "arm64", 8)
	if err != nil {
		t.Fatal(err)
	}
	if p.Runtime.IntraOpThreads != 3 || !p.Runtime.Spinning {
		t.Errorf("x86-64 on 8 cores: %+v", p.Runtime)
	}
	if !strings.Contains(strings.Join(reasons, "\n"), "profile x86-64 is for amd64 but this build is for arm64") {
		t.Errorf("reasons %q", reasons)
	}
	p, _, err = Resolve(Auto, os.DirFS("testdata/orin-nx"), "arm64", 8)
	if err != nil || p.Name != "jetson-orin-nx" {
		t.Fatalf("auto: %v, %v", p, err)
	}
	if _, _, err := Resolve("nope", fstest.MapFS{}, "amd64", 8); err == nil {
		t.Fatal("unknown name: no error")
	}
}

func TestReadSmallTrims(t *testing.T) {
	fsys := fstest.MapFS{"m": {Data: []byte("  NVIDIA Jetson Orin NX \x00\x00")}}
	if got := readSmall(fsys, "m"); got != "NVIDIA Jetson Orin NX" {
		t.Fatalf("readSmall = %q", got)
	}
	if got := readSmall(fsys, "missing"); got != "" {
		t.Fatalf("missing file gave %q", got)
	}
}
