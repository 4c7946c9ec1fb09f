//go:build linux

package wal

import (
	"context"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
)

// rawReadConn is the replication connection's socket, read with a raw
// read(2) that does not tell Go's scheduler it enters a system call.
//
// Why: the stream arrives as thousands of small messages a second, and
// between them walcast is idle, its runtime's monitor thread (sysmon)
// asleep. A read entered as a system call wakes that thread, which then
// polls every 20 µs for a millisecond before sleeping again: a fifth of
// walcast's CPU under a write load, in usleep and futex calls that are
// dear on a virtual machine (docs/benchmarks.md, profile 15). A read of a
// non-blocking socket never blocks, so it needs no such watch; waiting
// for data, deadlines and Close stay with Go's network poller. Under the
// race detector the read is syscall.Read (sysread_race.go).
type rawReadConn struct {
	net.Conn
	raw syscall.RawConn
}

// rawReads wraps what dial returns in a rawReadConn where it can: a socket
// whose descriptor Go exposes. Anything else is returned as it is.
func rawReads(dial pgconn.DialFunc) pgconn.DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		sc, ok := c.(syscall.Conn)
		if !ok {
			return c, nil
		}
		raw, err := sc.SyscallConn()
		if err != nil {
			return c, nil
		}
		return &rawReadConn{Conn: c, raw: raw}, nil
	}
}

// Read reads what the socket holds, waiting in Go's network poller while
// it holds nothing.
func (c *rawReadConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := c.raw.Read(func(fd uintptr) bool {
		for {
			n, errno = sysRead(fd, p)
			if errno != syscall.EINTR {
				break
			}
		}
		return errno != syscall.EAGAIN
	})
	switch {
	case err != nil:
		// Closed, or past the deadline: the network poller's own error.
		return 0, err
	case errno != 0:
		return 0, &net.OpError{Op: "read", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("read", errno)}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}
