package ws

import (
	"errors"
	"syscall"
	"testing"
)

// TestRawWrite: bytes reach the peer; a full socket is EAGAIN with nothing
// written; a closed peer is EPIPE, an error and not a signal.
func TestRawWrite(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fds[0])
	if err := syscall.SetNonblock(fds[0], true); err != nil {
		t.Fatal(err)
	}
	if n, err := rawWrite(uintptr(fds[0]), []byte("frame")); n != 5 || err != nil {
		t.Fatalf("write: %d, %v", n, err)
	}
	got := make([]byte, 16)
	if n, err := syscall.Read(fds[1], got); err != nil || string(got[:n]) != "frame" {
		t.Fatalf("the peer read %q, %v", got[:n], err)
	}
	if n, err := rawWrite(uintptr(fds[0]), nil); n != 0 || err != nil {
		t.Fatalf("empty write: %d, %v", n, err)
	}
	chunk := make([]byte, 64<<10)
	var full error
	for i := 0; i < 1000 && full == nil; i++ {
		var n int
		n, full = rawWrite(uintptr(fds[0]), chunk)
		if full != nil && n != 0 {
			t.Fatalf("a failed write reports %d bytes", n)
		}
	}
	if !errors.Is(full, syscall.EAGAIN) {
		t.Fatalf("full socket: %v, want EAGAIN", full)
	}
	syscall.Close(fds[1])
	if _, err := rawWrite(uintptr(fds[0]), []byte("x")); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("closed peer: %v, want EPIPE", err)
	}
}
