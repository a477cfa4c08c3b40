// Package jetson_test checks the files that put edged on a box: the systemd unit with
// systemd-analyze, the scripts with shellcheck, and install.sh, upgrade.sh and
// uninstall.sh run for real against a folder that stands in for the box's file system,
// with a stand-in edged (testdata/standin) that serves /readyz or fails to start.
package jetson_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// need fails the test when a command is missing, naming the Debian package that has it.
func need(t *testing.T, cmd, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(cmd)
	if err != nil {
		t.Fatalf("%s not found: apt-get install -y %s", cmd, pkg)
	}
	return p
}

// standin builds testdata/standin as an edged of the given version; mode "broken" exits 1
// at start, "refuse" refuses every config.
func standin(t *testing.T, dir, version, mode string) string {
	t.Helper()
	goCmd := need(t, "go", "golang-go")
	out := filepath.Join(dir, "edged-"+version+"-"+mode)
	cmd := exec.Command(goCmd, "build", "-o", out, "-ldflags", "-X main.version="+version+" -X main.mode="+mode, "./testdata/standin")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the stand-in edged: %v\n%s", err, b)
	}
	return out
}

// box is a folder standing in for a box's file system, and what the scripts are run with.
type box struct {
	t    *testing.T
	root string
	env  []string
}

func newBox(t *testing.T) *box {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	b := &box{t: t, root: root, env: append(os.Environ(), "ROOT="+root, "SERVICE=direct")}
	// An edged that upgrade.sh started must not outlive the test, whatever failed.
	t.Cleanup(func() {
		pid, err := os.ReadFile(b.path("/run/edged/edged.pid"))
		if err != nil {
			return
		}
		if n, err := strconv.Atoi(strings.TrimSpace(string(pid))); err == nil {
			_ = syscall.Kill(n, syscall.SIGKILL)
		}
	})
	return b
}

func (b *box) path(p string) string { return filepath.Join(b.root, p) }

func (b *box) write(p, content string) {
	b.t.Helper()
	if err := os.MkdirAll(filepath.Dir(b.path(p)), 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(b.path(p), []byte(content), 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// run runs one of the scripts; it returns the output and the exit status.
func (b *box) run(script string, args ...string) (string, int) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "./"+script, args...)
	cmd.Env = b.env
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee) && ctx.Err() == nil:
		return string(out), ee.ExitCode()
	default:
		b.t.Fatalf("%s %s: %v\n%s", script, strings.Join(args, " "), err, out)
		return "", -1
	}
}

func (b *box) mustRun(script string, args ...string) string {
	b.t.Helper()
	out, code := b.run(script, args...)
	if code != 0 {
		b.t.Fatalf("%s %s: exit %d\n%s", script, strings.Join(args, " "), code, out)
	}
	return out
}

// tree is every path under the root with its mode and content hash (or link target).
func (b *box) tree() map[string]string {
	b.t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(b.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		v := info.Mode().String()
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			v += " -> " + target
		case info.Mode().IsRegular():
			v += " " + hashFile(b.t, p)
		}
		m[strings.TrimPrefix(p, b.root)] = v
		return nil
	})
	if err != nil {
		b.t.Fatal(err)
	}
	return m
}

func hashFile(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	return hashFile(t, a) == hashFile(t, b)
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// freeAddr is a loopback address with a port the kernel just handed out.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func config(addr string) string {
	return "# test line\nhttp:\n  listen: " + addr + "\n  admin_token: \"\"\nmodels:\n  dir: var/models\nmqtt:\n  spool:\n    dir: var/spool\n"
}

func TestScriptsPassShellcheck(t *testing.T) {
	sc := need(t, "shellcheck", "shellcheck")
	for _, f := range []string{"install.sh", "upgrade.sh", "uninstall.sh", "deploy.sh", "../dist.sh"} {
		out, err := exec.Command(sc, "-x", f).CombinedOutput()
		if err != nil {
			t.Errorf("shellcheck %s: %v\n%s", f, err, out)
		}
	}
}

