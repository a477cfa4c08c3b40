package hwprofiles

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
)

// Files Detect reads, relative to the root of the file system it is given (os.DirFS("/")
// on a live machine), so tests can point it at a fixture tree.
const (
	modelFile      = "proc/device-tree/model"
	compatibleFile = "proc/device-tree/compatible"
	tegraFile      = "etc/nv_tegra_release"
)

// archProfiles maps GOARCH to the generic profile for it.
var archProfiles = map[string]string{
	"amd64":   "x86-64",
	"arm64":   "arm64",
	"riscv64": "riscv64",
}

// Detect picks the profile for the machine whose root file system is fsys: a Jetson board
// profile when the device tree names an Orin module, else the generic profile for goarch.
// It adapts the profile to numCPU cores and returns a human line for each clue it used.
// It fails only when goarch has no profile.
func Detect(fsys fs.FS, goarch string, numCPU int) (*Profile, []string, error) {
	var reasons []string
	model := readSmall(fsys, modelFile)
	if model != "" {
		reasons = append(reasons, fmt.Sprintf("model file says %q", model))
	}
	compatible := readSmall(fsys, compatibleFile)
	tegra := readSmall(fsys, tegraFile)
	if tegra != "" {
		release, _, _ := strings.Cut(tegra, "\n")
		reasons = append(reasons, fmt.Sprintf("nv_tegra_release says %q", strings.TrimSpace(strings.TrimPrefix(release, "#"))))
	}

	board := jetsonFromModel(model)
	if board == "" {
		if board = jetsonFromCompatible(compatible); board != "" {
			reasons = append(reasons, fmt.Sprintf("device tree compatible list names %s", board))
		}
	}
	isJetson := tegra != "" || strings.Contains(strings.ToLower(model), "jetson") || strings.Contains(compatible, "nvidia,tegra")
	switch {
	case board != "" && goarch != "arm64":
		// Only an arm64 build can use the board's libraries; a fixture or a chroot on
		// another architecture must not get a Jetson profile.
		reasons = append(reasons, fmt.Sprintf("ignoring the Jetson board: this build is for %s", goarch))
		board = ""
	case board == "" && isJetson:
		reasons = append(reasons, "a Jetson without a board profile of its own (Orin AGX, NX and Nano have one)")
	}

	name := board
	if name == "" {
		var ok bool
		if name, ok = archProfiles[goarch]; !ok {
			return nil, reasons, fmt.Errorf("no hardware profile for arch %s (known: %s)", goarch, strings.Join(Names(), ", "))
		}
		reasons = append(reasons, fmt.Sprintf("arch %s: generic profile %s", goarch, name))
	}
	p, err := Get(name)
	if err != nil {
		return nil, reasons, err
	}
	return p, append(reasons, p.Adapt(numCPU)...), nil
}

// jetsonFromModel maps the device tree model string to a board profile. NVIDIA writes it
// as "NVIDIA Jetson AGX Orin Developer Kit", "NVIDIA Jetson Orin NX Engineering Reference
// Developer Kit", "NVIDIA Jetson Orin Nano Developer Kit" and variants with memory sizes
// or "Super" appended.
func jetsonFromModel(model string) string {
	m := strings.Join(strings.Fields(strings.ToLower(model)), " ")
	if !strings.Contains(m, "jetson") || !strings.Contains(m, "orin") {
		return ""
	}
	switch {
	case strings.Contains(m, "agx orin") || strings.Contains(m, "orin agx"):
		return "jetson-orin-agx"
	case strings.Contains(m, "orin nx"):
		return "jetson-orin-nx"
	case strings.Contains(m, "orin nano"):
		return "jetson-orin-nano"
	}
	return ""
}

// jetsonFromCompatible maps the device tree compatible list (NUL-separated) to a board
// profile by module part number, for images whose model string was changed by a carrier
// board vendor: P3701 is AGX Orin; P3767 SKUs 0000 and 0001 are Orin NX, 0003 to 0005
// Orin Nano.
func jetsonFromCompatible(compatible string) string {
	for _, c := range strings.FieldsFunc(compatible, func(r rune) bool { return r == 0 || r == '\n' }) {
		c = strings.ToLower(strings.TrimSpace(c))
		// Carrier and module are also joined in one entry, "nvidia,p3768-0000+p3767-0005";
		// the module is the part after the plus.
		if _, module, ok := strings.Cut(c, "+"); ok {
			c = "nvidia," + module
		}
		switch {
		case strings.HasPrefix(c, "nvidia,p3701-"):
			return "jetson-orin-agx"
		case c == "nvidia,p3767-0000" || c == "nvidia,p3767-0001":
			return "jetson-orin-nx"
		case c == "nvidia,p3767-0003" || c == "nvidia,p3767-0004" || c == "nvidia,p3767-0005":
			return "jetson-orin-nano"
		}
	}
	return ""
}

// maxClueSize bounds what Detect reads of one file; the real ones are under 200 bytes.
const maxClueSize = 4096

// readSmall returns a file's text with the device tree's trailing NULs and surrounding
// space trimmed, or "" when it is missing or unreadable: a missing clue is normal.
func readSmall(fsys fs.FS, name string) string {
	f, err := fsys.Open(name)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxClueSize))
	if err != nil && !errors.Is(err, io.EOF) {
		return ""
	}
	b = bytes.TrimRight(b, "\x00")
	return strings.TrimSpace(string(b))
}
