// Package hwprofiles provides the hardware profiles edged ships with and the detection of
// the board it runs on. A profile holds the defaults that depend on the hardware: ONNX
// Runtime threads, spinning and execution providers, ring size, worker count and batch
// size, the memory budget and, on Jetson, the nvpmodel power mode. The config fills every
// setting left at zero from the profile.
//
// Profiles are YAML files embedded from profiles/, decoded strictly. Two kinds exist:
//   - board profiles (the Jetson Orin family) name their core count and thread counts;
//   - generic profiles (x86-64, arm64, riscv64) have cores: 0 and leave the thread counts
//     to Adapt, which works them out from the cores found at start, because the same
//     profile covers a 2-core gateway and a 32-core server.
//
// Resolve is the entry point for the daemon: "auto" detects the board, any other name
// loads that profile; both adapt it to the cores found.
//
// The package also reads what the board says about itself beyond the profile, all of it
// from a root file system given as an fs.FS so tests and support run it on copied trees:
// the Jetson power rails (PowerMeter, exported as edged_board_power_watts), the nvpmodel
// power mode (ReadPowerMode, ParseNVPModelQuery) and whether the GPU execution
// providers' libraries are installed (CheckProviders).
package hwprofiles

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

//go:embed profiles/*.yaml
var files embed.FS

// Auto is the profile name that asks for detection.
const Auto = "auto"

// Execution providers, in the spelling ONNX Runtime's API uses for them.
const (
	ProviderTensorRT = "TensorRT"
	ProviderCUDA     = "CUDA"
	ProviderCPU      = "CPU"
)

// Providers lists the execution providers a profile or config may name.
func Providers() []string { return []string{ProviderTensorRT, ProviderCUDA, ProviderCPU} }

// Profile is one hardware profile.
type Profile struct {
	// Name is the file name without .yaml, and what `hwprofile:` in the config names.
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// Arch is the GOARCH the profile is for.
	Arch string `yaml:"arch"`
	// Cores is the board's core count; 0 in the file marks a generic profile, which
	// Adapt sets to the cores found.
	Cores          int      `yaml:"cores"`
	Runtime        Runtime  `yaml:"runtime"`
	Pipeline       Pipeline `yaml:"pipeline"`
	MemoryBudgetMB int      `yaml:"memory_budget_mb"`
	// PowerMode is the nvpmodel mode name the profile's numbers were chosen for, on
	// Jetson; empty elsewhere. edged does not change the power mode itself.
	PowerMode string `yaml:"power_mode"`

	// generic is set when the file has cores: 0; it survives Adapt setting Cores.
	generic bool
}

// Runtime holds the ONNX Runtime session settings.
type Runtime struct {
	IntraOpThreads int `yaml:"intra_op_threads"`
	InterOpThreads int `yaml:"inter_op_threads"`
	// Spinning lets idle intra-op threads busy-wait for work: lower latency for a core
	// each kept busy.
	Spinning bool `yaml:"spinning"`
	// ExecutionProviders in order of preference; CPU comes last as the fallback.
	ExecutionProviders []string `yaml:"execution_providers"`
}

// Pipeline holds the pipeline sizes.
type Pipeline struct {
	// RingSize is the capacity of each source's ring, in frames.
	RingSize int `yaml:"ring_size"`
	// Workers is the number of concurrent inference workers.
	Workers int `yaml:"workers"`
	// MaxBatch is the largest batch one inference run takes.
	MaxBatch int `yaml:"max_batch"`
}

// Generic reports whether the profile covers a whole architecture rather than one board.
func (p *Profile) Generic() bool { return p.generic }

