package hwprofiles

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The two sysfs layouts of the INA3221 power monitors on Jetson modules, relative to the
// root of the file system NewPowerMeter is given.
const (
	// hwmonDriverDir is the upstream hwmon driver, on Orin with JetPack 5 and 6 (and
	// Xavier with JetPack 5): per channel N in 1..3, inN_label names the rail, inN_input
	// is its bus voltage in mV and currN_input its current in mA. in4..in6 are the shunt
	// voltages and in7 their sum ("sum of shunt voltages"), none of them a rail.
	hwmonDriverDir = "sys/bus/i2c/drivers/ina3221"
	// iioDriverDir is NVIDIA's older iio driver (JetPack 4 and before): per channel N
	// from 0, rail_name_N names the rail and in_powerN_input is its power in mW.
	iioDriverDir = "sys/bus/i2c/drivers/ina3221x"
)

// RailTotal is the rail label of the board's total power.
const RailTotal = "total"

// inputRails are the rail names of the module's whole input, where the board has one
// (Orin NX and Nano: VDD_IN; the original Nano calls it POM_5V_IN). Without one (AGX
// Orin measures only its branches) the total is the sum of the rails.
var inputRails = []string{"VDD_IN", "POM_5V_IN"}

// rail is one measured supply: either a power file (iio), or a voltage and a current file
// (hwmon) whose product is the power.
type rail struct {
	name               string
	power, volts, amps string
}

// PowerMeter reads the board's INA3221 power rails and exports them as
// edged_board_power_watts{rail}. A nil *PowerMeter is a board without rails: Run returns
// at once and Watts reports nothing, so callers need no special case.
type PowerMeter struct {
	// Log gets a line when a rail stops or starts reading again (not on every
	// sample); nil means slog.Default().
	Log *slog.Logger

	fsys  fs.FS
	rails []rail
	input string // the input rail's name, or "" to sum the rails
	now   func() time.Time
	watts *prometheus.GaugeVec
	// energy integrates the total power between samples, so a dashboard gets images
	// per joule over any window as rate(frames)/rate(energy).
	energy prometheus.Counter

	mu      sync.Mutex
	total   float64
	byRail  map[string]float64
	ok      bool
	joules  float64
	last    time.Time // time of the last sample with a total, zero before
	failing map[string]error
}

// NewPowerMeter finds the INA3221 rails under fsys (os.DirFS("/") on a live box) and
// registers the power gauge with reg (nil registers nothing). It returns nil and no error
// when there are none: not a Jetson, or one whose monitors the kernel does not expose.
// It reads no values: Run and Sample do.
func NewPowerMeter(fsys fs.FS, reg prometheus.Registerer) (*PowerMeter, error) {
	rails, err := findRails(fsys)
	if err != nil {
		return nil, err
	}
	if len(rails) == 0 {
		return nil, nil
	}
	m := &PowerMeter{
		fsys:  fsys,
		rails: rails,
		now:   time.Now,
		watts: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edged_board_power_watts",
			Help: `Board power by INA3221 rail, in watts; rail="total" is the board's input (VDD_IN, or the sum of the rails where the board has no input rail).`,
		}, []string{"rail"}),
		energy: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edged_board_energy_joules_total",
			Help: "Energy the board took since edged started, integrated from the total power samples, in joules.",
		}),
		failing: map[string]error{},
	}
	for _, r := range rails {
		if slices.Contains(inputRails, r.name) {
			m.input = r.name
			break
		}
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.watts, m.energy} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register board power metrics: %w", err)
			}
		}
	}
	return m, nil
}

// Rails lists the rail names found, in sysfs order.
func (m *PowerMeter) Rails() []string {
	if m == nil {
		return nil
	}
	names := make([]string, len(m.rails))
	for i, r := range m.rails {
		names[i] = r.name
	}
	return names
}

// InputRail names the rail that is the board's total, or "" when the total is the sum.
func (m *PowerMeter) InputRail() string {
	if m == nil {
		return ""
	}
	return m.input
}

// Run samples the rails at once and then every interval until ctx ends, then returns
// nil. It starts no goroutines.
func (m *PowerMeter) Run(ctx context.Context, every time.Duration) error {
	if m == nil {
		return nil
	}
	if every <= 0 {
		return fmt.Errorf("board power sampling interval %v: must be positive", every)
	}
	m.Sample()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			m.Sample()
		}
	}
}

