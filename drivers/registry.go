package drivers

import (
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Factory builds drivers of one type.
type Factory struct {
	// NewConfig returns a pointer to the type's config struct, filled with defaults. The
	// config loader decodes the source's block into it strictly; if it has a
	// Validate() error method, that runs next.
	NewConfig func() any
	// New builds the driver from a config made by NewConfig. It must not start anything.
	New func(spec Spec, cfg any) (Driver, error)
}

var (
	mu        sync.RWMutex
	factories = map[string]Factory{}
)

// Register makes a driver type known. It panics on a duplicate name, which is a
// programming error found at start.
func Register(typ string, f Factory) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := factories[typ]; dup {
		panic(fmt.Sprintf("drivers: type %q registered twice", typ))
	}
	if f.NewConfig == nil || f.New == nil {
		panic(fmt.Sprintf("drivers: type %q registered without NewConfig or New", typ))
	}
	factories[typ] = f
}

// Lookup returns the factory for a type name; the error for an unknown one lists the
// known types.
func Lookup(typ string) (Factory, error) {
	mu.RLock()
	f, ok := factories[typ]
	mu.RUnlock()
	if !ok {
		return Factory{}, fmt.Errorf("unknown driver type %q (known: %s)", typ, strings.Join(Types(), ", "))
	}
	return f, nil
}

// Types lists the registered type names, sorted.
func Types() []string {
	mu.RLock()
	defer mu.RUnlock()
	ts := make([]string, 0, len(factories))
	for t := range factories {
		ts = append(ts, t)
	}
	sort.Strings(ts)
	return ts
}
