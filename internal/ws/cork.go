package ws

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"golang.org/x/time/rate"
)

// corkConn sits between coder/websocket and the TCP connection. Every frame,
// walcast's data frames and the library's control frames (pong, ping,
// close), is appended whole to one buffer under mu, and mu is never held
// across a write that can block. Bytes reach the connection one writer at a
// time (wire), in one of two ways:
//
//   - tryFlush: one write(2) that never waits, by the write workers and by
//     the library's own control frames;
//   - flush: writes that wait up to the write timeout, only ever by the
//     socket's own goroutine.
//
// So no socket's I/O can hold up another socket's writer, and a client's
// control frames count against its own buffer: when the library's frames
// find more than maxBacklog bytes unsent, its write fails and the socket
// closes. A writer that finds several frames queued pays one syscall for
// all of them.
type corkConn struct {
	net.Conn
	timeout time.Duration

	// raw writes without blocking; nil when the connection has no file
	// descriptor (then everything goes through flush).
	raw syscall.RawConn
	// rawWrite is made once: a closure per write would escape to the heap
	// on every write. It writes buf and leaves the result in rawN/rawErr;
	// all three are used with both locks held.
	rawWrite func(fd uintptr) bool
	rawN     int
	rawErr   error
	// onBacklog is called when bytes the library queued are left unsent:
	// the socket's goroutine must flush them.
	onBacklog func()
	// readLim is the client's byte budget, exhaustedSince when the client
	// last found it exhausted after having let it refill, onFlood told
	// when that is floodWait ago; all three guarded by chargeMu.
	chargeMu       sync.Mutex
	readLim        *rate.Limiter
	exhaustedSince time.Time
	onFlood        func()
	// peekMu keeps waitReadable's look into the library's read buffer
	// apart from the one read the library makes outside the socket's read
	// goroutine: Close reads the peer's close frame itself. Held around
	// Close (closeHandshake) and around the look.
	peekMu sync.Mutex

	// wire is held by whoever writes to the connection.
	wire sync.Mutex
	// out is what flush is writing, and deadline the write deadline last
	// set; both guarded by wire. The deadline is moved forward only when
	// less than half the timeout is left, so a busy socket does not
	// reprogram a timer on every write: a write gets between half the
	// timeout and the whole of it.
	out      []byte
	outEnds  []int
	deadline time.Time

	mu  sync.Mutex
	buf []byte
	// box is buf's holder in corkPool while the socket has a buffer; an
	// idle socket gives it back (releaseIfIdle). busy says data frames
	// were appended since the last releaseIfIdle.
	box  *[]byte
	busy bool
	// ends are the offsets in buf where frames end, and midFrame says
	// that buf starts inside a frame (a write stopped there): a socket
	// closed as slow sends the rest of that frame, then its close frame,
	// and drops the frames behind it.
	ends     []int
	midFrame bool
}

// maxCorked is the largest buffer capacity kept for reuse; larger ones
// are let go once written.
const maxCorked = 64 << 10

// corkPool holds the buffers of sockets that have nothing to send: at tens
// of thousands of idle sockets, a buffer each was a kilobyte per socket
// for frames sent long ago.
var corkPool = sync.Pool{New: func() any { return new([]byte) }}

// take gives the socket a buffer from corkPool if it has none; mu held.
func (c *corkConn) take() {
	if c.box == nil {
		c.box = corkPool.Get().(*[]byte)
		c.buf = (*c.box)[:0]
	}
}

// giveBack returns the empty buffer to corkPool; mu held.
func (c *corkConn) giveBack() {
	if c.box == nil || len(c.buf) > 0 {
		return
	}
	if cap(c.buf) > maxCorked {
		c.buf = nil
	}
	*c.box = c.buf[:0]
	corkPool.Put(c.box)
	c.box, c.buf = nil, nil
}

// maxBacklog bounds the unsent bytes behind which the library may still
// queue a control frame: a client that floods pings and does not read
// fills it with its own pongs, and is closed.
const maxBacklog = 1 << 20

// errBacklog fails the library's write when the client does not read.
var errBacklog = errors.New("client does not read: control frame backlog full")

// Write is the library's: one whole control frame (or its handshake
// flush). It never waits for the network.
func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if len(c.buf)+len(p) > maxBacklog {
		c.mu.Unlock()
		return 0, errBacklog
	}
	c.take()
	c.buf = append(c.buf, p...)
	c.ends = append(c.ends, len(c.buf))
	c.mu.Unlock()
	if !c.tryFlush() && c.onBacklog != nil {
		c.onBacklog()
	}
	return len(p), nil
}

