package ws

import (
	"bufio"
	"encoding/binary"
	"errors"
	"math"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// corkConn sits between coder/websocket and the TCP connection. While
// corked it gathers every frame the library flushes, and uncork sends them
// in one write: a socket writer that finds several frames queued (a
// transaction's cache_invalidate and domain event, a backlog) pays one
// syscall for all of them instead of one each. Every real write carries the
// write timeout as a deadline.
type corkConn struct {
	net.Conn
	timeout time.Duration

	// raw writes without blocking for the write workers; nil when the
	// connection has no file descriptor (then they hand every write to
	// the socket's own goroutine).
	raw syscall.RawConn
	// rawWrite is made once: a closure per write would escape to the heap
	// on every write. It writes buf and leaves the result in rawN/rawErr;
	// all three are guarded by mu.
	rawWrite func(fd uintptr) bool
	rawN     int
	rawErr   error

	mu     sync.Mutex
	corked bool
	// limit is what the cork gathers before it writes anyway.
	limit int
	buf   []byte
	// deadline is the write deadline last set; it is moved forward only
	// when less than half the timeout is left, so a busy socket does not
	// reprogram a timer on every write. A write therefore gets between
	// half the timeout and the whole of it.
	deadline time.Time
}

// maxCorked bounds what a cork gathers before it writes anyway.
const maxCorked = 64 << 10

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked && len(c.buf)+len(p) <= c.limit {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	if err := c.flushLocked(); err != nil {
		return 0, err
	}
	return c.writeLocked(p)
}

func (c *corkConn) writeLocked(p []byte) (int, error) {
	if err := c.armDeadline(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (c *corkConn) armDeadline() error {
	if now := time.Now(); c.deadline.Sub(now) < c.timeout/2 {
		c.deadline = now.Add(c.timeout)
		return c.Conn.SetWriteDeadline(c.deadline)
	}
	return nil
}

func (c *corkConn) flushLocked() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.writeLocked(c.buf)
	c.buf = c.buf[:0]
	return err
}

// writeText appends one unfragmented, unmasked text frame (RFC 6455 §5.2;
// a server never masks, and walcast negotiates no extension) carrying p,
// written whole under the cork's lock so no other frame interleaves. Data
// frames take this path instead of coder/websocket's writer, which would
// take its own locks and copy each frame through a second buffer;
// control frames (ping, pong, close) still go through the library, each
// whole in one Write.
func (c *corkConn) writeText(p []byte) error {
	var hdr [10]byte
	hdr[0] = 0x81 // FIN + text
	n := 2
	switch l := len(p); {
	case l < 126:
		hdr[1] = byte(l)
	case l <= 0xFFFF:
		hdr[1] = 126
		binary.BigEndian.PutUint16(hdr[2:], uint16(l))
		n = 4
	default:
		hdr[1] = 127
		binary.BigEndian.PutUint64(hdr[2:], uint64(l))
		n = 10
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked && len(c.buf)+n+len(p) <= c.limit {
		c.buf = append(c.buf, hdr[:n]...)
		c.buf = append(c.buf, p...)
		return nil
	}
	if err := c.flushLocked(); err != nil {
		return err
	}
	c.buf = append(append(c.buf, hdr[:n]...), p...)
	return c.flushLocked()
}

func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked, c.limit = true, maxCorked
	c.mu.Unlock()
}

// corkAll gathers without a bound, so appending never writes: a write
// worker must not block on one socket. The hub's queue bound limits what
// it gathers.
func (c *corkConn) corkAll() {
	c.mu.Lock()
	c.corked, c.limit = true, math.MaxInt
	c.mu.Unlock()
}

// tryUncork writes what was gathered with one write that does not block.
// It reports false when some of it is left: the socket's buffer is full,
// the write failed, or there is no descriptor to write to. What is left
// stays for flush, which blocks (and meets the error, if there was one).
func (c *corkConn) tryUncork() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	if len(c.buf) == 0 {
		return true
	}
	if c.raw == nil || c.armDeadline() != nil {
		return false
	}
	c.rawN, c.rawErr = 0, nil
	err := c.raw.Write(c.rawWrite)
	n, werr := c.rawN, c.rawErr
	if n > 0 {
		c.buf = c.buf[:copy(c.buf, c.buf[n:])]
	}
	if err != nil || werr != nil || len(c.buf) > 0 {
		return false
	}
	if cap(c.buf) > maxCorked {
		c.buf = nil
	}
	return true
}

// writeRaw is the RawConn write: one write(2) of buf that never waits for
// the socket (flush does that).
func (c *corkConn) writeRaw(fd uintptr) bool {
	c.rawN, c.rawErr = syscall.Write(int(fd), c.buf)
	return true
}

// pending reports whether gathered bytes wait for flush.
func (c *corkConn) pending() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.buf) > 0
}

// flush writes what is left, blocking up to the write timeout.
func (c *corkConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flushLocked()
}

// uncork writes what was gathered.
func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	err := c.flushLocked()
	if cap(c.buf) > maxCorked {
		c.buf = nil // do not keep a large buffer on an idle socket
	}
	return err
}

// corkingWriter hands coder/websocket a corkConn when it hijacks the
// connection.
type corkingWriter struct {
	http.ResponseWriter
	timeout time.Duration
	conn    *corkConn
}

func (w *corkingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *corkingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		var rw http.ResponseWriter = w.ResponseWriter
		for {
			u, ok := rw.(interface{ Unwrap() http.ResponseWriter })
			if !ok {
				return nil, nil, errors.New("response writer cannot hijack")
			}
			rw = u.Unwrap()
			if hj, ok = rw.(http.Hijacker); ok {
				break
			}
		}
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	// The 101 response may still sit in the server's buffer.
	if err := brw.Writer.Flush(); err != nil {
		return nil, nil, err
	}
	w.conn = &corkConn{Conn: conn, timeout: w.timeout, limit: maxCorked}
	if sc, ok := conn.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			w.conn.raw = raw
			w.conn.rawWrite = w.conn.writeRaw
		}
	}
	return w.conn, bufio.NewReadWriter(brw.Reader, bufio.NewWriterSize(w.conn, 4<<10)), nil
}
