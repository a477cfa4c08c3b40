package drivers_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/edgedrun/edged/drivers"
)

// The registry is global and has no Unregister, so every test registers names of its
// own: unique across tests and across -count runs in one process.
var seq atomic.Uint64

func uniqueType(prefix string) string {
	return fmt.Sprintf("testdrv-%s-%d", prefix, seq.Add(1))
}

type testConfig struct{ Addr string }

type testDriver struct{ cfg *testConfig }

func (testDriver) Run(ctx context.Context, _ drivers.Emitter) error { <-ctx.Done(); return nil }

func testFactory() drivers.Factory {
	return drivers.Factory{
		NewConfig: func() any { return &testConfig{Addr: "default:502"} },
		New: func(_ drivers.Spec, cfg any) (drivers.Driver, error) {
			c, ok := cfg.(*testConfig)
			if !ok {
				return nil, fmt.Errorf("config is %T", cfg)
			}
			return testDriver{c}, nil
		},
	}
}

func TestRegisterLookup(t *testing.T) {
	typ := uniqueType("lookup")
	drivers.Register(typ, testFactory())

	f, err := drivers.Lookup(typ)
	if err != nil {
		t.Fatal(err)
	}
	// The factory found is the one registered, not a copy of another.
	cfg := f.NewConfig()
	if c, ok := cfg.(*testConfig); !ok || c.Addr != "default:502" {
		t.Fatalf("NewConfig() = %#v", cfg)
	}
	d, err := f.New(drivers.Spec{Name: "line1"}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if td, ok := d.(testDriver); !ok || td.cfg != cfg {
		t.Errorf("New built %#v from %p", d, cfg)
	}
	if !slices.Contains(drivers.Types(), typ) {
		t.Errorf("Types() = %v lacks %q", drivers.Types(), typ)
	}
}

func TestTypesSorted(t *testing.T) {
	// Registered out of order, so a registry that keeps insertion order fails.
	n := seq.Add(1)
	names := []string{
		fmt.Sprintf("testdrv-sort-%d-c", n),
		fmt.Sprintf("testdrv-sort-%d-a", n),
		fmt.Sprintf("testdrv-sort-%d-b", n),
	}
	for _, typ := range names {
		drivers.Register(typ, testFactory())
	}
	types := drivers.Types()
	if !slices.IsSorted(types) {
		t.Errorf("Types() not sorted: %v", types)
	}
	for _, typ := range names {
		if !slices.Contains(types, typ) {
			t.Errorf("Types() = %v lacks %q", types, typ)
		}
	}
	// Types hands out a copy: changing it does not change the registry.
	types[0] = "zzz-mutated"
	if slices.Contains(drivers.Types(), "zzz-mutated") {
		t.Error("Types() shares its slice with the registry")
	}
}

func TestLookupUnknownListsKnownTypesSorted(t *testing.T) {
	n := seq.Add(1)
	b, a := fmt.Sprintf("testdrv-known-%d-b", n), fmt.Sprintf("testdrv-known-%d-a", n)
	drivers.Register(b, testFactory())
	drivers.Register(a, testFactory())

	for _, unknown := range []string{"modbus-tcp-typo", "", strings.ToUpper(a)} {
		t.Run(fmt.Sprintf("%q", unknown), func(t *testing.T) {
			f, err := drivers.Lookup(unknown)
			if err == nil {
				t.Fatalf("Lookup(%q) found a factory", unknown)
			}
			if f.New != nil || f.NewConfig != nil {
				t.Error("Lookup returned a factory with its error")
			}
			msg := err.Error()
			if !strings.Contains(msg, fmt.Sprintf("%q", unknown)) {
				t.Errorf("error %q does not quote the type asked for", msg)
			}
			_, list, ok := strings.Cut(msg, "(known: ")
			if !ok || !strings.HasSuffix(list, ")") {
				t.Fatalf("error %q does not list the known types", msg)
			}
			known := strings.Split(strings.TrimSuffix(list, ")"), ", ")
			if !slices.Equal(known, drivers.Types()) {
				t.Errorf("listed %v, registry has %v", known, drivers.Types())
			}
			ia, ib := slices.Index(known, a), slices.Index(known, b)
			if ia < 0 || ib < 0 || ia > ib {
				t.Errorf("listed %v: want %s before %s", known, a, b)
			}
		})
	}
}

func TestRegisterPanics(t *testing.T) {
	dup := uniqueType("dup")
	drivers.Register(dup, testFactory())
	nilNew, nilConfig := testFactory(), testFactory()
	nilNew.New = nil
	nilConfig.NewConfig = nil

	for _, tc := range []struct {
		name string
		typ  string
		f    drivers.Factory
		want string
	}{
		{"duplicate", dup, testFactory(), "registered twice"},
		{"without New", uniqueType("nonew"), nilNew, "without NewConfig or New"},
		{"without NewConfig", uniqueType("noconfig"), nilConfig, "without NewConfig or New"},
		{"empty factory", uniqueType("empty"), drivers.Factory{}, "without NewConfig or New"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := panicOf(func() { drivers.Register(tc.typ, tc.f) })
			if msg == "" {
				t.Fatalf("Register(%q) did not panic", tc.typ)
			}
			if !strings.Contains(msg, tc.want) || !strings.Contains(msg, fmt.Sprintf("%q", tc.typ)) {
				t.Errorf("panic %q: want the type %q and %q", msg, tc.typ, tc.want)
			}
			if tc.name != "duplicate" {
				if _, err := drivers.Lookup(tc.typ); err == nil {
					t.Errorf("a refused registration of %q is in the registry", tc.typ)
				}
			}
		})
	}
	// A panic in Register did not leave the registry locked, and the first
	// registration of the duplicate name still stands.
	f, err := drivers.Lookup(dup)
	if err != nil || f.New == nil {
		t.Errorf("Lookup(%q) after the panics: %v", dup, err)
	}
}

// panicOf runs f and returns its panic value as text, or "" when it did not panic.
func panicOf(f func()) (msg string) {
	defer func() {
		if r := recover(); r != nil {
			msg = fmt.Sprint(r)
		}
	}()
	f()
	return ""
}

func TestPressureSlowDown(t *testing.T) {
	for _, tc := range []struct {
		p    drivers.Pressure
		want bool
	}{
		{drivers.Pressure{Accepted: true, Occupancy: 0}, false},
		{drivers.Pressure{Accepted: true, Occupancy: 0.5}, false},
		{drivers.Pressure{Accepted: true, Occupancy: drivers.SlowDownAt - 0.001}, false},
		{drivers.Pressure{Accepted: true, Occupancy: drivers.SlowDownAt}, true},
		{drivers.Pressure{Accepted: true, Occupancy: drivers.SlowDownAt + 0.001}, true},
		{drivers.Pressure{Accepted: true, Occupancy: 1}, true},
		// A dropped reading means slow down, however empty the ring claims to be.
		{drivers.Pressure{Accepted: false, Occupancy: 0}, true},
		{drivers.Pressure{Accepted: false, Occupancy: 0.5}, true},
		{drivers.Pressure{Accepted: false, Occupancy: 1}, true},
		{drivers.Pressure{}, true},
	} {
		if got := tc.p.SlowDown(); got != tc.want {
			t.Errorf("%+v.SlowDown() = %v, want %v", tc.p, got, tc.want)
		}
	}
	if drivers.SlowDownAt <= 0 || drivers.SlowDownAt >= 1 {
		t.Errorf("SlowDownAt %v is not an occupancy in (0,1)", drivers.SlowDownAt)
	}
}
