//go:build !linux

package ws

import "syscall"

// rawWrite is write(2) of b to fd (rawwrite.go makes it a raw system call
// on Linux).
func rawWrite(fd uintptr, b []byte) (int, error) {
	n, err := syscall.Write(int(fd), b)
	if err != nil {
		return 0, err
	}
	return n, nil
}
