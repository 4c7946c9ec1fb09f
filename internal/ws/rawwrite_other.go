//go:build !linux || race

package ws

import "syscall"

// rawWrite is write(2) of b to fd through syscall.Write: where the raw
// system call is not wired up (rawwrite.go), and under the race
// detector, which a raw call would not tell of the ordering a socket gives
// between its writer and its reader (TestRawWriteKeepsTheRaceDetectorsView).
func rawWrite(fd uintptr, b []byte) (int, error) {
	n, err := syscall.Write(int(fd), b)
	if err != nil {
		return 0, err
	}
	return n, nil
}