// writeText appends one unfragmented, unmasked text frame (RFC 6455 §5.2;
// a server never masks, and walcast negotiates no extension) carrying p.
// Data frames take this path instead of coder/websocket's writer, which
// would take its own locks and copy each frame through a second buffer.
// Nothing is written until tryFlush or flush.
func (c *corkConn) writeText(p []byte) {
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
	c.take()
	c.busy = true
	c.buf = append(append(c.buf, hdr[:n]...), p...)
	c.ends = append(c.ends, len(c.buf))
	c.mu.Unlock()
}

// reserve makes room for n more bytes in one allocation: appending a
// large batch frame by frame grew the buffer by doubling, copying it each
// time (in a room of 10,000 sockets that fell behind, most of walcast's
// CPU).
func (c *corkConn) reserve(n int) {
	c.mu.Lock()
	c.take()
	if cap(c.buf)-len(c.buf) < n {
		c.buf = append(make([]byte, 0, len(c.buf)+n), c.buf...)
	}
	c.mu.Unlock()
}

// Control frame opcodes walcast writes itself (RFC 6455 §5.5).
const (
	opClose byte = 0x8
	opPing  byte = 0x9
)

// writeControl appends a control frame with a payload of at most 125
// bytes; false, and nothing appended, past maxBacklog (the bound the
// library's own control frames have, see Write).
func (c *corkConn) writeControl(op byte, p []byte) bool {
	p = p[:min(len(p), 125)]
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.buf)+2+len(p) > maxBacklog {
		return false
	}
	c.take()
	c.buf = append(append(c.buf, 0x80|op, byte(len(p))), p...)
	c.ends = append(c.ends, len(c.buf))
	return true
}

// writeClose appends a close frame (RFC 6455 §5.5.1) with code and a
// reason of at most 123 bytes, for a close that does not wait for the
// peer's answer.
func (c *corkConn) writeClose(code uint16, reason string) {
	reason = reason[:min(len(reason), 123)]
	c.mu.Lock()
	c.take()
	c.buf = append(c.buf, 0x88, byte(2+len(reason)), byte(code>>8), byte(code))
	c.buf = append(c.buf, reason...)
	c.ends = append(c.ends, len(c.buf))
	c.mu.Unlock()
}

// Close sends what is buffered if the socket takes it at once (a close
// frame the library queued behind a write in progress), then closes.
func (c *corkConn) Close() error {
	c.tryFlush()
	return c.Conn.Close()
}

// tryFlush writes what is buffered with one write that does not wait. It
// reports false when some of it is left: another writer holds the
// connection, the socket's buffer is full, the write failed, or there is
// no descriptor to write to. What is left stays for flush.
func (c *corkConn) tryFlush() bool {
	if !c.wire.TryLock() {
		return false
	}
	defer c.wire.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.buf) == 0 {
		return true
	}
	if c.raw == nil {
		return false
	}
	c.rawN, c.rawErr = 0, nil
	err := c.raw.Write(c.rawWrite)
	if n := c.rawN; n > 0 {
		c.buf = c.buf[:copy(c.buf, c.buf[n:])]
		c.ends, c.midFrame = consumed(c.ends, n)
	}
	if err != nil || c.rawErr != nil || len(c.buf) > 0 {
		return false
	}
	if cap(c.buf) > maxCorked {
		c.buf = nil
	}
	return true
}

// releaseIfIdle gives the buffer back when nothing was sent since the last
// call: a busy socket keeps it (taking one from the pool per write and
// growing it was most of the CPU of a room of 10,000 sockets), an idle one
// holds none. The ping timer calls it.
func (c *corkConn) releaseIfIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.busy {
		c.giveBack()
	}
	c.busy = false
}

// writeRaw is the RawConn write: one write(2) of buf that never waits for
// the socket (flush does that).
//
// It is a raw system call, which Go's scheduler is not told of: a write
// entered as a system call wakes the runtime's monitor thread (sysmon)
// when walcast was idle, and it then polls every 20 µs for a millisecond,
// at every transaction after a pause. A write of a non-blocking socket
// never blocks, so it needs no such watch.
func (c *corkConn) writeRaw(fd uintptr) bool {
	c.rawN, c.rawErr = rawWrite(fd, c.buf)
	return true
}

// pending reports whether buffered bytes wait to be written.
func (c *corkConn) pending() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.buf) > 0
}

