package hwprofiles

import (
	"bufio"
	"bytes"
	"io/fs"
	"path"
	"slices"
	"strings"
)

// providerLibraries are the shared libraries each GPU execution provider needs besides
// libonnxruntime itself: ONNX Runtime's provider plugins, which it loads from its own
// folder (the onnxruntime-node build has none, JetPack's onnxruntime-gpu has them), and
// the CUDA, cuDNN and TensorRT libraries those link to. A name matches any version
// suffix ("libcudart.so" matches libcudart.so.12).
var providerLibraries = map[string][]string{
	ProviderTensorRT: {"libonnxruntime_providers_shared.so", "libonnxruntime_providers_tensorrt.so", "libnvinfer.so", "libnvonnxparser.so", "libcudart.so"},
	ProviderCUDA:     {"libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so", "libcudart.so", "libcublas.so", "libcudnn.so"},
}

// libraryDirs are the folders a Jetson (JetPack 5 and 6) and a Debian or Ubuntu machine
// with CUDA keep these libraries in, relative to the root.
var libraryDirs = []string{
	"usr/lib/aarch64-linux-gnu",
	"usr/lib/aarch64-linux-gnu/tegra",
	"usr/lib/aarch64-linux-gnu/nvidia",
	"usr/local/cuda/lib64",
	"usr/local/cuda/targets/aarch64-linux/lib",
	"usr/lib/x86_64-linux-gnu",
	"usr/local/cuda/targets/x86_64-linux/lib",
	"usr/local/lib/edged",
	"usr/local/lib",
	"usr/lib64",
	"usr/lib",
	"lib",
}

// ldConfDir holds the dynamic loader's extra folders, one per line in each *.conf.
const ldConfDir = "etc/ld.so.conf.d"

// ProviderCheck says whether one execution provider's libraries were found.
type ProviderCheck struct {
	Provider string
	// Found maps each library name to the path it was found at (under the root).
	Found map[string]string
	// Missing lists the libraries found nowhere, in the order the provider needs them.
	Missing []string
}

// OK reports whether every library was found, so the provider should load.
func (c ProviderCheck) OK() bool { return len(c.Missing) == 0 }

// FallsBackTo names the provider that takes over when checks[i] does not load: the next
// one whose libraries were all found, CPU at the latest.
func FallsBackTo(checks []ProviderCheck, i int) string {
	for _, later := range checks[i+1:] {
		if later.OK() {
			return later.Provider
		}
	}
	return ProviderCPU
}

// CheckProviders looks for the libraries of each provider in providers (CPU needs none)
// under fsys: in extraDirs first (the ONNX Runtime library's folder, the entries of
// LD_LIBRARY_PATH; absolute paths, read relative to the root), then the folders of
// /etc/ld.so.conf.d, then the usual ones. Finding a library does not prove it loads;
// missing one proves the provider will not.
func CheckProviders(fsys fs.FS, providers []string, extraDirs []string) []ProviderCheck {
	dirs := searchDirs(fsys, extraDirs)
	var out []ProviderCheck
	for _, p := range providers {
		c := ProviderCheck{Provider: p, Found: map[string]string{}}
		for _, lib := range providerLibraries[p] {
			if found := findIn(fsys, dirs, lib); found != "" {
				c.Found[lib] = found
			} else {
				c.Missing = append(c.Missing, lib)
			}
		}
		out = append(out, c)
	}
	return out
}

// searchDirs returns the folders to search, as paths within fsys, each once.
func searchDirs(fsys fs.FS, extra []string) []string {
	var dirs []string
	add := func(d string) {
		d = strings.TrimPrefix(path.Clean("/"+strings.TrimSpace(d)), "/")
		// Glob patterns are built from these; a folder with pattern characters in its
		// name is not one the loader's usual places have.
		if d == "" || strings.ContainsAny(d, `*?[\`) || !fs.ValidPath(d) || slices.Contains(dirs, d) {
			return
		}
		dirs = append(dirs, d)
	}
	for _, d := range extra {
		// Relative LD_LIBRARY_PATH entries depend on the working directory; skip them.
		if strings.HasPrefix(d, "/") {
			add(d)
		}
	}
	confs, _ := fs.Glob(fsys, ldConfDir+"/*.conf")
	slices.Sort(confs)
	for _, c := range confs {
		if b, err := fs.ReadFile(fsys, c); err == nil {
			for _, d := range ParseLdSoConf(b) {
				add(d)
			}
		}
	}
	for _, d := range libraryDirs {
		add(d)
	}
	return dirs
}

// ParseLdSoConf returns the folders a dynamic loader config file lists: absolute paths,
// one a line, with comments and include lines left out.
func ParseLdSoConf(b []byte) []string {
	var dirs []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "/") {
			dirs = append(dirs, line)
		}
	}
	return dirs
}

// FindLibrary looks for lib (any version suffix) where CheckProviders looks, and returns
// its path under the root, or "".
func FindLibrary(fsys fs.FS, lib string, extraDirs []string) string {
	return findIn(fsys, searchDirs(fsys, extraDirs), lib)
}

// findIn returns "/dir/lib*" of the first folder that has lib, or "".
func findIn(fsys fs.FS, dirs []string, lib string) string {
	for _, d := range dirs {
		matches, err := fs.Glob(fsys, d+"/"+lib+"*")
		if err != nil || len(matches) == 0 {
			continue
		}
		slices.Sort(matches)
		return "/" + matches[0]
	}
	return ""
}
