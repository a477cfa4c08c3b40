package dpi

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Action is what the proxy does with a frame that shows an anomaly.
type Action string

const (
	// ActionAlert forwards the frame and publishes an alert.
	ActionAlert Action = "alert"
	// ActionBlock drops the frame, answers the client with a Modbus exception where the
	// protocol allows one (see Proxy), and publishes an alert.
	ActionBlock Action = "block"
)

// Range is an inclusive address window of one table.
type Range struct {
	Table      Table
	Start, End uint16
}

// ClientPolicy is the allow-list of the clients whose address matches one of Addresses.
// The first policy (in Config.Clients order) that names a client's address applies to
// all its requests.
type ClientPolicy struct {
	Addresses []string // client IPs or CIDRs: "10.0.3.0/24", "127.0.0.1"
	Functions []uint8  // allowed function codes; empty: Config.DefaultFunctions
	ReadOnly  bool     // no function that changes the device (5, 6, 15, 16, 21, 22, 23)
	Writes    []Range  // when set, writes only inside these windows (Coils or HoldingRegisters)
	// Units, when set, are the unit identifiers these clients may address, in place
	// of Config.Units.
	Units []uint8
	// Ranges, when set, are the only data these clients may read or write, within
	// Config.Map: outside them a request is AddressOutOfRange (QuantityOutOfRange when
	// it starts inside and runs past the end).
	Ranges []Range
}

// Config configures one proxy. Zero values take the defaults documented per field.
type Config struct {
	Name        string        // the proxy's name in alerts, logs and metric labels; required
	Listen      string        // host:port the SCADA/HMI side connects to; required
	Upstream    string        // the PLC, host:port; required
	MaxClients  int           // default 16; clients beyond it are closed at once and counted
	IdleTimeout time.Duration // default 5m: a client that sends nothing this long is closed
	DialTimeout time.Duration // default 3s for the upstream connection

	// Units are the allowed unit identifiers; empty: any.
	Units []uint8
	// Map is the PLC's register map; empty: no address check. When set, a request
	// whose range starts in no Range of its table is AddressOutOfRange (a table with no
	// Range has no addresses), and one that starts inside but runs past the end is
	// QuantityOutOfRange. Adjacent and overlapping Ranges of a table are merged first.
	Map []Range
	// DefaultFunctions are the function codes allowed to clients no policy names;
	// default 1, 2, 3, 4, 5, 6, 15, 16, 22, 23 (so diagnostics 8, report server id 17
	// and device identification 43 are FunctionNotAllowed).
	DefaultFunctions []uint8
	Clients          []ClientPolicy
	// Actions per class; a class not named is ActionAlert.
	Actions map[Class]Action

	FloodRequests   int           // requests per client connection per FloodWindow; default 1000
	FloodExceptions int           // exception responses per client connection per FloodWindow; default 50
	FloodWindow     time.Duration // sliding window, default 1s

	// AlertEvery lets at most one alert per (class, client address) through per this
	// period, default 10s; the alerts held back are counted in the next one's Suppressed.
	AlertEvery time.Duration
	// Alerts is called for each alert not held back, from the connection's goroutine:
	// it must not block. nil: alerts are only logged.
	Alerts func(Alert)

	Registerer prometheus.Registerer // nil: metrics kept private
	Log        *slog.Logger          // nil: slog.Default()
}

// Defaults.
const (
	DefaultMaxClients      = 16
	DefaultIdleTimeout     = 5 * time.Minute
	DefaultDialTimeout     = 3 * time.Second
	DefaultFloodRequests   = 1000
	DefaultFloodExceptions = 50
	DefaultFloodWindow     = time.Second
	DefaultAlertEvery      = 10 * time.Second
)

var defaultFunctions = []uint8{1, 2, 3, 4, 5, 6, 15, 16, 22, 23}

// fnSet is a set of function codes, indexed by code.
type fnSet [256]bool

func makeFnSet(fcs []uint8) (s fnSet) {
	for _, fc := range fcs {
		s[fc] = true
	}
	return s
}

// span is an inclusive address window.
type span struct{ start, end uint16 }

// spans holds merged windows per table, indexed by Table.
type spans [InputRegisters + 1][]span