// flush writes everything buffered, waiting for the socket up to the
// write timeout for each write; frames appended meanwhile go too. Only
// the socket's own goroutine calls it: it may block, on this socket only.
// On an error what was not written stays buffered, in order.
func (c *corkConn) flush() error {
	c.wire.Lock()
	defer c.wire.Unlock()
	for {
		c.mu.Lock()
		if len(c.buf) == 0 {
			// Nothing left: both buffers go (only a socket that blocked
			// comes here, and it may stay idle for long).
			c.giveBack()
			c.out, c.outEnds = nil, nil
			c.mu.Unlock()
			return nil
		}
		c.out, c.buf = c.buf, c.out[:0]
		c.outEnds, c.ends = c.ends, c.outEnds[:0]
		c.mu.Unlock()
		n := 0
		err := c.armDeadline()
		if err == nil {
			n, err = c.Conn.Write(c.out)
		}
		if err != nil {
			c.mu.Lock()
			ends, mid := consumed(c.outEnds, n)
			rest := len(c.out) - n
			for _, e := range c.ends {
				ends = append(ends, rest+e)
			}
			c.buf = append(append(make([]byte, 0, rest+len(c.buf)), c.out[n:]...), c.buf...)
			c.ends, c.midFrame = ends, mid || (n == 0 && c.midFrame)
			c.out, c.outEnds = nil, nil
			c.mu.Unlock()
			return err
		}
		c.mu.Lock()
		c.midFrame = false // all of out went: buf starts with a whole frame
		c.mu.Unlock()
		if cap(c.out) > maxCorked {
			c.out, c.outEnds = nil, nil
		} else {
			c.out, c.outEnds = c.out[:0], c.outEnds[:0]
		}
	}
}

// consumed returns the frame ends of a buffer from which the first n
// bytes were written, and whether it now starts inside a frame.
func consumed(ends []int, n int) ([]int, bool) {
	i := 0
	for i < len(ends) && ends[i] <= n {
		i++
	}
	atBoundary := n == 0 || (i > 0 && ends[i-1] == n)
	rest := ends[:copy(ends, ends[i:])]
	for j := range rest {
		rest[j] -= n
	}
	return rest, len(rest) > 0 && !atBoundary
}

// cutToFrameInFlight drops every buffered frame that has not begun to be
// written, keeping the rest of the one that has: what is sent next then
// ends on a frame boundary at once (a close frame can follow).
func (c *corkConn) cutToFrameInFlight() {
	c.wire.Lock()
	defer c.wire.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.midFrame && len(c.ends) > 0 {
		c.buf, c.ends = c.buf[:c.ends[0]], c.ends[:1]
		return
	}
	c.buf, c.ends, c.midFrame = c.buf[:0], c.ends[:0], false
}

func (c *corkConn) armDeadline() error {
	if now := time.Now(); c.deadline.Sub(now) < c.timeout/2 {
		c.deadline = now.Add(c.timeout)
		return c.Conn.SetWriteDeadline(c.deadline)
	}
	return nil
}

// corkingWriter hands coder/websocket a corkConn when it hijacks the
// connection, and a reader that holds the client to a byte budget.
type corkingWriter struct {
	http.ResponseWriter
	timeout time.Duration
	conn    *corkConn
	// reader is the socket's buffered reader, handed to the library;
	// early counts the bytes the client sent behind its handshake, which
	// the library puts back in front of the connection, outside the
	// buffer (see refill).
	reader *bufio.Reader
	early  int
	// readRate and readBurst are the client's byte budget (bytes/s).
	readRate  float64
	readBurst int
}

// floodWait is how long a client may keep its read budget exhausted.
const floodWait = 2 * time.Second

// Read makes the client's bytes wait for its budget. Frames the frame
// limiter never sees (empty continuation frames of a message that never
// ends, unsolicited pongs) cost walcast CPU all the same: a flood of them
// is slowed to the budget at the TCP level, and a client that keeps the
// budget exhausted for floodWait is reported (onFlood; the socket is then
// closed with 1008). Only the socket's read goroutine reads.
func (c *corkConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.charge(n)
	return n, err
}

// charge makes n bytes the client sent wait for its budget; read
// goroutine only.
func (c *corkConn) charge(n int) {
	if n <= 0 || c.readLim == nil {
		return
	}
	if d := c.budget(n); d > 0 {
		time.Sleep(min(d, floodWait))
	}
}

// budget takes n bytes from the client's budget and says how long they
// must wait. Under chargeMu: the socket's goroutine charges the pings and
// pongs it takes while Close may be reading the peer's close frame.
func (c *corkConn) budget(n int) time.Duration {
	c.chargeMu.Lock()
	defer c.chargeMu.Unlock()
	now := time.Now()
	r := c.readLim.ReserveN(now, n)
	d := r.Delay()
	if !r.OK() {
		d = floodWait
	}
	if d <= 0 {
		// A run of waits ends when the client lets the budget refill to
		// half, not at the first read that waits for nothing: a sleep
		// that overshoots on a loaded machine refills a few hundred
		// bytes, and ending the run there let a flood that keeps the
		// budget exhausted go on forever.
		if c.readLim.TokensAt(now) >= float64(c.readLim.Burst())/2 {
			c.exhaustedSince = time.Time{}
		}
		return 0
	}
	if c.exhaustedSince.IsZero() {
		c.exhaustedSince = now
	}
	if now.Add(d).Sub(c.exhaustedSince) >= floodWait && c.onFlood != nil {
		c.onFlood()
		c.onFlood = nil
	}
	return d
}

