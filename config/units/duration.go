// Package units provides the YAML forms of quantities in edged's config files:
// durations written with a unit. It stands apart from package config so that driver
// configs the config package's own tests decode (the simulators') can use it without
// an import cycle.
package units

import (
	"fmt"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration written in YAML as a Go duration string: "500ms", "10s",
// "1m30s". It exists for its error message: yaml.v3 refuses `keepalive: 30` for a
// time.Duration with "cannot unmarshal !!int `30` into time.Duration", which does not
// tell the reader that a unit is missing.
type Duration time.Duration

// UnmarshalYAML reads a duration string; a bare number is refused because no unit is
// a safe guess.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a duration like 500ms, 10s or 1m, not %s", kind(n))
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		if _, nerr := strconv.ParseFloat(n.Value, 64); nerr == nil {
			return fmt.Errorf("%q has no unit; write it like 500ms, 10s or 1m", n.Value)
		}
		return fmt.Errorf("%q is not a duration like 500ms, 10s or 1m", n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string that UnmarshalYAML reads back.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// Std returns the duration as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// String formats the duration as time.Duration does.
func (d Duration) String() string { return time.Duration(d).String() }

// kind says in words what a non-scalar YAML value is.
func kind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	return "a document"
}
