//go:build linux && race

package wal

import (
	"errors"
	"syscall"
)

// sysRead is syscall.Read under the race detector: a raw system call
// hides from it the bytes the kernel writes into p and the ordering a
// socket gives between its writer and its reader, which syscall.Read
// reports (TestRawReadKeepsTheRaceDetectorsView).
func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Read(int(fd), p)
	if err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) {
			return 0, errno
		}
		return 0, syscall.EIO
	}
	return n, 0
}