// unitKeys reads the key=value lines of a unit file, comments left out.
func unitKeys(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: line %q is not key=value", path, line)
		}
		keys[k] = append(keys[k], v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestUnitHardening(t *testing.T) {
	keys := unitKeys(t, "edged.service")
	want := map[string]string{
		"Type":             "simple",
		"User":             "edged",
		"ExecStart":        "/usr/local/bin/edged run -c /etc/edged/edged.yaml",
		"Restart":          "always",
		"NoNewPrivileges":  "yes",
		"ProtectSystem":    "strict",
		"ProtectHome":      "yes",
		"PrivateTmp":       "yes",
		"ReadWritePaths":   "/var/lib/edged",
		"StateDirectory":   "edged",
		"WorkingDirectory": "/var/lib/edged",
		"Environment":      "ONNXRUNTIME_SHARED_LIBRARY_PATH=/usr/local/lib/edged/libonnxruntime.so",
	}
	for k, v := range want {
		if got := keys[k]; len(got) != 1 || got[0] != v {
			t.Errorf("edged.service %s = %q, want %q", k, got, v)
		}
	}
	for _, k := range []string{"MemoryMax", "MemoryHigh", "TimeoutStopSec", "RestartSec"} {
		if len(keys[k]) != 1 {
			t.Errorf("edged.service: %s is not set once: %q", k, keys[k])
		}
	}
	// Without sd_notify in edged, a watchdog would kill a healthy service.
	for _, k := range []string{"WatchdogSec", "NotifyAccess"} {
		if len(keys[k]) != 0 {
			t.Errorf("edged.service sets %s, but edged does not call sd_notify", k)
		}
	}
}

// TestUnitVerifies runs systemd-analyze verify on the unit and the drop-ins install.sh
// wrote, with the paths pointed into the installed folder so the binary exists.
func TestUnitVerifies(t *testing.T) {
	sa := need(t, "systemd-analyze", "systemd")
	b := newBox(t)
	b.write("/proc/device-tree/model", "NVIDIA Jetson AGX Orin Developer Kit\x00")
	bin := standin(t, t.TempDir(), "1.0.0", "good")
	b.mustRun("install.sh", "--bin", bin, "--ort", bin, "--config", writeTemp(t, config("127.0.0.1:1")))

	dir := filepath.Join(t.TempDir(), "units")
	if err := os.MkdirAll(filepath.Join(dir, "edged.service.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	rewrite := strings.NewReplacer("/usr/local/bin/edged", b.path("/usr/local/bin/edged"), "/etc/edged/", b.path("/etc/edged")+"/")
	unit, err := os.ReadFile(b.path("/etc/systemd/system/edged.service"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "edged.service"), []byte(rewrite.Replace(string(unit))), 0o644); err != nil {
		t.Fatal(err)
	}
	dropins, err := filepath.Glob(b.path("/etc/systemd/system/edged.service.d/*.conf"))
	if err != nil || len(dropins) == 0 {
		t.Fatalf("install.sh wrote no drop-ins: %v", err)
	}
	for _, d := range dropins {
		c, err := os.ReadFile(d)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "edged.service.d", filepath.Base(d)), c, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(sa, "verify", "--man=no", filepath.Join(dir, "edged.service")).CombinedOutput()
	// verify exits 0 on unknown keys and bad values, which it only prints.
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify edged.service: %v\n%s", err, out)
	}
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "edged.yaml")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestInstallTwiceIsIdempotent(t *testing.T) {
	bins := t.TempDir()
	v1 := standin(t, bins, "1.0.0", "good")
	v2 := standin(t, bins, "2.0.0", "good")
	cfg := writeTemp(t, config("127.0.0.1:1"))
	b := newBox(t)
	b.write("/proc/device-tree/model", "NVIDIA Jetson Orin NX Engineering Reference Developer Kit\x00")
	b.write("/etc/nv_tegra_release", "# R36 (release), REVISION: 4.0\n")

	out := b.mustRun("install.sh", "--bin", v1, "--ort", v1, "--config", cfg)
	if !strings.Contains(out, "not enabled or started") {
		t.Errorf("install.sh with ROOT set does not say it left systemd alone:\n%s", out)
	}
	first := b.tree()
	b.mustRun("install.sh", "--bin", v1, "--ort", v1, "--config", cfg)
	second := b.tree()
	for p, v := range first {
		if second[p] != v {
			t.Errorf("second install changed %s: %q -> %q", p, v, second[p])
		}
	}
	for p := range second {
		if _, ok := first[p]; !ok {
			t.Errorf("second install added %s", p)
		}
	}

	for p, want := range map[string]string{
		"/usr/local/bin/edged":                               "",
		"/usr/local/lib/edged/libonnxruntime.so.1":           "",
		"/etc/systemd/system/edged.service":                  "ProtectSystem=strict",
		"/etc/systemd/system/edged.service.d/10-memory.conf": "MemoryMax=6G",
		"/etc/logrotate.d/edged":                             "/var/lib/edged/var/models/audit.log {",
		"/var/lib/edged/var/models":                          "",
		"/var/lib/edged/var/spool":                           "",
		"/etc/edged/edged.yaml":                              "# test line",
	} {
		if !exists(b.path(p)) {
			t.Errorf("install.sh did not make %s", p)
			continue
		}
		if want != "" {
			c, _ := os.ReadFile(b.path(p))
			if !strings.Contains(string(c), want) {
				t.Errorf("%s does not hold %q:\n%s", p, want, c)
			}
		}
	}
	if target, err := os.Readlink(b.path("/usr/local/lib/edged/libonnxruntime.so")); err != nil || target != "libonnxruntime.so.1" {
		t.Errorf("libonnxruntime.so -> %q (%v), want libonnxruntime.so.1", target, err)
	}
	lr, _ := os.ReadFile(b.path("/etc/logrotate.d/edged"))
	for _, want := range []string{"weekly", "rotate 27", "su edged edged", "nocreate"} {
		if !strings.Contains(string(lr), want) {
			t.Errorf("logrotate file lacks %q: 27 weekly files keep the audit log 180 days\n%s", want, lr)
		}
	}

	// An edited config and a drop-in of the administrator's stay; a new binary keeps the
	// old one as edged.prev.
	b.write("/etc/edged/edged.yaml", config("127.0.0.1:2")+"# edited on the box\n")
	b.write("/etc/systemd/system/edged.service.d/10-memory.conf", "[Service]\nMemoryMax=5G\n")
	out = b.mustRun("install.sh", "--bin", v2, "--ort", v1, "--config", cfg)
	if !strings.Contains(out, "keeping the config") {
		t.Errorf("install.sh does not say it kept the config:\n%s", out)
	}
	if c, _ := os.ReadFile(b.path("/etc/edged/edged.yaml")); !strings.Contains(string(c), "# edited on the box") {
		t.Errorf("install.sh replaced an existing config:\n%s", c)
	}
	if c, _ := os.ReadFile(b.path("/etc/systemd/system/edged.service.d/10-memory.conf")); string(c) != "[Service]\nMemoryMax=5G\n" {
		t.Errorf("install.sh replaced the administrator's drop-in:\n%s", c)
	}
	if !sameFile(t, b.path("/usr/local/bin/edged"), v2) || !sameFile(t, b.path("/usr/local/bin/edged.prev"), v1) {
		t.Errorf("after installing 2.0.0 over 1.0.0, edged is not 2.0.0 or edged.prev not 1.0.0")
	}
}

func TestInstallMemoryByBoard(t *testing.T) {
	bin := standin(t, t.TempDir(), "1.0.0", "good")
	cfg := writeTemp(t, config("127.0.0.1:1"))
	host := map[string]string{"amd64": "MemoryMax=3G", "arm64": "MemoryMax=1536M", "riscv64": "MemoryMax=768M"}[runtime.GOARCH]
	for _, tc := range []struct{ model, want string }{
		{"NVIDIA Jetson AGX Orin Developer Kit", "MemoryHigh=8G\nMemoryMax=12G"},
		{"NVIDIA Jetson Orin Nano Developer Kit", "MemoryHigh=2G\nMemoryMax=3G"},
		{"Raspberry Pi 4 Model B Rev 1.4", host},
		{"", host},
	} {
		t.Run(tc.model, func(t *testing.T) {
			b := newBox(t)
			if tc.model != "" {
				b.write("/proc/device-tree/model", tc.model+"\x00")
			}
			b.mustRun("install.sh", "--bin", bin, "--ort", bin, "--config", cfg)
			c, _ := os.ReadFile(b.path("/etc/systemd/system/edged.service.d/10-memory.conf"))
			if !strings.Contains(string(c), tc.want) {
				t.Errorf("10-memory.conf for %q lacks %q:\n%s", tc.model, tc.want, c)
			}
		})
	}
}

// TestInstallPrefersGPUOnnxRuntime: a GPU build on the box (NVIDIA's onnxruntime-gpu
// wheel) is used where it lies, so that its CUDA and TensorRT providers are found beside
// it; one older than edged can load is passed over.
func TestInstallPrefersGPUOnnxRuntime(t *testing.T) {
	bin := standin(t, t.TempDir(), "1.0.0", "good")
	cfg := writeTemp(t, config("127.0.0.1:1"))
	elf, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	b := newBox(t)
	// The pip wheel under /usr/local is looked at first: an old one there is passed over
	// for the one in the system's python.
	old := "/usr/local/lib/python3.10/dist-packages/onnxruntime/capi"
	gpu := "/usr/lib/python3/dist-packages/onnxruntime/capi/libonnxruntime.so.1.24.3"
	b.write(old+"/libonnxruntime_providers_cuda.so", "")
	b.write(old+"/libonnxruntime.so.1.16.0", string(elf))
	b.write(filepath.Dir(gpu)+"/libonnxruntime_providers_cuda.so", "")
	b.write(gpu, string(elf))

	out := b.mustRun("install.sh", "--bin", bin, "--config", cfg)
	if !strings.Contains(out, "1.16 is older than 1.24") {
		t.Errorf("install.sh does not say it passed over ONNX Runtime 1.16:\n%s", out)
	}
	c, err := os.ReadFile(b.path("/etc/systemd/system/edged.service.d/20-onnxruntime.conf"))
	if err != nil || !strings.Contains(string(c), "Environment=ONNXRUNTIME_SHARED_LIBRARY_PATH="+gpu+"\n") {
		t.Fatalf("20-onnxruntime.conf does not name %s (%v):\n%s", gpu, err, c)
	}
	if exists(b.path("/usr/local/lib/edged/libonnxruntime.so.1")) {
		t.Error("install.sh installed the bundled library beside the GPU build")
	}

	// Given --ort, the bundled library replaces the drop-in.
	b.mustRun("install.sh", "--bin", bin, "--ort", bin, "--config", cfg)
	if exists(b.path("/etc/systemd/system/edged.service.d/20-onnxruntime.conf")) {
		t.Error("20-onnxruntime.conf stayed after installing a library with --ort")
	}
}

func get(url string) (string, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)), err
}