// Watts returns the last sample: the board total, each rail that read, and whether there
// is a total at all (false on a nil meter, or when the input rail, or every rail, failed).
func (m *PowerMeter) Watts() (total float64, rails map[string]float64, ok bool) {
	if m == nil {
		return 0, nil, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.total, maps.Clone(m.byRail), m.ok
}

// Joules returns the energy integrated since the meter was made.
func (m *PowerMeter) Joules() float64 {
	if m == nil {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.joules
}

// Failing returns each rail whose last read failed, with why; such rails are left out of
// the gauge and of a summed total until they read again.
func (m *PowerMeter) Failing() map[string]error {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.failing)
}

// Sample reads every rail once and updates the gauge, the energy and what Watts
// returns. Run calls it; a one-off report (edged hw) calls it alone.
func (m *PowerMeter) Sample() {
	if m == nil {
		return
	}
	now := m.now()
	read := make(map[string]float64, len(m.rails))
	failed := map[string]error{}
	for _, r := range m.rails {
		w, err := r.read(m.fsys)
		if err != nil {
			failed[r.name] = err
			continue
		}
		read[r.name] = w
	}
	total, ok := 0.0, false
	if m.input != "" {
		total, ok = read[m.input]
	} else if len(read) > 0 {
		for _, w := range read {
			total += w
		}
		ok = true
	}

	m.mu.Lock()
	prevTotal, prevOK, last := m.total, m.ok, m.last
	m.total, m.byRail, m.ok = total, read, ok
	if ok && prevOK && !last.IsZero() {
		if dt := now.Sub(last).Seconds(); dt > 0 {
			j := (prevTotal + total) / 2 * dt
			m.joules += j
			m.energy.Add(j)
		}
	}
	if ok {
		m.last = now
	} else {
		m.last = time.Time{}
	}
	var newly, recovered []string
	for name, err := range failed {
		if _, was := m.failing[name]; !was {
			newly = append(newly, name)
		}
		m.failing[name] = err
	}
	for name := range m.failing {
		if _, still := failed[name]; !still {
			recovered = append(recovered, name)
			delete(m.failing, name)
		}
	}
	m.mu.Unlock()

	for name, w := range read {
		m.watts.WithLabelValues(name).Set(w)
	}
	// A rail that does not read drops out of the series rather than repeating its last
	// value, which would look like a steady draw.
	for name := range failed {
		m.watts.DeleteLabelValues(name)
	}
	if ok {
		m.watts.WithLabelValues(RailTotal).Set(total)
	} else {
		m.watts.DeleteLabelValues(RailTotal)
	}

	log := m.Log
	if log == nil {
		log = slog.Default()
	}
	slices.Sort(newly)
	for _, name := range newly {
		log.Warn("board power rail does not read; skipping it", "rail", name, "err", failed[name])
	}
	slices.Sort(recovered)
	for _, name := range recovered {
		log.Info("board power rail reads again", "rail", name)
	}
}

// read returns the rail's power in watts.
func (r rail) read(fsys fs.FS) (float64, error) {
	if r.power != "" {
		mw, err := readInt(fsys, r.power)
		if err != nil {
			return 0, err
		}
		return nonNegative(float64(mw) / 1e3), nil
	}
	mv, err := readInt(fsys, r.volts)
	if err != nil {
		return 0, err
	}
	ma, err := readInt(fsys, r.amps)
	if err != nil {
		return 0, err
	}
	return nonNegative(float64(mv) * float64(ma) / 1e6), nil
}

// nonNegative clips a reading to 0: at idle the shunt's offset makes some rails read a
// few milliamps below zero, and power does not flow back into the board.
func nonNegative(w float64) float64 { return max(w, 0) }

// findRails lists the rails of both layouts, sorted by path so the order is stable.
func findRails(fsys fs.FS) ([]rail, error) {
	var rails []rail
	seen := map[string]bool{}
	add := func(r rail, device string) {
		// Two monitors may name a rail alike; the device keeps the series apart.
		if seen[r.name] {
			r.name += "@" + device
		}
		seen[r.name] = true
		rails = append(rails, r)
	}

	labels, err := fs.Glob(fsys, hwmonDriverDir+"/*/hwmon/hwmon*/in*_label")
	if err != nil {
		return nil, fmt.Errorf("find INA3221 rails under %s: %w", hwmonDriverDir, err)
	}
	slices.Sort(labels)
	for _, p := range labels {
		dir, file := path.Split(p)
		n := strings.TrimSuffix(strings.TrimPrefix(file, "in"), "_label")
		// The INA3221 has three channels; the other labelled input is the shunt sum.
		if n != "1" && n != "2" && n != "3" {
			continue
		}
		name, err := readLabel(fsys, p)
		if err != nil || skipLabel(name) {
			continue
		}
		add(rail{name: name, volts: dir + "in" + n + "_input", amps: dir + "curr" + n + "_input"}, deviceOf(p, hwmonDriverDir))
	}

	names, err := fs.Glob(fsys, iioDriverDir+"/*/iio:device*/rail_name_*")
	if err != nil {
		return nil, fmt.Errorf("find INA3221 rails under %s: %w", iioDriverDir, err)
	}
	slices.Sort(names)
	for _, p := range names {
		dir, file := path.Split(p)
		n := strings.TrimPrefix(file, "rail_name_")
		if _, err := strconv.Atoi(n); err != nil {
			continue
		}
		name, err := readLabel(fsys, p)
		if err != nil || skipLabel(name) {
			continue
		}
		add(rail{name: name, power: dir + "in_power" + n + "_input"}, deviceOf(p, iioDriverDir))
	}
	return rails, nil
}

// skipLabel is true for channels that carry no rail: unlabelled ones and those the
// device tree marks "NC" (not connected, as on AGX Orin's second monitor).
func skipLabel(name string) bool { return name == "" || name == "NC" }

// deviceOf returns the I2C device ("1-0040") of a path under a driver folder.
func deviceOf(p, driverDir string) string {
	dev, _, _ := strings.Cut(strings.TrimPrefix(p, driverDir+"/"), "/")
	return dev
}

// maxSysfsValue bounds a read of one sysfs attribute; real ones are a few bytes.
const maxSysfsValue = 64

func readSysfs(fsys fs.FS, name string) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSysfsValue))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return b, nil
}

func readLabel(fsys fs.FS, name string) (string, error) {
	b, err := readSysfs(fsys, name)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(strings.TrimRight(string(b), "\x00")), nil
}

func readInt(fsys fs.FS, name string) (int64, error) {
	b, err := readSysfs(fsys, name)
	if err != nil {
		return 0, err
	}
	v, err := ParseSysfsInt(b)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return v, nil
}

// errEmptyValue is a sysfs attribute that reads as nothing.
var errEmptyValue = errors.New("empty value")

// ParseSysfsInt parses one integer attribute as the kernel writes it: decimal, an
// optional sign, a trailing newline.
func ParseSysfsInt(b []byte) (int64, error) {
	s := strings.TrimSpace(string(b))
	if s == "" {
		return 0, errEmptyValue
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("value %q is not an integer", s)
	}
	return v, nil
}
