package inference

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// EnvORTLibrary names the environment variable that points at libonnxruntime.so.
const EnvORTLibrary = "ONNXRUNTIME_SHARED_LIBRARY_PATH"

// ortDirName is the folder `make ort` fills, relative to the source tree.
const ortDirName = "third_party/onnxruntime"

// LibraryChoice says which ONNX Runtime library was picked and why.
type LibraryChoice struct {
	Path string
	// From is "config runtime.ort_library", "$ONNXRUNTIME_SHARED_LIBRARY_PATH",
	// "make ort folder" or "system path".
	From string
}

// FindORTLibrary picks the ONNX Runtime library: the configured path, then the
// environment variable, then the folder `make ort` fills (found next to the executable or
// above the working directory), then the system paths. An explicit choice that does not
// exist is an error, never silently replaced by a later candidate. The error for no
// library lists every place tried.
func FindORTLibrary(configured string) (LibraryChoice, error) {
	if configured != "" {
		if err := isFile(configured); err != nil {
			return LibraryChoice{}, fmt.Errorf("runtime.ort_library %q: %w; set it to the path of libonnxruntime.so, or leave it empty to search (`make ort` fills the default folder)", configured, err)
		}
		return LibraryChoice{configured, "config runtime.ort_library"}, nil
	}
	if p := os.Getenv(EnvORTLibrary); p != "" {
		if err := isFile(p); err != nil {
			return LibraryChoice{}, fmt.Errorf("$%s=%q: %w; point it at libonnxruntime.so or unset it", EnvORTLibrary, p, err)
		}
		return LibraryChoice{p, "$" + EnvORTLibrary}, nil
	}
	var tried []string
	for _, p := range makeFolderCandidates() {
		if isFile(p) == nil {
			return LibraryChoice{p, "make ort folder"}, nil
		}
		tried = append(tried, p)
	}
	for _, p := range systemCandidates() {
		if isFile(p) == nil {
			return LibraryChoice{p, "system path"}, nil
		}
		tried = append(tried, p)
	}
	return LibraryChoice{}, fmt.Errorf("no ONNX Runtime library found (tried runtime.ort_library, $%s, %s); run `make ort`, or set runtime.ort_library to the path of libonnxruntime.so",
		EnvORTLibrary, strings.Join(tried, ", "))
}

func isFile(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return errors.New("no such file")
		}
		return err
	}
	if st.IsDir() {
		return errors.New("is a directory, not the library file")
	}
	return nil
}

// ortArchDir is the npm package's name for this machine's architecture.
func ortArchDir() string {
	switch runtime.GOARCH {
	case "amd64":
		return "linux-x64"
	default:
		return "linux-" + runtime.GOARCH
	}
}

func makeFolderCandidates() []string {
	rel := filepath.Join(ortDirName, ortArchDir(), "libonnxruntime.so.1")
	var out []string
	seen := map[string]bool{}
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	// bin/edged sits one level below the source tree.
	if exe, err := os.Executable(); err == nil {
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			add(filepath.Join(filepath.Dir(filepath.Dir(exe)), rel))
		}
	}
	// Tests and `go run` start somewhere inside the source tree.
	if wd, err := os.Getwd(); err == nil {
		for dir := wd; ; dir = filepath.Dir(dir) {
			p := filepath.Join(dir, rel)
			if isFile(p) == nil {
				add(p)
				break
			}
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	return out
}

func systemCandidates() []string {
	return []string{
		"/usr/local/lib/edged/libonnxruntime.so.1",
		"/usr/local/lib/libonnxruntime.so.1",
		"/usr/local/lib/libonnxruntime.so",
		"/usr/lib/libonnxruntime.so.1",
		"/usr/lib/libonnxruntime.so",
		filepath.Join("/usr/lib", debianMultiarch(), "libonnxruntime.so.1"),
	}
}

func debianMultiarch() string {
	switch runtime.GOARCH {
	case "amd64":
		return "x86_64-linux-gnu"
	case "arm64":
		return "aarch64-linux-gnu"
	default:
		return runtime.GOARCH + "-linux-gnu"
	}
}
