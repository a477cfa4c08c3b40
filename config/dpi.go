package config

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/edgedrun/edged/dpi"
)

// ModbusDPI is one inline Modbus TCP proxy between the SCADA/HMI side and a PLC: every
// frame is parsed and classified, and anomalies are alerted on or blocked.
type ModbusDPI struct {
	// Name names the proxy in alerts and metrics.
	Name string `yaml:"name"`
	// Listen is where the SCADA/HMI side connects instead of the PLC, host:port.
	Listen string `yaml:"listen"`
	// Upstream is the PLC, host:port.
	Upstream    string   `yaml:"upstream"`
	MaxClients  int      `yaml:"max_clients"`
	IdleTimeout Duration `yaml:"idle_timeout"`
	DialTimeout Duration `yaml:"dial_timeout"`
	// Units are the unit ids clients may address; empty allows any.
	Units []int `yaml:"units"`
	// Map is the PLC's data; a request outside it is address_out_of_range. Empty: no
	// address check.
	Map []DPIRange `yaml:"map"`
	// DefaultFunctions are the function codes allowed to clients no policy names.
	DefaultFunctions []int `yaml:"default_functions"`
	// Clients are per-address policies; the first that names a client applies.
	Clients []DPIClient `yaml:"clients"`
	// Actions maps anomaly classes to alert or block; classes left out alert.
	Actions map[string]string `yaml:"actions"`
	Flood   DPIFlood          `yaml:"flood"`
	// AlertEvery is the least time between two alerts of one class for one client;
	// the ones held back are counted in the next.
	AlertEvery Duration `yaml:"alert_every"`
}

// DPIRange is an inclusive range of one table: coil, discrete, holding or input.
type DPIRange struct {
	Table string `yaml:"table"`
	Start int    `yaml:"start"`
	End   int    `yaml:"end"`
}

// DPIClient is what the clients at some addresses may do.
type DPIClient struct {
	// Addresses are IPs or CIDRs.
	Addresses []string `yaml:"addresses"`
	// Functions allowed; empty: default_functions.
	Functions []int `yaml:"functions"`
	// ReadOnly refuses every writing function.
	ReadOnly bool `yaml:"read_only"`
	// Writes, when set, are the only ranges these clients may write.
	Writes []DPIRange `yaml:"writes"`
	// Units, when set, replace the proxy's units for these clients.
	Units []int `yaml:"units"`
	// Ranges, when set, are the only data these clients may read or write.
	Ranges []DPIRange `yaml:"ranges"`
}

// DPIFlood bounds each client's requests and exception answers over a sliding window.
type DPIFlood struct {
	Requests   int      `yaml:"requests"`
	Exceptions int      `yaml:"exceptions"`
	Window     Duration `yaml:"window"`
}

// DPI defaults; a proxy's keys left out take these.
var (
	DefaultDPIFunctions = []int{1, 2, 3, 4, 5, 6, 15, 16, 22, 23}
	dpiTables           = []string{"coil", "discrete", "holding", "input"}
	dpiActions          = []string{"alert", "block"}
)

// fill sets the defaults of keys left out. Lists decode into fresh values, so the
// defaults are set after decoding, per proxy.
func (m *ModbusDPI) fill() {
	if m.MaxClients == 0 {
		m.MaxClients = 16
	}
	if m.IdleTimeout == 0 {
		m.IdleTimeout = Duration(5 * time.Minute)
	}
	if m.DialTimeout == 0 {
		m.DialTimeout = Duration(3 * time.Second)
	}
	if m.DefaultFunctions == nil {
		m.DefaultFunctions = slices.Clone(DefaultDPIFunctions)
	}
	if m.Flood.Requests == 0 {
		m.Flood.Requests = 1000
	}
	if m.Flood.Exceptions == 0 {
		m.Flood.Exceptions = 50
	}
	if m.Flood.Window == 0 {
		m.Flood.Window = Duration(time.Second)
	}
	if m.AlertEvery == 0 {
		m.AlertEvery = Duration(10 * time.Second)
	}
}