// Names lists the embedded profiles, sorted.
func Names() []string {
	entries, err := fs.ReadDir(files, "profiles")
	if err != nil {
		// The embedded directory exists whenever the package compiles.
		panic(fmt.Sprintf("hwprofiles: read embedded profiles: %v", err))
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".yaml"); ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// Get returns a fresh copy of the named profile, as written in its file (not adapted to
// this machine). An unknown name is an error listing the known ones.
func Get(name string) (*Profile, error) {
	if !slices.Contains(Names(), name) {
		return nil, fmt.Errorf("unknown hardware profile %q (known: %s)", name, strings.Join(Names(), ", "))
	}
	b, err := files.ReadFile(path.Join("profiles", name+".yaml"))
	if err != nil {
		return nil, fmt.Errorf("read hardware profile %q: %w", name, err)
	}
	p, err := parse(b)
	if err != nil {
		return nil, fmt.Errorf("hardware profile %q: %w", name, err)
	}
	if p.Name != name {
		return nil, fmt.Errorf("hardware profile %q: file names itself %q", name, p.Name)
	}
	return p, nil
}

// parse decodes one profile strictly and validates it.
func parse(b []byte) (*Profile, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var p Profile
	if err := dec.Decode(&p); err != nil {
		return nil, err
	}
	if err := dec.Decode(new(yaml.Node)); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document")
	}
	p.generic = p.Cores == 0
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

var profileName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// Validate names each bad field and its value.
func (p *Profile) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !profileName.MatchString(p.Name) {
		bad("name: %q is not lowercase letters, digits and dashes", p.Name)
	}
	if !slices.Contains([]string{"amd64", "arm64", "riscv64"}, p.Arch) {
		bad("arch: %q is not one of amd64, arm64, riscv64", p.Arch)
	}
	if p.Cores < 0 || p.Cores > 1024 {
		bad("cores: %d is out of range 0..1024", p.Cores)
	}
	// A generic profile leaves intra-op threads to Adapt; a board profile must say.
	minIntra := 1
	if p.generic {
		minIntra = 0
	}
	if p.Runtime.IntraOpThreads < minIntra || p.Runtime.IntraOpThreads > 256 {
		bad("runtime.intra_op_threads: %d is out of range %d..256", p.Runtime.IntraOpThreads, minIntra)
	}
	if p.Runtime.InterOpThreads < 1 || p.Runtime.InterOpThreads > 256 {
		bad("runtime.inter_op_threads: %d is out of range 1..256", p.Runtime.InterOpThreads)
	}
	eps := p.Runtime.ExecutionProviders
	if len(eps) == 0 || eps[len(eps)-1] != ProviderCPU {
		bad("runtime.execution_providers: %v does not end with %s, the fallback", eps, ProviderCPU)
	}
	for i, ep := range eps {
		if !slices.Contains(Providers(), ep) {
			bad("runtime.execution_providers[%d]: %q is not one of %s", i, ep, strings.Join(Providers(), ", "))
		} else if slices.Index(eps, ep) != i {
			bad("runtime.execution_providers[%d]: %q is listed twice", i, ep)
		}
	}
	if p.Pipeline.RingSize < 1 || p.Pipeline.RingSize > 1<<16 {
		bad("pipeline.ring_size: %d is out of range 1..65536", p.Pipeline.RingSize)
	}
	if p.Pipeline.Workers < 1 || p.Pipeline.Workers > 256 {
		bad("pipeline.workers: %d is out of range 1..256", p.Pipeline.Workers)
	}
	if p.Pipeline.MaxBatch < 1 || p.Pipeline.MaxBatch > p.Pipeline.RingSize {
		bad("pipeline.max_batch: %d is out of range 1..ring_size (%d)", p.Pipeline.MaxBatch, p.Pipeline.RingSize)
	}
	if p.MemoryBudgetMB < 64 {
		bad("memory_budget_mb: %d is below 64", p.MemoryBudgetMB)
	}
	return errors.Join(errs...)
}

// maxIntraOp caps intra-op threads: the small CNNs edged runs stop getting faster past
// about four threads, while each extra thread adds synchronisation and takes a core from
// the other workers and the drivers.
const maxIntraOp = 4

// threadPlan splits n cores between up to `workers` concurrent inference sessions.
//
// On one or two cores it runs one worker with one intra-op thread and no spinning: a
// second thread only contends with the drivers and the publisher, and a spinning thread
// would starve them. With more cores each worker gets an equal share of all cores but one
// (kept for the drivers, publisher and HTTP server), at least one and at most maxIntraOp
// threads, and threads spin only while the total fits in that share, so no spinning
// thread ever waits for a core.
func threadPlan(n, workers int) (w, intra int, spin bool) {
	if n <= 2 {
		return 1, 1, false
	}
	w = max(1, min(workers, n/2))
	intra = max(1, min(maxIntraOp, (n-1)/w))
	return w, intra, intra*w <= n-1
}

// Adapt fits the profile to a machine with numCPU usable cores and returns a line for
// each change. A generic profile takes its cores, intra-op threads, spinning and workers
// from threadPlan. A board profile is left as written unless fewer cores are online than
// it expects (a smaller module of the family, or a power mode that parks cores); then its
// workers and threads are lowered to what threadPlan allows, never raised.
func (p *Profile) Adapt(numCPU int) []string {
	numCPU = max(1, numCPU)
	rt, pl := &p.Runtime, &p.Pipeline
	if p.generic {
		pl.Workers, rt.IntraOpThreads, rt.Spinning = threadPlan(numCPU, pl.Workers)
		p.Cores = numCPU
		return []string{fmt.Sprintf("generic profile on %d cores: %d workers × %d intra-op threads, spinning %s",
			numCPU, pl.Workers, rt.IntraOpThreads, onOff(rt.Spinning))}
	}
	if numCPU >= p.Cores {
		return nil
	}
	w, intra, spin := threadPlan(numCPU, pl.Workers)
	line := fmt.Sprintf("%d of the profile's %d cores online", numCPU, p.Cores)
	p.Cores = numCPU
	pl.Workers = min(pl.Workers, w)
	rt.IntraOpThreads = min(rt.IntraOpThreads, intra)
	rt.Spinning = rt.Spinning && spin
	return []string{fmt.Sprintf("%s: %d workers × %d intra-op threads, spinning %s",
		line, pl.Workers, rt.IntraOpThreads, onOff(rt.Spinning))}
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// Resolve returns the profile the daemon should use: the detected one when name is Auto
// or empty, else the named one, adapted to numCPU cores either way, with the reasons.
func Resolve(name string, fsys fs.FS, goarch string, numCPU int) (*Profile, []string, error) {
	if name == Auto || name == "" {
		return Detect(fsys, goarch, numCPU)
	}
	p, err := Get(name)
	if err != nil {
		return nil, nil, err
	}
	reasons := []string{fmt.Sprintf("profile %s named in the config", name)}
	if p.Arch != goarch {
		reasons = append(reasons, fmt.Sprintf("profile %s is for %s but this build is for %s", name, p.Arch, goarch))
	}
	return p, append(reasons, p.Adapt(numCPU)...), nil
}
