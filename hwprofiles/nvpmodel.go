package hwprofiles

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
)

// Files nvpmodel keeps its state in, relative to the root: the mode catalogue and the
// mode last set ("pmode:0002 fmode:quiet").
const (
	nvpmodelConf   = "etc/nvpmodel.conf"
	nvpmodelStatus = "var/lib/nvpmodel/status"
)

// PowerMode is a Jetson nvpmodel power mode.
type PowerMode struct {
	// ID is the mode number (nvpmodel -m ID); -1 when only the name is known.
	ID int
	// Name is the mode's name in nvpmodel.conf ("MAXN", "15W", "MAXN_SUPER"); "" when
	// only the number is known.
	Name string
	// From says where it was read: "nvpmodel -q" or the state files.
	From string
}

func (m PowerMode) String() string {
	switch {
	case m.Name != "" && m.ID >= 0:
		return fmt.Sprintf("%s (mode %d)", m.Name, m.ID)
	case m.Name != "":
		return m.Name
	default:
		return fmt.Sprintf("mode %d", m.ID)
	}
}

// ParseNVPModelQuery reads the output of `nvpmodel -q`: a line "NV Power Mode: NAME"
// followed by the mode number on a line of its own; warnings may come before them.
func ParseNVPModelQuery(out []byte) (PowerMode, error) {
	mode := PowerMode{ID: -1, From: "nvpmodel -q"}
	sc := bufio.NewScanner(bytes.NewReader(out))
	named := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if name, ok := strings.CutPrefix(line, "NV Power Mode:"); ok {
			mode.Name = strings.TrimSpace(name)
			named = true
			continue
		}
		if named && mode.ID < 0 {
			if id, err := strconv.Atoi(line); err == nil && id >= 0 {
				mode.ID = id
			}
		}
	}
	if err := sc.Err(); err != nil {
		return PowerMode{}, fmt.Errorf("nvpmodel -q output: %w", err)
	}
	if mode.Name == "" {
		return PowerMode{}, fmt.Errorf("nvpmodel -q output %q has no \"NV Power Mode:\" line", clip(out))
	}
	return mode, nil
}

// ParseNVPModelStatus reads nvpmodel's state file, "pmode:0002" optionally followed by
// other fields ("fmode:quiet"), and returns the mode number.
func ParseNVPModelStatus(b []byte) (int, error) {
	for _, field := range strings.Fields(string(b)) {
		if v, ok := strings.CutPrefix(field, "pmode:"); ok {
			id, err := strconv.Atoi(v)
			if err != nil || id < 0 {
				return 0, fmt.Errorf("nvpmodel status: pmode %q is not a mode number", v)
			}
			return id, nil
		}
	}
	return 0, fmt.Errorf("nvpmodel status %q has no pmode field", clip(b))
}

// ParseNVPModelConf returns the mode names by number from nvpmodel.conf, whose mode
// definitions are lines "< POWER_MODEL ID=0 NAME=MAXN >".
func ParseNVPModelConf(b []byte) map[int]string {
	names := map[int]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		inner, ok := strings.CutPrefix(line, "<")
		if !ok {
			continue
		}
		inner, ok = strings.CutSuffix(inner, ">")
		if !ok {
			continue
		}
		fields := strings.Fields(inner)
		if len(fields) == 0 || fields[0] != "POWER_MODEL" {
			continue
		}
		id, name := -1, ""
		for _, f := range fields[1:] {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "ID":
				if n, err := strconv.Atoi(v); err == nil && n >= 0 {
					id = n
				}
			case "NAME":
				if !strings.ContainsAny(v, "<>") {
					name = v
				}
			}
		}
		if id >= 0 && name != "" {
			if _, dup := names[id]; !dup {
				names[id] = name
			}
		}
	}
	return names
}

// ReadPowerMode returns the power mode nvpmodel last set, from its state files under
// fsys, for boxes where `nvpmodel -q` cannot run (a container, a copied tree). ok is
// false when there is no status file: not a Jetson, or nvpmodel never ran.
func ReadPowerMode(fsys fs.FS) (mode PowerMode, ok bool, err error) {
	status := readSmall(fsys, nvpmodelStatus)
	if status == "" {
		return PowerMode{}, false, nil
	}
	id, err := ParseNVPModelStatus([]byte(status))
	if err != nil {
		return PowerMode{}, false, fmt.Errorf("%s: %w", nvpmodelStatus, err)
	}
	mode = PowerMode{ID: id, From: "/" + nvpmodelStatus}
	if conf, err := fs.ReadFile(fsys, nvpmodelConf); err == nil {
		mode.Name = ParseNVPModelConf(conf)[id]
		mode.From += " and /" + nvpmodelConf
	}
	return mode, true, nil
}

// clip shortens outside bytes quoted in an error.
func clip(b []byte) string {
	const n = 80
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}
