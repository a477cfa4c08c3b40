package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// WriteAction is one value an inspection's verdict writes to a device: the reject
// gate's coil, a result register, an OPC UA node.
type WriteAction struct {
	// Writer is the name of a source whose driver can write (modbus, opcua).
	Writer string `yaml:"writer"`
	// Target is the address in the writer's syntax: "coil:17", "holding:40:uint16",
	// "ns=2;s=Line1.Reject".
	Target string `yaml:"target"`
	// Value is what is written: true/false, a number, or a string in which
	// {part_id}, {verdict}, {label}, {seq} and {inspection} are replaced by the
	// result's.
	Value WriteValue `yaml:"value"`
}

// WriteValue is a YAML scalar kept with its type: bool, int64, float64 or string.
type WriteValue struct{ V any }

// Placeholders a string write value may hold.
var Placeholders = []string{"{part_id}", "{verdict}", "{label}", "{seq}", "{inspection}"}

// UnmarshalYAML keeps the scalar's YAML type, so `value: 1` writes a number and
// `value: "1"` a string.
func (w *WriteValue) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want true, false, a number or a string, not %s", describe(n))
	}
	switch n.ShortTag() {
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			return err
		}
		w.V = b
	case "!!int":
		i, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
		if err != nil {
			return fmt.Errorf("%q is not a 64-bit integer", n.Value)
		}
		w.V = i
	case "!!float":
		var f float64
		if err := n.Decode(&f); err != nil {
			return err
		}
		w.V = f
	case "!!str":
		w.V = n.Value
	case "!!null":
		w.V = nil
	default:
		return fmt.Errorf("want true, false, a number or a string, not %s", describe(n))
	}
	return nil
}

// MarshalYAML writes the value back as the scalar it was.
func (w WriteValue) MarshalYAML() (any, error) { return w.V, nil }

// writeActions checks the actions of one list of an inspection.
func (v *validation) writeActions(path string, as []WriteAction, sources []Source) {
	for i, a := range as {
		p := fmt.Sprintf("%s[%d]", path, i)
		found := false
		for _, s := range sources {
			found = found || s.Name == a.Writer
		}
		if !found {
			v.fail("%s.writer: %q is not the name of a source", p, a.Writer)
		}
		if strings.TrimSpace(a.Target) == "" {
			v.fail("%s.target: empty; name the coil, register or node to write", p)
		}
		switch x := a.Value.V.(type) {
		case nil:
			v.fail("%s.value: missing; write true, false, a number or a string", p)
		case float64:
			if math.IsNaN(x) || math.IsInf(x, 0) {
				v.fail("%s.value: %v is not a finite number", p, x)
			}
		case string:
			for rest := x; ; {
				i := strings.IndexByte(rest, '{')
				if i < 0 {
					break
				}
				j := strings.IndexByte(rest[i:], '}')
				if j < 0 {
					v.fail("%s.value: %q has a '{' without '}'", p, x)
					break
				}
				ph := rest[i : i+j+1]
				known := false
				for _, k := range Placeholders {
					known = known || ph == k
				}
				if !known {
					v.fail("%s.value: %s in %q is not one of %s", p, ph, x, strings.Join(Placeholders, ", "))
				}
				rest = rest[i+j+1:]
			}
		}
	}
}
