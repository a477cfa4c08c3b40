//go:build !unix

package models

// Without flock, a repository is assumed to be used by one process at a time.
func lockShared(string) (func(), error) { return func() {}, nil }

func tryLockExclusive(string) (func(), bool, error) { return func() {}, true, nil }
