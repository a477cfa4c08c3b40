package main

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/edgedrun/edged/drivers"
)

// TestEveryDriverKeyDocumented checks the README's configuration reference names every
// key of every built-in driver's block, as `sources[].<type>.<key>`, so a driver option
// never exists only in code.
func TestEveryDriverKeyDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	unmarshaler := reflect.TypeFor[yaml.Unmarshaler]()
	var walk func(t reflect.Type, path string, keys *[]string)
	walk = func(typ reflect.Type, path string, keys *[]string) {
		for typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		for f := range typ.Fields() {
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "-" {
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			p := path + "." + name
			*keys = append(*keys, p)
			ft := f.Type
			if reflect.PointerTo(ft).Implements(unmarshaler) {
				continue
			}
			switch {
			case ft.Kind() == reflect.Struct:
				walk(ft, p, keys)
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct && !reflect.PointerTo(ft.Elem()).Implements(unmarshaler):
				walk(ft.Elem(), p+"[]", keys)
			}
		}
	}
	for _, typ := range drivers.Types() {
		f, err := drivers.Lookup(typ)
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		walk(reflect.TypeOf(f.NewConfig()), "sources[]."+typ, &keys)
		if len(keys) == 0 {
			t.Errorf("driver %q: its config has no keys", typ)
		}
		for _, k := range keys {
			if !strings.Contains(string(readme), "`"+k+"`") {
				t.Errorf("the README's configuration reference lacks `%s`", k)
			}
		}
	}
}
