package sim

import (
	"bufio"
	"context"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strconv"
)

// LabelsFile is the index Dump writes beside the images: a header line "file,label",
// then one line per image.
const LabelsFile = "labels.csv"

// Dump writes the first n images of cfg's sequence into dir as PNG files with a
// labels.csv index, and returns how many images got each label. The same config gives
// the same files byte for byte. The index is written last, by rename, so a dump that
// was cut short has none and is not mistaken for a whole one; files left in dir by an
// earlier dump are overwritten, not removed, and the index lists only this one's.
func Dump(ctx context.Context, dir string, n int, cfg *Config) (map[string]int, error) {
	return DumpProgress(ctx, dir, n, cfg, nil)
}

// DumpProgress is Dump that calls progress, when set, after each image written with
// the count so far.
func DumpProgress(ctx context.Context, dir string, n int, cfg *Config, progress func(done int)) (map[string]int, error) {
	if n <= 0 {
		return nil, fmt.Errorf("dump: n %d is not positive", n)
	}
	g, err := NewGenerator(cfg)
	if err != nil {
		return nil, fmt.Errorf("dump: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("dump: %w", err)
	}
	// A stale index would describe files this dump is about to replace.
	if err := os.Remove(filepath.Join(dir, LabelsFile)); err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("dump: %w", err)
	}

	w, h := g.Size()
	img := image.NewGray(image.Rect(0, 0, w, h))
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	digits := len(strconv.Itoa(n))
	counts := make(map[string]int, len(DefectLabels)+1)
	index := make([]byte, 0, 32*(n+1))
	index = append(index, "file,label\n"...)
	for i := 1; i <= n; i++ {
		if err := ctx.Err(); err != nil {
			return counts, fmt.Errorf("dump: stopped after %d of %d images: %w", i-1, n, err)
		}
		label := g.Next(img.Pix)
		name := fmt.Sprintf("%0*d.png", digits, i)
		if err := writePNG(filepath.Join(dir, name), &enc, img); err != nil {
			return counts, fmt.Errorf("dump: %w", err)
		}
		counts[label]++
		index = append(index, name...)
		index = append(index, ',')
		index = append(index, label...)
		index = append(index, '\n')
		if progress != nil {
			progress(i)
		}
	}
	if err := writeAtomic(filepath.Join(dir, LabelsFile), index); err != nil {
		return counts, fmt.Errorf("dump: %w", err)
	}
	return counts, nil
}

func writePNG(path string, enc *png.Encoder, img image.Image) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(f)
	if err := enc.Encode(bw, img); err != nil {
		f.Close()
		return fmt.Errorf("encode %s: %w", path, err)
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
