package sim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDump(t *testing.T) {
	const n = 25
	cfg := DefaultConfig()
	cfg.Seed, cfg.DefectRate, cfg.Width, cfg.Height = 5, 0.5, 96, 64
	a, b := t.TempDir(), t.TempDir()
	counts, err := Dump(context.Background(), a, n, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Dump(context.Background(), b, n, cfg); err != nil {
		t.Fatal(err)
	}

	index, err := os.ReadFile(filepath.Join(a, LabelsFile))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(index), "\n"), "\n")
	if len(lines) != n+1 || lines[0] != "file,label" {
		t.Fatalf("%s has %d lines, header %q", LabelsFile, len(lines), lines[0])
	}
	g := newGen(t, func(c *Config) { *c = *cfg })
	want := make([]byte, 96*64)
	got := map[string]int{}
	for i, line := range lines[1:] {
		name, label, ok := strings.Cut(line, ",")
		if !ok || name != fmt.Sprintf("%02d.png", i+1) {
			t.Fatalf("line %d: %q", i+2, line)
		}
		got[label]++
		if l := g.Next(want); l != label {
			t.Fatalf("%s: label %q, generator says %q", name, label, l)
		}
		fa, err := os.ReadFile(filepath.Join(a, name))
		if err != nil {
			t.Fatal(err)
		}
		fb, err := os.ReadFile(filepath.Join(b, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fa, fb) {
			t.Fatalf("%s differs between two dumps of the same config", name)
		}
		img, err := png.Decode(bytes.NewReader(fa))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		gray, ok := img.(*image.Gray)
		if !ok || gray.Rect.Dx() != 96 || gray.Rect.Dy() != 64 || !bytes.Equal(gray.Pix, want) {
			t.Fatalf("%s: decoded %T %v does not hold the generator's image", name, img, img.Bounds())
		}
	}
	for l, c := range got {
		if counts[l] != c {
			t.Errorf("Dump counted %v, %s says %v", counts, LabelsFile, got)
			break
		}
	}
}

func TestDumpCancelled(t *testing.T) {
	dir := t.TempDir()
	if _, err := Dump(context.Background(), dir, 3, DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Dump(ctx, dir, 3, DefaultConfig()); !errors.Is(err, context.Canceled) {
		t.Fatalf("Dump on a cancelled context = %v", err)
	}
	// A dump cut short leaves no index, not even the earlier dump's.
	if _, err := os.Stat(filepath.Join(dir, LabelsFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after a cancelled dump: %v", LabelsFile, err)
	}
}

func TestDumpRejects(t *testing.T) {
	if _, err := Dump(context.Background(), t.TempDir(), 0, DefaultConfig()); err == nil {
		t.Error("n 0 accepted")
	}
	bad := DefaultConfig()
	bad.Height = 1
	if _, err := Dump(context.Background(), t.TempDir(), 1, bad); err == nil {
		t.Error("height 1 accepted")
	}
}
