package dpi

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestConfigErrors: each bad config is refused, with the field and the value named.
func TestConfigErrors(t *testing.T) {
	good := func() Config { return Config{Name: "line3", Listen: "127.0.0.1:0", Upstream: "10.0.0.5:502"} }
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no name", func(c *Config) { c.Name = "" }, "name: empty"},
		{"bad listen", func(c *Config) { c.Listen = "5020" }, `listen: "5020" is not host:port`},
		{"bad upstream", func(c *Config) { c.Upstream = "" }, `upstream: "" is not host:port`},
		{"negative clients", func(c *Config) { c.MaxClients = -1 }, "max_clients: -1 is negative"},
		{"negative idle", func(c *Config) { c.IdleTimeout = -time.Second }, "idle_timeout: -1s is negative"},
		{"negative flood", func(c *Config) { c.FloodRequests = -5 }, "flood_requests: -5 is negative"},
		{"map table", func(c *Config) { c.Map = []Range{{TableNone, 0, 9}} }, "map[0].table: 0 is not coil, discrete, holding or input"},
		{"map order", func(c *Config) { c.Map = []Range{{HoldingRegisters, 0, 9}, {Coils, 9, 3}} }, "map[1]: start 9 is after end 3"},
		{"function code", func(c *Config) { c.DefaultFunctions = []uint8{3, 200} }, "default_functions[1]: 200 is not a function code"},
		{"client address", func(c *Config) { c.Clients = []ClientPolicy{{Addresses: []string{"10.0.3.0/33"}}} },
			`clients[0].addresses[0]: "10.0.3.0/33" is not an IP address or CIDR`},
		{"client without address", func(c *Config) { c.Clients = []ClientPolicy{{ReadOnly: true}} }, "clients[0].addresses: empty"},
		{"read only with writes", func(c *Config) {
			c.Clients = []ClientPolicy{{Addresses: []string{"10.0.0.1"}, ReadOnly: true, Writes: []Range{{Coils, 0, 1}}}}
		}, "clients[0]: read_only and writes both set"},
		{"write window on inputs", func(c *Config) {
			c.Clients = []ClientPolicy{{Addresses: []string{"10.0.0.1"}, Writes: []Range{{InputRegisters, 0, 1}}}}
		}, "clients[0].writes[0].table: input cannot be written"},
		{"unknown class", func(c *Config) { c.Actions = map[Class]Action{"port_scan": ActionBlock} }, `actions: "port_scan" is not an anomaly class`},
		{"unknown action", func(c *Config) { c.Actions = map[Class]Action{Flood: "drop"} }, `actions.flood: "drop" is not alert or block`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.mod(&c)
			_, err := New(c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	if _, err := New(good()); err != nil {
		t.Fatalf("good config: %v", err)
	}
}

// TestCheckRequest: the policy part of classification, on parsed requests.
func TestCheckRequest(t *testing.T) {
	cfg := withDefaults(Config{Name: "p", Listen: "127.0.0.1:0", Upstream: "127.0.0.1:502",
		Units: []uint8{1, 2},
		Map:   []Range{{HoldingRegisters, 0, 49}, {HoldingRegisters, 50, 99}, {HoldingRegisters, 200, 209}, {Coils, 0, 15}},
		Clients: []ClientPolicy{
			{Addresses: []string{"10.0.3.0/24"}, ReadOnly: true},
			{Addresses: []string{"10.0.4.7", "::ffff:10.0.5.0/120"}, Functions: []uint8{3, 16, 23}, Writes: []Range{{HoldingRegisters, 10, 19}}},
			{Addresses: []string{"10.0.6.1"}, Units: []uint8{9}, Ranges: []Range{{HoldingRegisters, 0, 9}}},
		}})
	r, err := compile(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	hmi := r.forClient(netip.MustParseAddr("10.0.3.9"))
	eng := r.forClient(netip.MustParseAddr("10.0.5.3"))
	other := r.forClient(netip.MustParseAddr("192.168.1.1"))
	meter := r.forClient(netip.MustParseAddr("10.0.6.1"))
	if eng != r.forClient(netip.MustParseAddr("10.0.4.7")) || other != &r.fallback || hmi != &r.clients[0] {
		t.Fatal("clients matched to the wrong policy")
	}
	for _, tc := range []struct {
		name string
		rule *clientRule
		pdu  []byte
		unit uint8
		want Class
	}{
		{"read in map", other, pdu16(3, 0, 10), 1, ""},
		{"read across merged windows", other, pdu16(3, 45, 10), 1, ""},
		{"read past the map", other, pdu16(3, 95, 10), 1, QuantityOutOfRange},
		{"read in the gap", other, pdu16(3, 150, 1), 1, AddressOutOfRange},
		{"read in the second window", other, pdu16(3, 205, 5), 1, ""},
		{"table not in the map", other, pdu16(4, 0, 1), 1, AddressOutOfRange},
		{"unit", other, pdu16(3, 0, 1), 9, UnitIDNotAllowed},
		{"diagnostics by default", other, pdu16(8, 0, 0), 1, FunctionNotAllowed},
		{"report server id by default", other, []byte{17}, 1, FunctionNotAllowed},
		{"device id by default", other, []byte{43, 14, 1, 0}, 1, FunctionNotAllowed},
		{"read only write", hmi, pdu16(6, 3, 1), 1, FunctionNotAllowed},
		{"read only read", hmi, pdu16(3, 3, 1), 1, ""},
		{"function list", eng, pdu16(6, 12, 1), 1, FunctionNotAllowed},
		{"write in window", eng, []byte{16, 0, 12, 0, 2, 4, 0, 1, 0, 2}, 1, ""},
		{"write past window", eng, []byte{16, 0, 18, 0, 3, 6, 0, 1, 0, 2, 0, 3}, 1, FunctionNotAllowed},
		{"fc 23 write in window", eng, []byte{23, 0, 0, 0, 2, 0, 10, 0, 1, 2, 0, 1}, 1, ""},
		{"fc 23 write outside", eng, []byte{23, 0, 10, 0, 2, 0, 30, 0, 1, 2, 0, 1}, 1, FunctionNotAllowed},
		// A client's own units replace the proxy's, and its ranges narrow the map.
		{"client's own unit", meter, pdu16(3, 0, 1), 9, ""},
		{"proxy's unit, not the client's", meter, pdu16(3, 0, 1), 1, UnitIDNotAllowed},
		{"in the client's ranges", meter, pdu16(3, 2, 8), 9, ""},
		{"past the client's ranges", meter, pdu16(3, 5, 10), 9, QuantityOutOfRange},
		{"in the map, outside the client's ranges", meter, pdu16(3, 40, 1), 9, AddressOutOfRange},
		{"other clients keep the whole map", other, pdu16(3, 40, 1), 1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, cls := Parse(adu(1, tc.unit, tc.pdu...), Request)
			if cls != "" {
				t.Fatalf("parse: %s", cls)
			}
			if got := r.checkRequest(tc.rule, &f); got != tc.want {
				t.Errorf("class %q, want %q", got, tc.want)
			}
		})
	}
}

// TestWindow: the flood window's count is exact within a bucket, slides across the
// next, and forgets after two.
func TestWindow(t *testing.T) {
	t0 := time.Unix(100, 0)
	w := newWindow(3, time.Second, t0)
	for i, want := range []bool{false, false, false, true} {
		if got := w.hit(t0.Add(time.Duration(i) * time.Millisecond)); got != want {
			t.Fatalf("hit %d: %v", i, got)
		}
	}
	// Half into the next bucket half of the previous 4 still counts: 2 + 1 + 1 > 3.
	if w.hit(t0.Add(1500*time.Millisecond)) || !w.hit(t0.Add(1500*time.Millisecond)) {
		t.Fatal("sliding weight wrong")
	}
	if w.hit(t0.Add(5 * time.Second)) {
		t.Fatal("window did not forget")
	}
}

// TestTxTable: outstanding requests are matched oldest first, duplicates included, and
// the table forgets the oldest beyond its bound.
func TestTxTable(t *testing.T) {
	var tt txTable
	tt.add(txn{id: 1, function: 3})
	tt.add(txn{id: 1, function: 4})
	if !tt.outstanding(1) || tt.outstanding(2) {
		t.Fatal("outstanding")
	}
	if e, ok := tt.take(1); !ok || e.function != 3 {
		t.Fatalf("first take %+v %v", e, ok)
	}
	if e, ok := tt.take(1); !ok || e.function != 4 {
		t.Fatalf("second take %+v %v", e, ok)
	}
	if _, ok := tt.take(1); ok {
		t.Fatal("third take matched")
	}
	forgot := 0
	for i := 0; i < maxOutstanding+10; i++ {
		if tt.add(txn{id: uint16(i)}) {
			forgot++
		}
	}
	if forgot != 10 || tt.outstanding(0) || !tt.outstanding(maxOutstanding+9) {
		t.Fatalf("forgot %d", forgot)
	}
	// Answered out of order: the slots free up all the same.
	for i := maxOutstanding + 9; i >= 10; i-- {
		if _, ok := tt.take(uint16(i)); !ok {
			t.Fatalf("take %d", i)
		}
	}
	if tt.n != 0 || tt.live != 0 {
		t.Fatalf("table not empty: n %d live %d", tt.n, tt.live)
	}
}

// TestLimiterBounded: the limiter's table stays bounded under many client addresses.
func TestLimiterBounded(t *testing.T) {
	l := newLimiter(time.Second)
	now := time.Unix(100, 0)
	for i := 0; i < 3*maxLimitKeys; i++ {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String()
		if ok, _ := l.allow(Flood, ip, now); !ok {
			t.Fatalf("first alert of %s held back", ip)
		}
		if i == maxLimitKeys {
			now = now.Add(2 * time.Second)
		}
	}
	if len(l.keys) > maxLimitKeys {
		t.Fatalf("%d keys", len(l.keys))
	}
}