// TestUpgradeRollbackUninstall walks a box through its life: install 1.0.0, upgrade to
// 2.0.0, an upgrade to a release that cannot start and its automatic rollback, an
// upgrade whose binary refuses the config, then uninstall with and without --purge.
func TestUpgradeRollbackUninstall(t *testing.T) {
	need(t, "curl", "curl")
	bins := t.TempDir()
	v1 := standin(t, bins, "1.0.0", "good")
	v2 := standin(t, bins, "2.0.0", "good")
	broken := standin(t, bins, "3.0.0", "broken")
	refusing := standin(t, bins, "4.0.0", "refuse")
	addr := freeAddr(t)
	b := newBox(t)
	b.mustRun("install.sh", "--bin", v1, "--ort", v1, "--config", writeTemp(t, config(addr)))
	audit := b.path("/var/lib/edged/var/models/audit.log")
	b.write("/var/lib/edged/var/models/audit.log", `{"action":"push","name":"el-defect","version":"1.0.0","result":"ok"}`+"\n")

	out := b.mustRun("upgrade.sh", "--bin", v2, "--timeout", "30")
	if v, err := get("http://" + addr + "/version"); err != nil || v != "2.0.0" {
		t.Fatalf("after upgrading to 2.0.0 the running edged is %q (%v)\n%s", v, err, out)
	}
	if !sameFile(t, b.path("/usr/local/bin/edged.prev"), v1) {
		t.Error("edged.prev is not the 1.0.0 it replaced")
	}

	out, code := b.run("upgrade.sh", "--bin", broken, "--timeout", "30")
	if code != 1 || !strings.Contains(out, "rolling back") || !strings.Contains(out, "rolled back") {
		t.Fatalf("upgrade to a binary that exits 1: exit %d, want 1 with a rollback\n%s", code, out)
	}
	if v, err := get("http://" + addr + "/version"); err != nil || v != "2.0.0" {
		t.Fatalf("after the rollback the running edged is %q (%v), want 2.0.0\n%s", v, err, out)
	}
	if !sameFile(t, b.path("/usr/local/bin/edged"), v2) || !sameFile(t, b.path("/usr/local/bin/edged.failed"), broken) {
		t.Error("after the rollback edged is not 2.0.0, or the broken binary is not kept as edged.failed")
	}

	out, code = b.run("upgrade.sh", "--bin", refusing, "--timeout", "30")
	if code != 1 || !strings.Contains(out, "nothing was changed") {
		t.Errorf("upgrade to a binary that refuses the config: exit %d, want 1, nothing changed\n%s", code, out)
	}
	if !sameFile(t, b.path("/usr/local/bin/edged"), v2) {
		t.Error("a refused upgrade replaced the binary")
	}
	if v, err := get("http://" + addr + "/version"); err != nil || v != "2.0.0" {
		t.Errorf("after a refused upgrade the running edged is %q (%v), want 2.0.0", v, err)
	}

	b.mustRun("uninstall.sh")
	if _, err := get("http://" + addr + "/readyz"); err == nil {
		t.Error("edged still answers after uninstall.sh")
	}
	for _, p := range []string{"/usr/local/bin/edged", "/usr/local/bin/edged.prev", "/usr/local/lib/edged", "/etc/systemd/system/edged.service", "/etc/systemd/system/edged.service.d/10-memory.conf"} {
		if exists(b.path(p)) {
			t.Errorf("uninstall.sh left %s", p)
		}
	}
	for _, p := range []string{"/etc/edged/edged.yaml", "/var/lib/edged/var/models/audit.log", "/etc/logrotate.d/edged"} {
		if !exists(b.path(p)) {
			t.Errorf("uninstall.sh without --purge removed %s", p)
		}
	}
	if c, _ := os.ReadFile(audit); !strings.Contains(string(c), "el-defect") {
		t.Error("uninstall.sh changed the audit log")
	}

	b.mustRun("uninstall.sh", "--purge")
	for _, p := range []string{"/etc/edged", "/var/lib/edged", "/etc/logrotate.d/edged"} {
		if exists(b.path(p)) {
			t.Errorf("uninstall.sh --purge left %s", p)
		}
	}
}

