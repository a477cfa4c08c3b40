//go:build unix

package linepage

import "syscall"

// smallReceiveBuffer shrinks a test client's socket receive buffer before it connects,
// so that a client that never reads stalls the server's writes after a few kilobytes
// instead of megabytes.
func smallReceiveBuffer(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
	})
	if err != nil {
		return err
	}
	return serr
}
