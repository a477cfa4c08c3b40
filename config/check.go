package config

import (
	"encoding"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// maxNodes bounds the YAML values one check visits, counting every alias expansion, so a
// document of nested aliases (a "billion laughs") fails fast instead of running for hours.
// Real configs have a few hundred.
const maxNodes = 200_000

// maxFaults bounds the faults one parse reports: past it, the rest are mostly echoes of
// the first ones, and a list of thousands helps no one.
const maxFaults = 50

// checker walks a YAML node against the Go type it will be decoded into and reports, with
// the config path and the line, every key the type does not have, every repeated key and
// every value the type cannot hold. yaml.v3's strict mode finds the same faults, but
// names Go types instead of config paths and cannot see inside a source's driver block,
// which is decoded separately; running this first gives every fault in one readable list.
type checker struct {
	visited int
	errs    []error
}

func (c *checker) fail(format string, args ...any) {
	switch {
	case len(c.errs) < maxFaults:
		c.errs = append(c.errs, fmt.Errorf(format, args...))
	case len(c.errs) == maxFaults:
		c.errs = append(c.errs, fmt.Errorf("more than %d faults; fix these first", maxFaults))
	}
}

// done reports whether the check should stop: too much visited, or too much found.
func (c *checker) done() bool { return c.visited > maxNodes || len(c.errs) > maxFaults }

var (
	nodeType            = reflect.TypeFor[yaml.Node]()
	unmarshalerType     = reflect.TypeFor[yaml.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	durationType        = reflect.TypeFor[time.Duration]()
)

// check reports every fault of n as a value of type t at path.
func (c *checker) check(n *yaml.Node, t reflect.Type, path string) {
	if c.done() {
		return
	}
	if c.visited++; c.visited > maxNodes {
		c.fail("%s: more than %d values after expanding aliases", orTop(path), maxNodes)
		return
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias != nil {
			c.check(n.Alias, t, path)
		}
		return
	}
	if leafType(t) {
		c.leaf(n, t, path)
		return
	}
	// A null leaves the value as it was (the default), as yaml.v3 does.
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		c.check(n, t.Elem(), path)
	case reflect.Struct:
		if !c.want(n, yaml.MappingNode, "a mapping", path) {
			return
		}
		f := fieldsOf(t)
		seen := map[string]int{}
		c.pairs(n, path, func(k, v *yaml.Node) {
			if k.Kind != yaml.ScalarNode {
				c.fail("%s: %s as a key (line %d); keys are names", orTop(path), describe(k), k.Line)
				return
			}
			if c.repeated(seen, k, path) {
				return
			}
			switch ft, ok := f.fields[k.Value]; {
			case ok:
				c.check(v, ft, join(path, k.Value))
			case f.inlineMap != nil:
				c.check(v, f.inlineMap, join(path, k.Value))
			case !f.acceptAll:
				c.fail("%s: unknown key %q (line %d); known: %s", orTop(path), k.Value, k.Line, strings.Join(f.names, ", "))
			}
		}, func(m *yaml.Node) { c.check(m, t, path) })
	case reflect.Map:
		if !c.want(n, yaml.MappingNode, "a mapping", path) {
			return
		}
		seen := map[string]int{}
		c.pairs(n, path, func(k, v *yaml.Node) {
			if k.Kind == yaml.ScalarNode && c.repeated(seen, k, path) {
				return
			}
			c.leaf(k, t.Key(), path)
			c.check(v, t.Elem(), join(path, k.Value))
		}, func(m *yaml.Node) { c.check(m, t, path) })
	case reflect.Slice:
		if !c.want(n, yaml.SequenceNode, "a list", path) {
			return
		}
		for i, e := range n.Content {
			c.check(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	default:
		c.leaf(n, t, path)
	}
}

// pairs calls each for every key and value of mapping n, and merge for every mapping
// merged into it with `<<: *anchor`.
func (c *checker) pairs(n *yaml.Node, path string, each func(k, v *yaml.Node), merge func(m *yaml.Node)) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			if r := resolve(v); r != nil && r.Kind == yaml.SequenceNode {
				for _, m := range r.Content {
					merge(m)
				}
			} else {
				merge(v)
			}
			continue
		}
		each(k, v)
	}
}

// repeated reports a key seen before in the same mapping; yaml.v3 refuses those too.
func (c *checker) repeated(seen map[string]int, k *yaml.Node, path string) bool {
	if first, dup := seen[k.Value]; dup {
		c.fail("%s: key given twice (lines %d and %d)", join(path, k.Value), first, k.Line)
		return true
	}
	seen[k.Value] = k.Line
	return false
}

// want reports whether n is of kind k, and the fault when it is not.
func (c *checker) want(n *yaml.Node, k yaml.Kind, what, path string) bool {
	if n.Kind == k {
		return true
	}
	c.fail("%s: want %s, not %s (line %d)", orTop(path), what, describe(n), n.Line)
	return false
}

