package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edgedrun/edged/drivers/sim"
	"github.com/edgedrun/edged/hwprofiles"
)

// TestBadConfigs parses every testdata/*.bad.yaml; each line of the sibling .bad.err file
// must appear in the error.
func TestBadConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/*.bad.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no testdata/*.bad.yaml")
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".bad.yaml")
		t.Run(name, func(t *testing.T) {
			want, err := os.ReadFile(strings.TrimSuffix(f, ".yaml") + ".err")
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := Load(f)
			if err == nil {
				t.Fatalf("no error; config %+v", cfg)
			}
			msg := err.Error()
			for _, line := range strings.Split(strings.TrimSpace(string(want)), "\n") {
				if !strings.Contains(msg, line) {
					t.Errorf("error lacks %q; got:\n%s", line, msg)
				}
			}
			// Every line of the error names the file, so a long list stays readable.
			for _, line := range strings.Split(msg, "\n") {
				if !strings.HasPrefix(line, f+": ") {
					t.Errorf("error line %q does not start with the file name", line)
				}
			}
		})
	}
}

func TestGoodConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/*.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no testdata/*.good.yaml")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range cfg.Sources {
				if _, ok := s.Driver.(*sim.Config); !ok {
					t.Errorf("sources[%d].Driver is %T", i, s.Driver)
				}
			}
		})
	}
}

func TestPlantConfig(t *testing.T) {
	cfg, err := Load("testdata/plant.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MQTT.KeepAlive.Std() != time.Minute || cfg.MQTT.QoS != 2 || cfg.MQTT.ClientID != "el-station-2" {
		t.Errorf("mqtt %+v", cfg.MQTT)
	}
	if got := cfg.Sources[0].Spec(); got.Name != "cam-a" || got.Budget != 250*time.Millisecond {
		t.Errorf("sources[0].Spec() = %+v", got)
	}
	a := cfg.Sources[0].Driver.(*sim.Config)
	b := cfg.Sources[1].Driver.(*sim.Config)
	// The merge key carries cam-a's block into cam-b's, which overrides some keys;
	// what neither sets keeps the driver's default.
	if a.RateHz != 5 || a.Width != 256 || a.Seed != 7 || a.DefectRate != 0.1 {
		t.Errorf("cam-a %+v", a)
	}
	if b.RateHz != 5 || b.Width != 256 || b.Seed != 8 || b.DefectRate != 0.5 || !slices.Equal(b.Defects, []string{"crack"}) {
		t.Errorf("cam-b %+v", b)
	}
	if cfg.Inspections[0].Threshold != 0.35 {
		t.Errorf("threshold %v", cfg.Inspections[0].Threshold)
	}
}

func TestDemoConfig(t *testing.T) {
	cfg, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{
		"site":            cfg.Node.Site == "demo-site",
		"line":            cfg.Node.Line == "line-1",
		"node name":       cfg.Node.Name != "",
		"broker":          cfg.MQTT.Broker == BrokerEmbedded,
		"embedded listen": cfg.MQTT.EmbeddedListen == "127.0.0.1:1883",
		"http listen":     cfg.HTTP.Listen == "127.0.0.1:8080",
		"client id":       cfg.MQTT.ClientID == "edged-demo-site-line-1-"+cfg.Node.Name,
		"one source":      len(cfg.Sources) == 1 && cfg.Sources[0].Name == "cell-cam" && cfg.Sources[0].Type == "sim",
		"inspection":      len(cfg.Inspections) == 1 && reflect.DeepEqual(cfg.Inspections[0], Inspection{Name: "el-defect", Source: "cell-cam", Model: "el-defect", FailSafe: FailSafeDivert}) && cfg.Sources[0].Backpressure == BackpressureBlock,
	}
	for what, ok := range want {
		if !ok {
			t.Errorf("demo config: %s is not as documented: %+v", what, cfg)
		}
	}
	s := cfg.Sources[0].Driver.(*sim.Config)
	if s.RateHz != 20 || s.DefectRate != 0.1 || s.Seed != 1 {
		t.Errorf("demo sim block %+v", s)
	}
	if !strings.Contains(string(DemoYAML()), "# edged demo config") {
		t.Error("DemoYAML lost its comments")
	}
}

// TestDemoShowsDefaults keeps demo.yaml and the code's defaults in step: the demo spells
// out every default, so a config that gives only sources and inspections must come out
// the same.
func TestDemoShowsDefaults(t *testing.T) {
	demo, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	minimal, err := Load("testdata/minimal.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// YAML's [] is an empty list where the code's default is nil; both mean none.
	demo.Runtime.ExecutionProviders = nil
	demo.Models.TrustedKeys = nil
	if !reflect.DeepEqual(demo, minimal) {
		t.Errorf("demo.yaml and the defaults differ:\ndemo    %+v\ndefault %+v", demo, minimal)
	}
	if !reflect.DeepEqual(demo.Sources[0].Driver, sim.DefaultConfig()) {
		t.Errorf("demo sim block %+v is not the driver's defaults %+v", demo.Sources[0].Driver, sim.DefaultConfig())
	}
}

// TestEveryKeyDocumented checks that demo.yaml and the README name every key the
// config type has, so a new key cannot be added without its documentation.
func TestEveryKeyDocumented(t *testing.T) {
	ref, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	var walk func(t reflect.Type, path string)
	walk = func(t reflect.Type, path string) {
		f := fieldsOf(t)
		for _, name := range f.names {
			ft := f.fields[name]
			p := join(path, name)
			keys = append(keys, p)
			if ft.Kind() == reflect.Struct && !leafType(ft) {
				walk(ft, p)
			}
			if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct && !leafType(ft.Elem()) {
				walk(ft.Elem(), p+"[]")
			}
		}
	}
	walk(reflect.TypeFor[file](), "")
	walk(reflect.TypeFor[Source](), "sources[]")
	walk(reflect.TypeFor[sim.Config](), "sources[].sim")
	var doc yaml.Node
	if err := yaml.Unmarshal(demoYAML, &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if !strings.Contains(string(ref), "`"+k+"`") {
			t.Errorf("the README's configuration reference lacks `%s`", k)
		}
		last := k[strings.LastIndexAny(k, ".]")+1:]
		if !strings.Contains(string(demoYAML), last+":") {
			t.Errorf("demo.yaml lacks %s", k)
		}
	}
}

func TestApplyProfile(t *testing.T) {
	cfg, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Runtime.IntraOpThreads = 3 // set in the file: the profile must not override it
	p, err := hwprofiles.Get("jetson-orin-nx")
	if err != nil {
		t.Fatal(err)
	}
	cfg.ApplyProfile(p)
	rt, pl := cfg.Runtime, cfg.Pipeline
	if rt.IntraOpThreads != 3 || rt.InterOpThreads != 1 || rt.Spinning != SpinningOff {
		t.Errorf("runtime %+v", rt)
	}
	if !slices.Equal(rt.ExecutionProviders, []string{"TensorRT", "CUDA", "CPU"}) {
		t.Errorf("execution providers %v", rt.ExecutionProviders)
	}
	if pl.RingSize != 64 || pl.Workers != 2 || pl.MaxBatch != 8 || pl.MaxWait.Std() != 2*time.Millisecond || pl.Breaker != DefaultBreaker {
		t.Errorf("pipeline %+v", pl)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("after ApplyProfile: %v", err)
	}
	rt.ExecutionProviders[0] = "changed"
	if p.Runtime.ExecutionProviders[0] != "TensorRT" {
		t.Error("ApplyProfile shares the profile's provider list")
	}

	p.Runtime.Spinning = true
	cfg, _ = Default()
	cfg.ApplyProfile(p)
	if cfg.Runtime.Spinning != SpinningOn {
		t.Errorf("spinning %q with a spinning profile", cfg.Runtime.Spinning)
	}
	cfg.ApplyProfile(nil)
}

func TestValidateProgrammatic(t *testing.T) {
	cfg, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Sources = append(cfg.Sources,
		Source{Name: "no-driver", Type: "sim", VerdictBudget: Duration(time.Second)},
		Source{Name: "wrong-driver", Type: "sim", VerdictBudget: Duration(time.Second), Driver: &struct{}{}},
		Source{Name: "odd-type", Type: "plc", VerdictBudget: Duration(time.Second)},
	)
	err = cfg.Validate()
	for _, want := range []string{
		"sources[1].sim: no driver config",
		"sources[2].sim: driver config is *struct {}, not *sim.Config",
		`sources[3].type: unknown driver type "plc" (known: sim, sim_vibration)`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("testdata/does-not-exist.yaml")
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "does-not-exist.yaml") {
		t.Fatalf("error %v", err)
	}
}

func TestDurationYAML(t *testing.T) {
	var v struct {
		D Duration `yaml:"d"`
	}
	if err := yaml.Unmarshal([]byte("d: 1m30s"), &v); err != nil || v.D.Std() != 90*time.Second {
		t.Fatalf("1m30s: %v, %v", v.D, err)
	}
	out, err := yaml.Marshal(v)
	if err != nil || string(out) != "d: 1m30s\n" {
		t.Fatalf("marshal: %q, %v", out, err)
	}
	for in, want := range map[string]string{
		"d: 30":        `"30" has no unit`,
		"d: soon":      `"soon" is not a duration`,
		"d: [1s, 2s]":  "want a duration like 500ms, 10s or 1m, not a list",
		"d: {a: 1}":    "not a mapping",
		"d: -5x":       `"-5x" is not a duration`,
		"d: 1e3":       `"1e3" has no unit`,
		"d: 10000000h": `"10000000h" is not a duration`,
	} {
		if err := yaml.Unmarshal([]byte(in), &v); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", in, err, want)
		}
	}
}

func TestPrefixed(t *testing.T) {
	joined := errors.Join(errors.New("a: 1"), errors.Join(errors.New("b: 2"), errors.New("c: 3")))
	got := prefixed("x.", joined).Error()
	if got != "x.a: 1\nx.b: 2\nx.c: 3" {
		t.Errorf("joined: %q", got)
	}
	// Several %w with text around them stay one error.
	wrapped := fmt.Errorf("both %w and %w", errors.New("a"), errors.New("b"))
	if got := prefixed("x: ", wrapped).Error(); got != "x: both a and b" {
		t.Errorf("wrapped: %q", got)
	}
	inner := errors.New("inner")
	if !errors.Is(prefixed("x: ", errors.Join(inner, errors.New("other"))), inner) {
		t.Error("prefixed lost a wrapped error")
	}
	if prefixed("x", nil) != nil {
		t.Error("prefixed(nil) is not nil")
	}
}

// TestCheckerBudget feeds nested aliases ("billion laughs") to a type that would expand
// them all: the check must stop early with an error.
func TestCheckerBudget(t *testing.T) {
	doc := `a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
`
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(doc), &n); err != nil {
		t.Fatal(err)
	}
	type bomb struct {
		H [][][][][][][][]string `yaml:"h"`
	}
	var c checker
	start := time.Now()
	c.check(n.Content[0], reflect.TypeFor[bomb](), "")
	// Keys a to g are unknown to the type, h is the bomb.
	if got := errors.Join(c.errs...); len(c.errs) != 8 ||
		!strings.Contains(got.Error(), "h[0][0]") ||
		!strings.Contains(got.Error(), "more than 200000 values after expanding aliases") {
		t.Fatalf("%d errors, the last %v", len(c.errs), c.errs[len(c.errs)-1])
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the check took %v", d)
	}
}

// TestCheckerInline covers the yaml.v3 tag rules the config types do not use but driver
// configs may: inline structs, inline maps, "-" and untagged fields.
func TestCheckerInline(t *testing.T) {
	type base struct {
		Host string `yaml:"host"`
	}
	type withInline struct {
		base    `yaml:",inline"`
		Port    int
		Skipped string         `yaml:"-"`
		Extra   map[string]int `yaml:",inline"`
	}
	var n yaml.Node
	if err := yaml.Unmarshal([]byte("host: h\nport: 1\nother: 2\nskipped: x\nbad: y\n"), &n); err != nil {
		t.Fatal(err)
	}
	var c checker
	c.check(n.Content[0], reflect.TypeFor[withInline](), "x")
	got := errors.Join(c.errs...)
	if got == nil || !strings.Contains(got.Error(), `x.skipped: "x" is not an integer`) ||
		!strings.Contains(got.Error(), `x.bad: "y" is not an integer`) || len(c.errs) != 2 {
		t.Fatalf("errors %v", got)
	}
}

func TestFaultsCapped(t *testing.T) {
	var b strings.Builder
	b.WriteString("node:\n")
	for i := range 200 {
		fmt.Fprintf(&b, "  key%d: x\n", i)
	}
	_, err := Parse([]byte(b.String()))
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != maxFaults+1 || lines[maxFaults] != "more than 50 faults; fix these first" {
		t.Fatalf("%d lines, the last %q", len(lines), lines[len(lines)-1])
	}
}