func (v *validation) modbusDPI(ps []ModbusDPI) {
	names := map[string]int{}
	listens := map[string]int{}
	for i, m := range ps {
		path := fmt.Sprintf("modbus_dpi[%d]", i)
		v.name(path+".name", m.Name)
		if j, dup := names[m.Name]; dup {
			v.fail("%s.name: %q is already the name of modbus_dpi[%d]", path, m.Name, j)
		} else {
			names[m.Name] = i
		}
		v.listen(path+".listen", m.Listen)
		if j, dup := listens[m.Listen]; dup {
			v.fail("%s.listen: %q is already where modbus_dpi[%d] listens", path, m.Listen, j)
		} else {
			listens[m.Listen] = i
		}
		v.hostPort(path+".upstream", m.Upstream)
		if m.Listen == m.Upstream && m.Listen != "" {
			v.fail("%s.upstream: %q is the proxy's own listen address", path, m.Upstream)
		}
		v.intRange(path+".max_clients", m.MaxClients, 1, 4096)
		v.durRange(path+".idle_timeout", m.IdleTimeout, time.Second, 24*time.Hour, true)
		v.durRange(path+".dial_timeout", m.DialTimeout, 10*time.Millisecond, time.Minute, true)
		for j, u := range m.Units {
			v.intRange(fmt.Sprintf("%s.units[%d]", path, j), u, 0, 255)
		}
		v.dpiRanges(path+".map", m.Map)
		v.functions(path+".default_functions", m.DefaultFunctions)
		for j, c := range m.Clients {
			cp := fmt.Sprintf("%s.clients[%d]", path, j)
			if len(c.Addresses) == 0 {
				v.fail("%s.addresses: empty; name the client IPs or CIDRs this policy is for", cp)
			}
			for k, a := range c.Addresses {
				if _, err := netip.ParsePrefix(a); err == nil {
					continue
				}
				if _, err := netip.ParseAddr(a); err != nil {
					v.fail("%s.addresses[%d]: %q is not an IP address or CIDR", cp, k, a)
				}
			}
			v.functions(cp+".functions", c.Functions)
			v.dpiRanges(cp+".writes", c.Writes)
			v.dpiRanges(cp+".ranges", c.Ranges)
			for k, u := range c.Units {
				v.intRange(fmt.Sprintf("%s.units[%d]", cp, k), u, 0, 255)
			}
			if c.ReadOnly && len(c.Writes) > 0 {
				v.fail("%s: read_only and writes both set; a read-only client writes nowhere", cp)
			}
			for k, r := range c.Writes {
				if r.Table == "discrete" || r.Table == "input" {
					v.fail("%s.writes[%d].table: %q cannot be written", cp, k, r.Table)
				}
			}
		}
		for class, action := range m.Actions {
			if !slices.Contains(dpi.Classes, dpi.Class(class)) {
				v.fail("%s.actions: %q is not an anomaly class (%s)", path, class, classNames())
			}
			v.oneOf(fmt.Sprintf("%s.actions.%s", path, class), action, dpiActions...)
		}
		v.intRange(path+".flood.requests", m.Flood.Requests, 1, 1<<24)
		v.intRange(path+".flood.exceptions", m.Flood.Exceptions, 1, 1<<24)
		v.durRange(path+".flood.window", m.Flood.Window, 10*time.Millisecond, time.Hour, true)
		v.durRange(path+".alert_every", m.AlertEvery, 0, 24*time.Hour, false)
	}
}

func (v *validation) dpiRanges(path string, rs []DPIRange) {
	for i, r := range rs {
		p := fmt.Sprintf("%s[%d]", path, i)
		v.oneOf(p+".table", r.Table, dpiTables...)
		v.intRange(p+".start", r.Start, 0, 65535)
		v.intRange(p+".end", r.End, 0, 65535)
		if r.End < r.Start {
			v.fail("%s: end %d is before start %d", p, r.End, r.Start)
		}
	}
}

func (v *validation) functions(path string, fs []int) {
	for i, f := range fs {
		v.intRange(fmt.Sprintf("%s[%d]", path, i), f, 1, 127)
	}
}

// hostPort checks a host:port to dial: a host, and a port above 0.
func (v *validation) hostPort(path, s string) {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" || port == "" || port == "0" {
		v.fail("%s: %q is not host:port with a host and a port above 0", path, s)
	}
}

func classNames() string {
	var ns []string
	for _, c := range dpi.Classes {
		ns = append(ns, string(c))
	}
	return strings.Join(ns, ", ")
}
