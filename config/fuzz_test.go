package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds outside bytes to Parse: it must return a config or an error, never
// panic, and a config it returns must pass Validate.
func FuzzParse(f *testing.F) {
	f.Add(demoYAML)
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := Parse(b)
		if err != nil {
			if cfg != nil {
				t.Fatal("Parse returned a config with its error")
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Parse returned a config that fails Validate: %v", err)
		}
		for i, s := range cfg.Sources {
			if s.Driver == nil {
				t.Fatalf("sources[%d] has no driver config", i)
			}
		}
	})
}
