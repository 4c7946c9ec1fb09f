//go:build linux && !race

package ws

import (
	"syscall"
	"unsafe"
)

// rawWrite is write(2) of b to the non-blocking descriptor fd as a raw
// system call (corkConn.writeRaw says why): the bytes written, or 0 and
// the error.
func rawWrite(fd uintptr, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		switch errno {
		case 0:
			return int(n), nil
		case syscall.EINTR:
			continue
		}
		return 0, errno
	}
}
