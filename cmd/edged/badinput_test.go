package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Each bad input ends edged at start with one clear line naming the thing and what to
// do: exit code 1, no panic, no stack trace.
func TestBadInputAtStart(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, l *testLine) (args []string, env []string)
		want  []string
	}{
		{
			name: "unknown config key",
			setup: func(t *testing.T, l *testLine) ([]string, []string) {
				appendConfig(t, l, "colour: blue\n")
				return []string{"run", "-c", l.config}, nil
			},
			want: []string{"colour", "edged.yaml"},
		},
		{
			name: "missing onnx runtime library",
			setup: func(t *testing.T, l *testLine) ([]string, []string) {
				appendConfig(t, l, "runtime: {ort_library: /nonexistent/libonnxruntime.so}\n")
				return []string{"run", "-c", l.config}, nil
			},
			want: []string{"runtime.ort_library", "/nonexistent/libonnxruntime.so", "no such file"},
		},
		{
			name: "onnx runtime library that is not one",
			setup: func(t *testing.T, l *testLine) ([]string, []string) {
				bogus := filepath.Join(t.TempDir(), "libonnxruntime.so")
				os.WriteFile(bogus, []byte("not a library"), 0o644)
				return []string{"run", "-c", l.config}, []string{"ONNXRUNTIME_SHARED_LIBRARY_PATH=" + bogus}
			},
			want: []string{"load ONNX Runtime", "libonnxruntime.so", "make ort"},
		},
		{
			// A probability threshold of 1 is only known to be wrong once the model
			// turns out to be a softmax one.
			name: "threshold of 1 on a softmax model",
			setup: func(t *testing.T, l *testLine) ([]string, []string) {
				replaceConfig(t, l, "    model: el-defect\n", "    model: el-defect\n    threshold: 1\n")
				return []string{"run", "-c", l.config}, nil
			},
			want: []string{`"el"`, "threshold 1 is not in (0,1)"},
		},
		{
			name: "corrupt model file",
			setup: func(t *testing.T, l *testLine) ([]string, []string) {
				installDemo(t, l)
				f := filepath.Join(l.modelsDir, "el-defect", activeVersion(t, l), "model.onnx")
				b, _ := os.ReadFile(f)
				b[len(b)/2] ^= 0xff
				os.WriteFile(f, b, 0o644)
				return []string{"run", "-c", l.config}, nil
			},
			want: []string{"model.onnx", "sha256", "push the model again"},
		},
		{
			name: "missing model file",
			setup: func(t *testing.T, l *testLine) ([]string, []string) {
				installDemo(t, l)
				os.Remove(filepath.Join(l.modelsDir, "el-defect", activeVersion(t, l), "model.onnx"))
				return []string{"run", "-c", l.config}, nil
			},
			want: []string{"el-defect", "model.onnx", "not in the model repository"},
		},
		{
			name: "model not in the repository",
			setup: func(t *testing.T, l *testLine) ([]string, []string) {
				replaceConfig(t, l, "model: el-defect", "model: weld-seam")
				return []string{"run", "-c", l.config}, nil
			},
			want: []string{`"weld-seam"`, "not in the repository"},
		},
		{
			name: "model inputs do not match its manifest",
			setup: func(t *testing.T, l *testLine) ([]string, []string) {
				installDemo(t, l)
				mf := filepath.Join(l.modelsDir, "el-defect", activeVersion(t, l), "manifest.json")
				b, _ := os.ReadFile(mf)
				b = []byte(strings.Replace(string(b), `"name": "image"`, `"name": "pixels"`, 1))
				os.WriteFile(mf, b, 0o644)
				return []string{"run", "-c", l.config}, nil
			},
			want: []string{"el-defect", `"image" in the model, "pixels" in the manifest`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := writeConfig(t, "embedded", "")
			args, env := tc.setup(t, l)
			p := startEdgedEnv(t, env, args...)
			if code := p.wait(t, 60*time.Second); code != 1 {
				t.Fatalf("exit code %d, want 1", code)
			}
			out := p.output()
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, bad := range []string{"panic", "goroutine ", ".go:"} {
				if strings.Contains(out, bad) {
					t.Errorf("output has %q (a crash or stack trace):\n%s", bad, out)
				}
			}
		})
	}
}

// An external broker that is not there is reported clearly, and edged keeps inspecting
// and answers /readyz with the reason; it still stops cleanly.
func TestUnreachableBroker(t *testing.T) {
	l := writeConfig(t, "tcp://"+freeAddr(t), "")
	p := startEdged(t, "run", "-c", l.config)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.output(), "unreachable") {
		if time.Now().After(deadline) {
			t.Fatalf("no 'unreachable' line in 30s:\n%s", p.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(p.output(), strings.TrimPrefix(l.brokerURL, "tcp://")) {
		t.Errorf("the unreachable line does not name the broker %s", l.brokerURL)
	}
	resp, err := http.Get("http://" + l.httpAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz %d without a broker, want 503", resp.StatusCode)
	}
	if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	if strings.Contains(p.output(), "panic") {
		t.Fatal("panic in output")
	}
}

func TestValidateCommand(t *testing.T) {
	l := writeConfig(t, "embedded", "")
	p := startEdged(t, "validate", "-c", l.config)
	if code := p.wait(t, 30*time.Second); code != 0 || !strings.Contains(p.output(), "ok (1 sources, 1 inspections") {
		t.Fatalf("validate good config: code %d\n%s", code, p.output())
	}
	appendConfig(t, l, "pipeline: {workers: -1}\n")
	p = startEdged(t, "validate", "-c", l.config)
	if code := p.wait(t, 30*time.Second); code != 1 || !strings.Contains(p.output(), "pipeline.workers") {
		t.Fatalf("validate bad config: code %d\n%s", code, p.output())
	}
	p = startEdged(t, "validate", "-c", "../../config/demo.yaml")
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("validate demo config: code %d\n%s", code, p.output())
	}
}

func appendConfig(t *testing.T, l *testLine, s string) {
	t.Helper()
	f, err := os.OpenFile(l.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

func replaceConfig(t *testing.T, l *testLine, old, new string) {
	t.Helper()
	b, err := os.ReadFile(l.config)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("config lacks %q", old)
	}
	if err := os.WriteFile(l.config, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// installDemo lets edged install the bundled model into the test's repository, by
// running it once until it is ready.
func installDemo(t *testing.T, l *testLine) {
	t.Helper()
	p := startEdged(t, "run", "-c", l.config)
	waitReady(t, p, l.httpAddr)
	if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("first run exit %d", code)
	}
}

func activeVersion(t *testing.T, l *testLine) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(l.modelsDir, "el-defect", "active"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func startEdgedEnv(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	if len(env) == 0 {
		return startEdged(t, args...)
	}
	// The child inherits the test's environment.
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return startEdged(t, args...)
}