// leaf decodes n into a fresh value of type t to see whether it fits.
func (c *checker) leaf(n *yaml.Node, t reflect.Type, path string) {
	v := reflect.New(t)
	if err := n.Decode(v.Interface()); err != nil {
		r := resolve(n)
		switch {
		case reflect.PointerTo(t).Implements(unmarshalerType):
			// The type wrote its own message; yaml.v3 passes it on unchanged.
			c.fail("%s: %s (line %d)", orTop(path), cleanYAMLError(err), n.Line)
		case r != nil && r.Kind == yaml.ScalarNode:
			c.fail("%s: %q is not %s (line %d)", orTop(path), r.Value, typeName(t), n.Line)
		default:
			c.fail("%s: want %s, not %s (line %d)", orTop(path), typeName(t), describe(n), n.Line)
		}
		return
	}
	// yaml reads .nan and .inf as floats; no setting means either, and range checks
	// written as `x < lo || x > hi` would let NaN through.
	if k := t.Kind(); k == reflect.Float32 || k == reflect.Float64 {
		if f := v.Elem().Float(); math.IsNaN(f) || math.IsInf(f, 0) {
			c.fail("%s: %v is not a finite number (line %d)", orTop(path), f, n.Line)
		}
	}
}

// leafType reports whether values of t are decoded whole by yaml.v3 rather than field by
// field: types with their own decoding, raw nodes, interfaces, byte slices and arrays.
func leafType(t reflect.Type) bool {
	if t == nodeType || t.Kind() == reflect.Interface || t.Kind() == reflect.Array {
		return true
	}
	if t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8 {
		return true
	}
	pt := reflect.PointerTo(t)
	return pt.Implements(unmarshalerType) || pt.Implements(textUnmarshalerType)
}

// structFields is what a struct type accepts as mapping keys.
type structFields struct {
	fields    map[string]reflect.Type
	names     []string     // sorted, for the unknown-key message
	inlineMap reflect.Type // value type of an `,inline` map: any other key goes there
	acceptAll bool         // an inline struct decodes itself, so any key may be its
}

// fieldsOf follows yaml.v3's rules for naming struct fields: the yaml tag's name, else the
// lower-cased field name; "-" and unexported fields are skipped; ",inline" lifts the
// fields of a struct, or sends unknown keys to a map.
func fieldsOf(t reflect.Type) structFields {
	s := structFields{fields: map[string]reflect.Type{}}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			if f.PkgPath != "" && !f.Anonymous {
				continue
			}
			tag := f.Tag.Get("yaml")
			if tag == "" && !strings.Contains(string(f.Tag), ":") {
				tag = string(f.Tag)
			}
			if tag == "-" {
				continue
			}
			name, flags, _ := strings.Cut(tag, ",")
			if slices.Contains(strings.Split(flags, ","), "inline") {
				ft := f.Type
				for ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				switch {
				case ft.Kind() == reflect.Map:
					s.inlineMap = ft.Elem()
				case reflect.PointerTo(ft).Implements(unmarshalerType):
					s.acceptAll = true
				case ft.Kind() == reflect.Struct:
					walk(ft)
				}
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			s.fields[name] = f.Type
		}
	}
	walk(t)
	for name := range s.fields {
		s.names = append(s.names, name)
	}
	slices.Sort(s.names)
	return s
}

// typeName says in words what a value of t looks like.
func typeName(t reflect.Type) string {
	if t == durationType || t == reflect.TypeFor[Duration]() {
		return "a duration like 500ms, 10s or 1m"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "an integer 0 or above"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	}
	return t.String()
}

// describe says in words what kind of YAML value n is.
func describe(n *yaml.Node) string {
	r := resolve(n)
	if r == nil {
		return "nothing"
	}
	switch r.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return strconv.Quote(r.Value)
	}
	return "a document"
}

// resolve follows aliases, at most a few deep, since yaml.v3 never chains them further.
func resolve(n *yaml.Node) *yaml.Node {
	for range 8 {
		if n == nil || n.Kind != yaml.AliasNode {
			return n
		}
		n = n.Alias
	}
	return nil
}

var yamlLinePrefix = regexp.MustCompile(`^(yaml: )?(unmarshal errors:\s*)?(line \d+: )?`)

// cleanYAMLError drops yaml.v3's "yaml: unmarshal errors: line N:" framing, since the
// caller adds the path and the line itself.
func cleanYAMLError(err error) string {
	msg := strings.TrimSpace(err.Error())
	return yamlLinePrefix.ReplaceAllString(msg, "")
}

// join appends a key to a config path.
func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// orTop names the top of the document in messages, where the path is empty.
func orTop(path string) string {
	if path == "" {
		return "(top level)"
	}
	return path
}
