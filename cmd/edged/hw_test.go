package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestHWReport runs `edged hw -root` on the fixture trees of hwprofiles as each box would
// see itself, and checks every part of the report.
func TestHWReport(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{
			name: "Orin NX, JetPack 6",
			args: []string{"-root", "../../hwprofiles/testdata/orin-nx", "-arch", "arm64", "-cpus", "8"},
			want: []string{
				"profile      jetson-orin-nx: NVIDIA Jetson Orin NX",
				`why          model file says "NVIDIA Jetson Orin NX Engineering Reference Developer Kit"`,
				`nv_tegra_release says "R36 (release), REVISION: 3.0`,
				"settings     arm64, 8 cores: 2 workers × 2 intra-op threads, 1 inter-op, spinning off",
				"execution providers TensorRT, CUDA, CPU",
				"ring 64 frames, batch up to 8, memory budget 4096 MB",
				"tuned for power mode MAXN",
				"onnxruntime  /usr/local/lib/edged/libonnxruntime.so.1",
				"TensorRT  missing: libonnxruntime_providers_tensorrt.so, falls back to CUDA",
				"CUDA      libraries found: /usr/lib/aarch64-linux-gnu/libcudnn.so.9, /usr/local/cuda-12.6/targets/aarch64-linux/lib/libcublas.so.12",
				"CPU       always available",
				"power mode   MAXN (mode 0), from /var/lib/nvpmodel/status and /etc/nvpmodel.conf\n",
				"power        VDD_IN             7.17 W",
				"VDD_CPU_GPU_CV     1.66 W",
				"VDD_SOC            2.71 W",
				"board              7.17 W (VDD_IN)",
			},
		},
		{
			name: "AGX Orin in another power mode",
			args: []string{"-root", "../../hwprofiles/testdata/agx-devkit", "-arch", "arm64", "-cpus", "12"},
			want: []string{
				"profile      jetson-orin-agx",
				"onnxruntime  not found under ../../hwprofiles/testdata/agx-devkit",
				"TensorRT  missing: libonnxruntime_providers_shared.so, libonnxruntime_providers_tensorrt.so, libnvinfer.so, libnvonnxparser.so, libcudart.so, falls back to CPU",
				"CUDA      missing: libonnxruntime_providers_shared.so, libonnxruntime_providers_cuda.so, libcudart.so, libcublas.so, libcudnn.so, falls back to CPU",
				"power mode   MODE_50W (mode 3), from /var/lib/nvpmodel/status and /etc/nvpmodel.conf; the profile was tuned for MAXN",
				"VDDQ_VDD2_1V8AO    0.48 W",
				"board              9.82 W (sum of the rails)",
			},
		},
		{
			name: "Orin Nano with a rail that does not read",
			args: []string{"-root", "../../hwprofiles/testdata/orin-nano", "-arch", "arm64", "-cpus", "6"},
			want: []string{
				"profile      jetson-orin-nano",
				"power mode   unknown",
				"VDD_CPU_GPU_CV     0.00 W",
				"VDD_SOC          does not read, skipped: open sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1/curr3_input",
				"board              5.90 W (VDD_IN)",
			},
		},
		{
			name: "the same tree from an amd64 build",
			args: []string{"-root", "../../hwprofiles/testdata/orin-nx", "-arch", "amd64", "-cpus", "2"},
			want: []string{
				"profile      x86-64",
				"ignoring the Jetson board: this build is for amd64",
				"settings     amd64, 2 cores: 1 workers × 1 intra-op threads",
				"providers    CPU       always available",
			},
		},
		{
			name: "Raspberry Pi, profile named",
			args: []string{"-root", "../../hwprofiles/testdata/raspberry-pi", "-arch", "arm64", "-cpus", "4", "-hwprofile", "arm64"},
			want: []string{
				"profile      arm64",
				"why          profile arm64 named in the config",
				"power mode   unknown",
				"power        no INA3221 power rails",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			if err := hwReport(&out, tt.args, failNVPModel(t)); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("report lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}

// failNVPModel stands for `nvpmodel -q`, which a report on a copied tree must not run.
func failNVPModel(t *testing.T) func() ([]byte, error) {
	return func() ([]byte, error) {
		t.Error("nvpmodel -q ran for a copied tree")
		return nil, errors.New("not on a copied tree")
	}
}

// TestHWReportJetPack4 reads the older iio layout of the power monitor, which the test
// writes out because its folder name has a colon.
func TestHWReportJetPack4(t *testing.T) {
	root := t.TempDir()
	dev := filepath.Join(root, "sys/bus/i2c/drivers/ina3221x/7-0040/iio:device0")
	files := map[string]string{
		"proc/device-tree/model":  "NVIDIA Jetson Xavier NX Developer Kit\x00",
		"etc/nv_tegra_release":    "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t186ref, EABI: aarch64\n",
		"var/lib/nvpmodel/status": "pmode:0002\n",
	}
	for rel, text := range files {
		writeFixture(t, filepath.Join(root, rel), text)
	}
	for n, rail := range []struct{ name, mw string }{{"VDD_IN", "4512"}, {"VDD_CPU_GPU_CV", "815"}, {"VDD_SOC", "1385"}} {
		writeFixture(t, filepath.Join(dev, "rail_name_"+string(rune('0'+n))), rail.name+"\n")
		writeFixture(t, filepath.Join(dev, "in_power"+string(rune('0'+n))+"_input"), rail.mw+"\n")
	}
	var out strings.Builder
	if err := hwReport(&out, []string{"-root", root, "-arch", "arm64", "-cpus", "6"}, failNVPModel(t)); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{
		"a Jetson without a board profile",
		"profile      arm64",
		"power mode   mode 2, from /var/lib/nvpmodel/status\n",
		"power        VDD_IN             4.51 W",
		"VDD_SOC            1.39 W",
		"board              4.51 W (VDD_IN)",
	} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("report lacks %q:\n%s", w, out.String())
		}
	}
}

// TestHWReportLive runs the report on this machine's own root, with nvpmodel's answer
// given: the command must work on any box, Jetson or not.
func TestHWReportLive(t *testing.T) {
	var out strings.Builder
	nvpmodel := func() ([]byte, error) { return []byte("NV Power Mode: 15W\n0\n"), nil }
	if err := hwReport(&out, []string{"-hwprofile", "jetson-orin-nano", "-arch", "arm64", "-cpus", "6"}, nvpmodel); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"profile      jetson-orin-nano", "onnxruntime  ", "power mode   15W (mode 0), from nvpmodel -q\n", "power        "} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("report lacks %q:\n%s", w, out.String())
		}
	}
}

func TestHWReportErrors(t *testing.T) {
	var out strings.Builder
	if err := hwReport(&out, []string{"-hwprofile", "jetson-tx2"}, nil); err == nil || !strings.Contains(err.Error(), `unknown hardware profile "jetson-tx2"`) {
		t.Errorf("unknown profile: %v", err)
	}
	if err := hwReport(&out, []string{"extra"}, nil); !errors.Is(err, errUsage) {
		t.Errorf("stray argument: %v", err)
	}
	if err := hwReport(&out, []string{"-c", filepath.Join(t.TempDir(), "missing.yaml")}, nil); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing config: %v", err)
	}
}

func writeFixture(t *testing.T, p, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