// waitReadable returns once the client has sent bytes (or the connection
// is closed, or failed), parking the calling goroutine on a shallow stack.
// The library's read blocks twenty calls deep; a socket's goroutine that
// waits here instead is shrunk by the collector to a few kilobytes while
// its client is idle. It reads nothing: a peek that finds no byte waits
// for readability, like a read that would block.
func (c *corkConn) waitReadable(buffered *bufio.Reader) error {
	if c.raw == nil {
		return nil
	}
	if buffered != nil {
		c.peekMu.Lock()
		n := buffered.Buffered()
		c.peekMu.Unlock()
		if n > 0 {
			return nil
		}
	}
	var peek [1]byte
	return c.raw.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), peek[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EINTR)
	})
}

// errNothingSent is peekRaw's answer when the client has sent nothing more.
var errNothingSent = errors.New("nothing sent")

// peekRaw copies what the client sent and nothing has read yet into b,
// without taking it: errNothingSent when there is nothing; 0 and no error
// at the end of the stream. Only while the library's read buffer is empty
// (then the connection's next bytes are the next frame's).
func (c *corkConn) peekRaw(b []byte) (n int, err error) {
	if c.raw == nil {
		return 0, errNothingSent // the library reads everything
	}
	rerr := c.raw.Read(func(fd uintptr) bool {
		for {
			n, _, err = syscall.Recvfrom(int(fd), b, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			if !errors.Is(err, syscall.EINTR) {
				return true
			}
		}
	})
	if errors.Is(err, syscall.EAGAIN) {
		return 0, errNothingSent
	}
	if err == nil {
		err = rerr
	}
	return max(n, 0), err
}

// takeRaw takes len(b) bytes peekRaw has seen (the caller charges them).
func (c *corkConn) takeRaw(b []byte) error {
	var n int
	var err error
	rerr := c.raw.Read(func(fd uintptr) bool {
		for {
			n, _, err = syscall.Recvfrom(int(fd), b, syscall.MSG_DONTWAIT)
			if !errors.Is(err, syscall.EINTR) {
				return true
			}
		}
	})
	switch {
	case err != nil:
		return err
	case rerr != nil:
		return rerr
	case n != len(b):
		// The kernel gave back fewer bytes than it showed: the stream
		// can no longer be read in step.
		return fmt.Errorf("read %d of %d bytes seen", n, len(b))
	}
	return nil
}

func (w *corkingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// refill puts the bytes sent behind the handshake back into the reader's
// buffer once the library has accepted the socket: its Accept moves them
// in front of the connection, where neither a look into the buffer nor a
// peek at the connection (waitReadable, peekRaw) would see them. The
// buffer holds them all (Hijack sized it), so nothing is read from the
// connection. Before the socket's goroutines start.
func (w *corkingWriter) refill() error {
	if w.early == 0 {
		return nil
	}
	_, err := w.reader.Peek(w.early)
	return err
}

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
	// The HTTP server's read and write deadlines end with the request.
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, nil, err
	}
	w.conn = &corkConn{Conn: conn, timeout: w.timeout}
	if sc, ok := conn.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			w.conn.raw = raw
			w.conn.rawWrite = w.conn.writeRaw
		}
	}
	if w.readRate > 0 {
		w.conn.readLim = rate.NewLimiter(rate.Limit(w.readRate), max(w.readBurst, 8<<10))
	}
	// The HTTP server's 4 KiB reader is let go for a small one: clients
	// send a few small frames, and an idle socket would hold the buffer
	// for its whole life. Bytes the client sent behind the handshake
	// are read first.
	// They must sit in the new reader's buffer: the library keeps what
	// is buffered and resets the reader onto the connection.
	br := bufio.NewReaderSize(w.conn, socketReadBuffer)
	if n := brw.Reader.Buffered(); n > 0 {
		early, _ := brw.Reader.Peek(n)
		br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(early)), w.conn), max(n, socketReadBuffer))
		if _, err := br.Peek(n); err != nil {
			return nil, nil, err
		}
	}
	// The library writes only control frames (at most 139 bytes) through
	// its writer; walcast's data frames go straight into the cork.
	w.reader, w.early = br, br.Buffered()
	return w.conn, bufio.NewReadWriter(br, bufio.NewWriterSize(w.conn, socketWriteBuffer)), nil
}

// Buffer sizes of a socket's reader and of the library's writer. Larger
// client frames are read through the small buffer in more than one read.
const (
	socketReadBuffer  = 512
	socketWriteBuffer = 256
)