func makeSpans(rs []Range) spans {
	var s spans
	for _, r := range rs {
		s[r.Table] = append(s[r.Table], span{r.Start, r.End})
	}
	for t := range s {
		ws := s[t]
		slices.SortFunc(ws, func(a, b span) int { return int(a.start) - int(b.start) })
		var out []span
		for _, w := range ws {
			// Merging adjacent windows makes a range that crosses from one into the
			// next fit, as it does on the device.
			if n := len(out); n > 0 && uint32(w.start) <= uint32(out[n-1].end)+1 {
				out[n-1].end = max(out[n-1].end, w.end)
				continue
			}
			out = append(out, w)
		}
		s[t] = out
	}
	return s
}

// check says whether quantity items from addr fit in t's windows: "" when they do,
// AddressOutOfRange when addr is in no window, QuantityOutOfRange when the range starts
// in a window but runs past its end.
func (s *spans) check(t Table, addr, quantity uint16) Class {
	if t == TableNone || int(t) >= len(s) {
		return ""
	}
	last := uint32(addr) + uint32(max(quantity, 1)) - 1
	for _, w := range s[t] {
		if addr >= w.start && addr <= w.end {
			if last > uint32(w.end) {
				return QuantityOutOfRange
			}
			return ""
		}
	}
	return AddressOutOfRange
}

// clientRule is a compiled ClientPolicy.
type clientRule struct {
	prefixes  []netip.Prefix
	functions fnSet
	readOnly  bool
	writes    spans
	hasWrites bool
	// units replaces the proxy's unit list when hasUnits.
	hasUnits bool
	units    [256]bool
	// ranges narrows the map for these clients when hasRanges.
	hasRanges bool
	ranges    spans
}

// rules is the compiled, read-only policy of a proxy, shared by its connections.
type rules struct {
	anyUnit  bool
	units    [256]bool
	hasMap   bool
	regMap   spans
	fallback clientRule // clients no policy names
	clients  []clientRule
	actions  [numClasses]Action
	classIdx map[Class]int
}

// numClasses is len(Classes), fixed so per-class tables are arrays.
const numClasses = 12

// forClient returns the rule of the first policy naming addr.
func (r *rules) forClient(addr netip.Addr) *clientRule {
	addr = addr.Unmap()
	for i := range r.clients {
		for _, p := range r.clients[i].prefixes {
			if p.Contains(addr) {
				return &r.clients[i]
			}
		}
	}
	return &r.fallback
}

// checkRequest returns the first policy anomaly of a request that parsed clean.
func (r *rules) checkRequest(c *clientRule, f *Frame) Class {
	switch {
	case c.hasUnits:
		if !c.units[f.Unit] {
			return UnitIDNotAllowed
		}
	case !r.anyUnit && !r.units[f.Unit]:
		return UnitIDNotAllowed
	}
	if !c.functions[f.Function] {
		return FunctionNotAllowed
	}
	if f.Write {
		if c.readOnly {
			return FunctionNotAllowed
		}
		if c.hasWrites {
			t, a, q := f.Table, f.Address, f.Quantity
			if f.Function == 23 {
				t, a, q = HoldingRegisters, f.WriteAddress, f.WriteQuantity
			}
			// A write the windows cannot describe (FC 21 file records) is outside them.
			if t == TableNone || c.writes.check(t, a, q) != "" {
				return FunctionNotAllowed
			}
		}
	}
	for _, m := range []struct {
		on bool
		s  *spans
	}{{r.hasMap, &r.regMap}, {c.hasRanges, &c.ranges}} {
		if !m.on || f.Table == TableNone {
			continue
		}
		if cl := m.s.check(f.Table, f.Address, f.Quantity); cl != "" {
			return cl
		}
		if f.Function == 23 {
			if cl := m.s.check(HoldingRegisters, f.WriteAddress, f.WriteQuantity); cl != "" {
				return cl
			}
		}
	}
	return ""
}

