package hwprofiles

import (
	"os"
	"slices"
	"testing"
	"testing/fstest"
)

func TestCheckProviders(t *testing.T) {
	// Orin NX with JetPack 6: CUDA, cuDNN and TensorRT installed, ONNX Runtime's CUDA
	// plugin beside libonnxruntime but not its TensorRT plugin.
	checks := CheckProviders(os.DirFS("testdata/orin-nx"), []string{ProviderTensorRT, ProviderCUDA, ProviderCPU}, nil)
	if len(checks) != 3 {
		t.Fatalf("%d checks, want 3", len(checks))
	}
	trt, cuda, cpu := checks[0], checks[1], checks[2]
	if trt.OK() || !slices.Equal(trt.Missing, []string{"libonnxruntime_providers_tensorrt.so"}) {
		t.Errorf("TensorRT: missing %v", trt.Missing)
	}
	if got := trt.Found["libnvinfer.so"]; got != "/usr/lib/aarch64-linux-gnu/libnvinfer.so.10" {
		t.Errorf("libnvinfer found at %q", got)
	}
	if !cuda.OK() {
		t.Errorf("CUDA: missing %v", cuda.Missing)
	}
	// Found through /etc/ld.so.conf.d, not one of the usual folders.
	if got := cuda.Found["libcudart.so"]; got != "/usr/local/cuda-12.6/targets/aarch64-linux/lib/libcudart.so.12" {
		t.Errorf("libcudart found at %q", got)
	}
	if !cpu.OK() || cpu.Provider != ProviderCPU {
		t.Errorf("CPU: %+v", cpu)
	}
	if got := FallsBackTo(checks, 0); got != ProviderCUDA {
		t.Errorf("TensorRT falls back to %s, want CUDA", got)
	}

	// A machine without CUDA misses everything; a library in an extra folder (the ONNX
	// Runtime library's, LD_LIBRARY_PATH) is found there.
	fsys := fstest.MapFS{"opt/ort/lib/libonnxruntime_providers_shared.so": {}}
	checks = CheckProviders(fsys, []string{ProviderCUDA}, []string{"/opt/ort/lib", "relative/ignored", ""})
	want := []string{"libonnxruntime_providers_cuda.so", "libcudart.so", "libcublas.so", "libcudnn.so"}
	if got := FallsBackTo(checks, 0); got != ProviderCPU {
		t.Errorf("CUDA falls back to %s, want CPU", got)
	}
	if !slices.Equal(checks[0].Missing, want) {
		t.Errorf("missing %v, want %v", checks[0].Missing, want)
	}
	if got := checks[0].Found["libonnxruntime_providers_shared.so"]; got != "/opt/ort/lib/libonnxruntime_providers_shared.so" {
		t.Errorf("found %q", got)
	}
}

func TestParseLdSoConf(t *testing.T) {
	got := ParseLdSoConf([]byte("# CUDA\n/usr/local/cuda/lib64\ninclude /etc/ld.so.conf.d/*.conf\n  /usr/lib/aarch64-linux-gnu/tegra  # tegra\nrelative/dir\n"))
	want := []string{"/usr/local/cuda/lib64", "/usr/lib/aarch64-linux-gnu/tegra"}
	if !slices.Equal(got, want) {
		t.Errorf("ParseLdSoConf = %q, want %q", got, want)
	}
}