// TestContainerfile reads the container file without building it (building pulls NVIDIA's
// image): an L4T base, a non-root user, and sources that exist in the tree.
func TestContainerfile(t *testing.T) {
	f, err := os.Open("Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	args := map[string]string{}
	var from, user, entrypoint string
	var copies [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		expand := func(s string) string {
			for k, v := range args {
				s = strings.ReplaceAll(s, "${"+k+"}", v)
			}
			return s
		}
		switch fields[0] {
		case "ARG":
			if k, v, ok := strings.Cut(fields[1], "="); ok {
				args[k] = v
			}
		case "FROM":
			from = expand(fields[1])
		case "USER":
			user = fields[1]
		case "COPY":
			var c []string
			for _, x := range fields[1:] {
				c = append(c, expand(x))
			}
			copies = append(copies, c)
		case "ENTRYPOINT":
			entrypoint = strings.Join(fields[1:], " ")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(from, "nvcr.io/nvidia/l4t-jetpack:r36") && !strings.HasPrefix(from, "nvcr.io/nvidia/l4t-base:r36") {
		t.Errorf("FROM %q, want NVIDIA's L4T r36 image", from)
	}
	if user == "" || user == "root" || user == "0" {
		t.Errorf("USER %q: edged must not run as root in the container", user)
	}
	if entrypoint != `["/usr/local/bin/edged"]` {
		t.Errorf("ENTRYPOINT %s, want the edged binary", entrypoint)
	}
	want := map[string]string{
		"bin/edged-linux-arm64":                "/usr/local/bin/edged",
		"third_party/onnxruntime/linux-arm64/": "/usr/local/lib/edged/",
		"config/demo.yaml":                     "/etc/edged/edged.yaml",
	}
	for _, c := range copies {
		if len(c) != 2 || want[c[0]] != c[1] {
			t.Errorf("COPY %q is not one of %v", c, want)
		}
		delete(want, c[0])
	}
	for src := range want {
		t.Errorf("no COPY of %s", src)
	}
	if !exists("../../config/demo.yaml") {
		t.Error("the default CONFIG, config/demo.yaml, is not in the tree")
	}
}
