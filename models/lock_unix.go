//go:build unix

package models

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockShared holds the repository folder against another process's OpenRepository
// clearing temporary entries while one of ours exists. Holders share it.
func lockShared(dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("lock model repository %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock model repository %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}

// tryLockExclusive takes the folder only when nobody holds it: leftovers are cleared
// when no install, activation or removal is under way in any process.
func tryLockExclusive(dir string) (unlock func(), ok bool, err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, false, fmt.Errorf("lock model repository %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("lock model repository %s: %w", dir, err)
	}
	return func() { f.Close() }, true, nil
}
