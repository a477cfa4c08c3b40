package imagedir

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// maxSuffix bounds the names tried for one file in a folder full of namesakes.
const maxSuffix = 100000

// moveNoClobber moves src into dir under its name, or name-1, name-2... when that is
// taken: a camera that reuses names must not overwrite an earlier part's image. A hard
// link fails when the name is taken, which makes the check and the move one step; where
// links do not work (another file system, FAT) the file is copied to a new file made
// with O_EXCL, which fails the same way.
func moveNoClobber(src, dir string) (string, error) {
	name := filepath.Base(src)
	ext := filepath.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	for i := 0; i < maxSuffix; i++ {
		cand := name
		if i > 0 {
			cand = fmt.Sprintf("%s-%d%s", stem, i, ext)
		}
		dst := filepath.Join(dir, cand)
		err := os.Link(src, dst)
		if errors.Is(err, fs.ErrExist) {
			// A crash between the link and the remove leaves the file under both
			// names; finishing it again must not make a third.
			if sameFile(src, dst) {
				return dst, removeSrc(src)
			}
			continue
		}
		if err != nil {
			err = copyExcl(src, dst)
			if errors.Is(err, fs.ErrExist) {
				continue
			}
			if err != nil {
				return "", err
			}
		}
		return dst, removeSrc(src)
	}
	return "", fmt.Errorf("move %q to %q: %d names taken", src, dir, maxSuffix)
}

func removeSrc(src string) error {
	if err := os.Remove(src); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %q after moving it: %w", src, err)
	}
	return nil
}

func sameFile(a, b string) bool {
	fa, err1 := os.Lstat(a)
	fb, err2 := os.Lstat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}

func copyExcl(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("move %q: %w", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return err
		}
		return fmt.Errorf("move %q to %q: %w", src, dst, err)
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
		return fmt.Errorf("move %q to %q: %w", src, dst, err)
	}
	return nil
}
