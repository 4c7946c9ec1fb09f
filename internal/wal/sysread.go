//go:build linux && !race

package wal

import (
	"syscall"
	"unsafe"
)

// sysRead is read(2) as a raw system call (rawReadConn says why).
func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), 0
}
