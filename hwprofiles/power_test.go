package hwprofiles

import (
	"bufio"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// writeArchive writes out a testdata archive ("-- path --" lines, each followed by that
// file's text) into a temporary folder and returns the folder.
func writeArchive(t testing.TB, name string) string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	root := t.TempDir()
	var file *os.File
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "-- "); ok && strings.HasSuffix(p, " --") {
			if file != nil {
				file.Close()
			}
			p = filepath.Join(root, filepath.FromSlash(strings.TrimSuffix(p, " --")))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if file, err = os.Create(p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if file != nil {
			if _, err := file.WriteString(line + "\n"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if file != nil {
		file.Close()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return root
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestPowerMeterLayouts(t *testing.T) {
	tests := []struct {
		name    string
		root    string
		input   string
		rails   map[string]float64
		total   float64
		failing []string
	}{
		{
			name: "hwmon, Orin NX", root: "testdata/orin-nx", input: "VDD_IN",
			rails: map[string]float64{"VDD_IN": 5.064 * 1.416, "VDD_CPU_GPU_CV": 5.056 * 0.328, "VDD_SOC": 5.056 * 0.536},
			total: 5.064 * 1.416,
		},
		{
			// No input rail: the total is the sum; the "NC" channels are no rails; the
			// second monitor's rails keep their own names.
			name: "hwmon, AGX Orin", root: "testdata/agx-devkit", input: "",
			rails: map[string]float64{"VDD_GPU_SOC": 19.168 * 0.248, "VDD_CPU_CV": 19.168 * 0.040, "VIN_SYS_5V0": 5.024 * 0.760, "VDDQ_VDD2_1V8AO": 5.032 * 0.096},
			total: 19.168*0.248 + 19.168*0.040 + 5.024*0.760 + 5.032*0.096,
		},
		{
			// VDD_SOC's current does not read: skipped, the rest carry on; a negative
			// current at idle reads as 0 W.
			name: "hwmon, Orin Nano, a rail failing", root: "testdata/orin-nano", input: "VDD_IN",
			rails:   map[string]float64{"VDD_IN": 5.088 * 1.160, "VDD_CPU_GPU_CV": 0},
			total:   5.088 * 1.160,
			failing: []string{"VDD_SOC"},
		},
		{
			name: "iio, Xavier NX on JetPack 4", root: writeArchive(t, "xavier-nx-jp4.txtar"), input: "VDD_IN",
			rails: map[string]float64{"VDD_IN": 4.512, "VDD_CPU_GPU_CV": 0.815, "VDD_SOC": 1.385},
			total: 4.512,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewPedanticRegistry()
			m, err := NewPowerMeter(os.DirFS(tt.root), reg)
			if err != nil {
				t.Fatal(err)
			}
			if m == nil {
				t.Fatal("no meter on a tree with rails")
			}
			m.Log = slog.New(slog.DiscardHandler)
			if total, _, ok := m.Watts(); ok || total != 0 {
				t.Errorf("a reading before the first sample: %v", total)
			}
			m.Sample()
			if m.InputRail() != tt.input {
				t.Errorf("input rail %q, want %q", m.InputRail(), tt.input)
			}
			total, rails, ok := m.Watts()
			if !ok || !near(total, tt.total) {
				t.Errorf("total %v (ok %v), want %v", total, ok, tt.total)
			}
			if len(rails) != len(tt.rails) {
				t.Errorf("rails %v, want %v", rails, tt.rails)
			}
			for name, w := range tt.rails {
				if got, ok := rails[name]; !ok || !near(got, w) {
					t.Errorf("rail %s: %v W (read %v), want %v", name, got, ok, w)
				}
				if got := testutil.ToFloat64(m.watts.WithLabelValues(name)); !near(got, w) {
					t.Errorf("edged_board_power_watts{rail=%q} = %v, want %v", name, got, w)
				}
			}
			if got := testutil.ToFloat64(m.watts.WithLabelValues(RailTotal)); !near(got, tt.total) {
				t.Errorf(`edged_board_power_watts{rail="total"} = %v, want %v`, got, tt.total)
			}
			failing := m.Failing()
			if len(failing) != len(tt.failing) {
				t.Errorf("failing %v, want %v", failing, tt.failing)
			}
			for _, name := range tt.failing {
				if err := failing[name]; err == nil || !strings.Contains(err.Error(), "curr3_input") {
					t.Errorf("failing[%s] = %v, want the file named", name, err)
				}
			}
			// Series: one per rail that read, plus the total.
			if n := testutil.CollectAndCount(reg, "edged_board_power_watts"); n != len(tt.rails)+1 {
				t.Errorf("%d power series, want %d", n, len(tt.rails)+1)
			}
		})
	}
}

func TestPowerMeterNoRails(t *testing.T) {
	for _, root := range []string{"testdata/raspberry-pi", "testdata/xavier-nx", "testdata/tegra-only"} {
		reg := prometheus.NewRegistry()
		m, err := NewPowerMeter(os.DirFS(root), reg)
		if err != nil || m != nil {
			t.Fatalf("%s: meter %v, err %v; want nil, nil", root, m, err)
		}
		// A nil meter is usable: the daemon wires it the same way everywhere.
		if total, rails, ok := m.Watts(); ok || total != 0 || rails != nil {
			t.Errorf("nil meter: Watts() = %v, %v, %v", total, rails, ok)
		}
		if err := m.Run(context.Background(), time.Second); err != nil {
			t.Errorf("nil meter: Run: %v", err)
		}
		if n := testutil.CollectAndCount(reg); n != 0 {
			t.Errorf("%s: %d metrics registered without rails", root, n)
		}
	}
}

func TestPowerMeterRegisterTwice(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewPowerMeter(os.DirFS("testdata/orin-nx"), reg); err != nil {
		t.Fatal(err)
	}
	_, err := NewPowerMeter(os.DirFS("testdata/orin-nx"), reg)
	if err == nil || !strings.Contains(err.Error(), "register board power metrics") {
		t.Fatalf("second meter on one registry: %v", err)
	}
}

// flakyFS fails reads of the files named in fail, as a disabled INA3221 channel or a
// busy I2C bus does.
type flakyFS struct {
	fs.FS
	fail map[string]bool
}

func (f flakyFS) Open(name string) (fs.File, error) {
	if f.fail[name] {
		return nil, &fs.PathError{Op: "read", Path: name, Err: errors.New("no data available")}
	}
	return f.FS.Open(name)
}

func TestPowerMeterRailComesAndGoes(t *testing.T) {
	const dir = "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1/"
	mem := fstest.MapFS{
		dir + "in1_label": {Data: []byte("VDD_IN\n")}, dir + "in1_input": {Data: []byte("5000\n")}, dir + "curr1_input": {Data: []byte("2000\n")},
		dir + "in2_label": {Data: []byte("VDD_SOC\n")}, dir + "in2_input": {Data: []byte("5000\n")}, dir + "curr2_input": {Data: []byte("400\n")},
	}
	fsys := flakyFS{FS: mem, fail: map[string]bool{}}
	reg := prometheus.NewRegistry()
	m, err := NewPowerMeter(fsys, reg)
	if err != nil || m == nil {
		t.Fatalf("meter %v, err %v", m, err)
	}
	var logged strings.Builder
	m.Log = slog.New(slog.NewTextHandler(&logged, nil))
	clock := time.Unix(1000, 0)
	m.now = func() time.Time { return clock }
	step := func() { clock = clock.Add(2 * time.Second); m.Sample() }

	// The first sample starts the integral: 10 W for 2 s is 20 J.
	step()
	if j := m.Joules(); j != 0 {
		t.Errorf("energy %v J after one sample", j)
	}
	j0 := m.Joules()
	step()
	if got := m.Joules() - j0; !near(got, 20) {
		t.Errorf("energy over 2 s at 10 W: %v J, want 20", got)
	}

	fsys.fail[dir+"curr2_input"] = true
	step()
	if _, rails, ok := m.Watts(); !ok || len(rails) != 1 {
		t.Errorf("with VDD_SOC failing: rails %v ok %v", rails, ok)
	}
	if n := testutil.CollectAndCount(reg, "edged_board_power_watts"); n != 2 {
		t.Errorf("%d series while VDD_SOC fails, want 2 (VDD_IN and total)", n)
	}
	step() // still failing: no second warning
	if c := strings.Count(logged.String(), "does not read"); c != 1 {
		t.Errorf("%d warnings for one failing rail over two samples, want 1:\n%s", c, logged.String())
	}
	if !strings.Contains(logged.String(), "rail=VDD_SOC") || !strings.Contains(logged.String(), "curr2_input") {
		t.Errorf("the warning does not name the rail and the file:\n%s", logged.String())
	}

	delete(fsys.fail, dir+"curr2_input")
	step()
	if !strings.Contains(logged.String(), "reads again") || len(m.Failing()) != 0 {
		t.Errorf("recovery not noted: %v\n%s", m.Failing(), logged.String())
	}

	// The input rail failing leaves no total: a sum of the branches would under-report.
	fsys.fail[dir+"in1_input"] = true
	step()
	if total, _, ok := m.Watts(); ok {
		t.Errorf("total %v reported without VDD_IN", total)
	}
	if n := testutil.CollectAndCount(reg, "edged_board_power_watts"); n != 1 {
		t.Errorf("%d series without VDD_IN, want 1 (VDD_SOC)", n)
	}
	j1 := m.Joules()
	delete(fsys.fail, dir+"in1_input")
	step()
	step()
	// The integral restarts after the gap instead of bridging it.
	if got := m.Joules() - j1; !near(got, 20) {
		t.Errorf("energy after the gap: %v J, want 20", got)
	}
	if got := testutil.ToFloat64(m.energy); !near(got, m.Joules()) {
		t.Errorf("edged_board_energy_joules_total %v, Joules() %v", got, m.Joules())
	}
}

func TestPowerMeterRun(t *testing.T) {
	m, err := NewPowerMeter(os.DirFS("testdata/orin-nx"), nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Log = slog.New(slog.DiscardHandler)
	if err := m.Run(context.Background(), 0); err == nil || !strings.Contains(err.Error(), "0s") {
		t.Fatalf("Run with interval 0: %v", err)
	}
	// The clock counts the samples Run takes; the test ends Run after three.
	samples := 0
	ctx, cancel := context.WithCancel(context.Background())
	m.now = func() time.Time {
		samples++
		if samples == 3 { // the sample at start and two ticks
			cancel()
		}
		return time.Now()
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, time.Millisecond) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("Run did not sample three times in 10 s")
	}
	if m.Joules() <= 0 {
		t.Errorf("no energy after %d samples", samples)
	}
}

func TestParseSysfsInt(t *testing.T) {
	for in, want := range map[string]int64{"5064\n": 5064, "-8\n": -8, "0": 0, " 12 \n": 12} {
		if got, err := ParseSysfsInt([]byte(in)); err != nil || got != want {
			t.Errorf("ParseSysfsInt(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "\n", "5.0", "0x10", "VDD_IN"} {
		if _, err := ParseSysfsInt([]byte(in)); err == nil {
			t.Errorf("ParseSysfsInt(%q): no error", in)
		}
	}
}

// BenchmarkPowerMeterSample measures one sample of the Orin NX's three rails (six sysfs
// reads), what the daemon spends per interval.
func BenchmarkPowerMeterSample(b *testing.B) {
	m, err := NewPowerMeter(os.DirFS("testdata/orin-nx"), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	m.Log = slog.New(slog.DiscardHandler)
	b.ReportAllocs()
	for b.Loop() {
		m.Sample()
	}
}