// withDefaults returns cfg with its zero values replaced by the defaults.
func withDefaults(cfg Config) Config {
	if cfg.MaxClients == 0 {
		cfg.MaxClients = DefaultMaxClients
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if len(cfg.DefaultFunctions) == 0 {
		cfg.DefaultFunctions = defaultFunctions
	}
	if cfg.FloodRequests == 0 {
		cfg.FloodRequests = DefaultFloodRequests
	}
	if cfg.FloodExceptions == 0 {
		cfg.FloodExceptions = DefaultFloodExceptions
	}
	if cfg.FloodWindow == 0 {
		cfg.FloodWindow = DefaultFloodWindow
	}
	if cfg.AlertEvery == 0 {
		cfg.AlertEvery = DefaultAlertEvery
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return cfg
}

// compile validates cfg (defaults applied) and builds its rules. Errors name the field
// and the bad value.
func compile(cfg *Config) (*rules, error) {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if cfg.Name == "" {
		bad("name: empty")
	}
	for _, f := range []struct{ name, v string }{{"listen", cfg.Listen}, {"upstream", cfg.Upstream}} {
		if _, _, err := net.SplitHostPort(f.v); err != nil {
			bad("%s: %q is not host:port: %w", f.name, f.v, err)
		}
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"max_clients", cfg.MaxClients}, {"flood_requests", cfg.FloodRequests}, {"flood_exceptions", cfg.FloodExceptions}} {
		if f.v < 0 {
			bad("%s: %d is negative", f.name, f.v)
		}
	}
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"idle_timeout", cfg.IdleTimeout}, {"dial_timeout", cfg.DialTimeout}, {"flood_window", cfg.FloodWindow}, {"alert_every", cfg.AlertEvery}} {
		if f.v < 0 {
			bad("%s: %v is negative", f.name, f.v)
		}
	}
	r := &rules{anyUnit: len(cfg.Units) == 0, classIdx: make(map[Class]int, len(Classes))}
	if len(Classes) != numClasses {
		bad("dpi: %d anomaly classes, the proxy knows %d", len(Classes), numClasses)
	}
	for i, c := range Classes {
		if i < numClasses {
			r.classIdx[c] = i
			r.actions[i] = ActionAlert
		}
	}
	for _, u := range cfg.Units {
		r.units[u] = true
	}
	checkRanges := func(path string, rs []Range, writable bool) {
		for i, rg := range rs {
			switch {
			case rg.Table == TableNone || rg.Table > InputRegisters:
				bad("%s[%d].table: %d is not coil, discrete, holding or input", path, i, rg.Table)
			case writable && rg.Table != Coils && rg.Table != HoldingRegisters:
				bad("%s[%d].table: %s cannot be written (coil or holding)", path, i, rg.Table)
			}
			if rg.Start > rg.End {
				bad("%s[%d]: start %d is after end %d", path, i, rg.Start, rg.End)
			}
		}
	}
	checkFns := func(path string, fcs []uint8) {
		for i, fc := range fcs {
			if fc == 0 || fc > 127 {
				bad("%s[%d]: %d is not a function code (1..127)", path, i, fc)
			}
		}
	}
	checkRanges("map", cfg.Map, false)
	r.hasMap = len(cfg.Map) > 0
	r.regMap = makeSpans(cfg.Map)
	checkFns("default_functions", cfg.DefaultFunctions)
	r.fallback = clientRule{functions: makeFnSet(cfg.DefaultFunctions)}
	for i, cp := range cfg.Clients {
		path := fmt.Sprintf("clients[%d]", i)
		cr := clientRule{readOnly: cp.ReadOnly, hasWrites: len(cp.Writes) > 0}
		if len(cp.Addresses) == 0 {
			bad("%s.addresses: empty", path)
		}
		for j, a := range cp.Addresses {
			p, err := parsePrefix(a)
			if err != nil {
				bad("%s.addresses[%d]: %q is not an IP address or CIDR", path, j, a)
				continue
			}
			cr.prefixes = append(cr.prefixes, p)
		}
		fcs := cp.Functions
		if len(fcs) == 0 {
			fcs = cfg.DefaultFunctions
		}
		checkFns(path+".functions", cp.Functions)
		cr.functions = makeFnSet(fcs)
		if cp.ReadOnly && len(cp.Writes) > 0 {
			bad("%s: read_only and writes both set", path)
		}
		checkRanges(path+".writes", cp.Writes, true)
		cr.writes = makeSpans(cp.Writes)
		checkRanges(path+".ranges", cp.Ranges, false)
		cr.hasRanges, cr.ranges = len(cp.Ranges) > 0, makeSpans(cp.Ranges)
		cr.hasUnits = len(cp.Units) > 0
		for _, u := range cp.Units {
			cr.units[u] = true
		}
		r.clients = append(r.clients, cr)
	}
	for c, a := range cfg.Actions {
		i, ok := r.classIdx[c]
		if !ok {
			bad("actions: %q is not an anomaly class (%s)", c, classNames())
			continue
		}
		switch a {
		case ActionAlert, ActionBlock:
			r.actions[i] = a
		default:
			bad("actions.%s: %q is not alert or block", c, a)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return r, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, err
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func classNames() string {
	var b strings.Builder
	for i, c := range Classes {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(string(c))
	}
	return b.String()
}
