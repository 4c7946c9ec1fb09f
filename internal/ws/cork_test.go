package ws

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

type captureConn struct {
	net.Conn
	buf    bytes.Buffer
	writes int
}

func (c *captureConn) Write(p []byte) (int, error)      { c.writes++; return c.buf.Write(p) }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }

// parseFrame reads one server frame header and payload (RFC 6455 §5.2).
func parseFrame(t *testing.T, b []byte) (fin bool, opcode byte, payload, rest []byte) {
	t.Helper()
	if len(b) < 2 {
		t.Fatalf("short frame %x", b)
	}
	fin, opcode = b[0]&0x80 != 0, b[0]&0x0F
	if b[0]&0x70 != 0 || b[1]&0x80 != 0 {
		t.Fatalf("RSV bits or mask set: %x", b[:2])
	}
	n, off := int(b[1]&0x7F), 2
	switch n {
	case 126:
		n, off = int(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		n, off = int(binary.BigEndian.Uint64(b[2:])), 10
	}
	return fin, opcode, b[off : off+n], b[off+n:]
}

func TestWriteTextFrames(t *testing.T) {
	for _, size := range []int{0, 1, 125, 126, 1000, 65535, 65536, 70000} {
		cc := &captureConn{}
		c := &corkConn{Conn: cc, timeout: time.Second}
		payload := bytes.Repeat([]byte{'x'}, size)
		c.writeText(payload)
		c.writeText([]byte(`{"type":"pong"}`))
		if err := c.flush(); err != nil {
			t.Fatal(err)
		}
		fin, op, got, rest := parseFrame(t, cc.buf.Bytes())
		if !fin || op != 1 || !bytes.Equal(got, payload) {
			t.Fatalf("size %d: fin %v op %d len %d", size, fin, op, len(got))
		}
		if _, _, second, rest2 := parseFrame(t, rest); string(second) != `{"type":"pong"}` || len(rest2) != 0 {
			t.Fatalf("size %d: second frame %q, %d bytes left", size, second, len(rest2))
		}
		if cc.writes != 1 {
			t.Fatalf("size %d: %d writes, want 1", size, cc.writes)
		}
	}
}

// TestControlFramesNeverWait: the library's writes (pongs, pings, close)
// only queue when the client does not read, and past maxBacklog they fail:
// no lock is held across a write that can block, so a writer of another
// socket never waits on this one.
func TestControlFramesNeverWait(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String()) // never read
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	_ = client.(*net.TCPConn).SetReadBuffer(4096)
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	_ = server.(*net.TCPConn).SetWriteBuffer(4096)
	woken := 0
	c := &corkConn{Conn: server, timeout: time.Second, onBacklog: func() { woken++ }}
	raw, err := server.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	c.raw, c.rawWrite = raw, c.writeRaw
	pong := append([]byte{0x8A, 125}, bytes.Repeat([]byte{'p'}, 125)...) // the largest control frame
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := c.Write(pong); err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if err != errBacklog {
			t.Fatalf("err = %v, want errBacklog", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a control frame write blocked")
	}
	if woken == 0 {
		t.Fatal("the socket's goroutine was never told of the backlog")
	}
	// The buffer and a writer's non-blocking attempt stay free meanwhile.
	if !c.pending() || c.tryFlush() {
		t.Fatal("want bytes pending and a non-blocking flush to give up")
	}
}

func TestConsumed(t *testing.T) {
	for _, tc := range []struct {
		ends []int
		n    int
		want []int
		mid  bool
	}{
		{[]int{10, 20, 30}, 0, []int{10, 20, 30}, false},
		{[]int{10, 20, 30}, 5, []int{5, 15, 25}, true},
		{[]int{10, 20, 30}, 10, []int{10, 20}, false},
		{[]int{10, 20, 30}, 15, []int{5, 15}, true},
		{[]int{10, 20, 30}, 30, []int{}, false},
	} {
		got, mid := consumed(append([]int(nil), tc.ends...), tc.n)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) || mid != tc.mid {
			t.Errorf("consumed(%v, %d) = %v %v, want %v %v", tc.ends, tc.n, got, mid, tc.want, tc.mid)
		}
	}
}

// stallConn takes limit bytes, then times out like a client that stopped
// reading.
type stallConn struct {
	captureConn
	limit int
}

func (c *stallConn) Write(p []byte) (int, error) {
	n := min(len(p), c.limit-c.buf.Len())
	c.buf.Write(p[:n])
	if n < len(p) {
		return n, os.ErrDeadlineExceeded
	}
	return n, nil
}

// TestSlowCloseEndsOnAFrameBoundary: when a write times out mid-frame,
// what was not written stays buffered in order, and cutting for the close
// keeps exactly the rest of the frame in flight: the bytes on the wire then
// end on a whole frame, and a close frame can follow.
func TestSlowCloseEndsOnAFrameBoundary(t *testing.T) {
	sc := &stallConn{limit: 150}
	c := &corkConn{Conn: sc, timeout: time.Second}
	for i := range 5 {
		c.writeText(bytes.Repeat([]byte{byte('a' + i)}, 100)) // 102-byte frames
	}
	if err := c.flush(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("flush: %v", err)
	}
	if !c.pending() || !c.midFrame || len(c.ends) != 4 || c.ends[0] != 54 {
		t.Fatalf("after a partial write: mid %v ends %v", c.midFrame, c.ends)
	}
	c.cutToFrameInFlight()
	sc.limit = 1 << 20
	if err := c.flush(); err != nil {
		t.Fatal(err)
	}
	// Two whole frames on the wire, nothing of the three behind.
	_, _, first, rest := parseFrame(t, sc.buf.Bytes())
	_, _, second, rest := parseFrame(t, rest)
	if len(rest) != 0 || first[0] != 'a' || second[0] != 'b' || len(second) != 100 {
		t.Fatalf("on the wire: %q %q + %d bytes", first[:1], second[:1], len(rest))
	}
}

// recordingConn keeps every Write the library makes, separately.
type recordingConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, bytes.Clone(p))
	c.mu.Unlock()
	return c.Conn.Write(p)
}

type recordingWriter struct {
	http.ResponseWriter
	conn *recordingConn
}

func (w *recordingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := w.ResponseWriter.(http.Hijacker).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = &recordingConn{Conn: conn}
	return w.conn, bufio.NewReadWriter(brw.Reader, bufio.NewWriter(w.conn)), nil
}

// TestLibraryWritesWholeControlFrames pins the rule corkConn.Write relies
// on: coder/websocket hands its connection each control frame it sends (a
// pong, a ping, a close) as one whole frame in one Write, never split and
// never two in one. Should an upgrade change that, this fails.
func TestLibraryWritesWholeControlFrames(t *testing.T) {
	recorded := make(chan *recordingConn, 1)
	pinged := make(chan struct{}) // the client's ping was answered
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := &recordingWriter{ResponseWriter: w}
		conn, err := websocket.Accept(rw, r, nil)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		go func() { _, _, _ = conn.Read(ctx) }() // answers the client's ping
		<-pinged
		_ = conn.Ping(ctx) // the client's reader answers it
		_ = conn.Close(websocket.StatusNormalClosure, "bye")
		recorded <- rw.conn
	}))
	defer srv.Close()
	c, _, err := websocket.Dial(context.Background(), strings.Replace(srv.URL, "http", "ws", 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() { _, _, _ = c.Read(ctx) }() // answers pings and the close
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	close(pinged)
	rc := <-recorded
	rc.mu.Lock()
	defer rc.mu.Unlock()
	opcodes := map[byte]int{}
	for _, w := range rc.writes {
		if bytes.HasPrefix(w, []byte("HTTP/1.1")) {
			continue // the handshake
		}
		_, op, _, rest := parseFrame(t, w)
		if len(rest) != 0 {
			t.Fatalf("one write held more than one frame: %x", w)
		}
		opcodes[op]++
	}
	if opcodes[0x9] == 0 || opcodes[0xA] == 0 || opcodes[0x8] == 0 {
		t.Fatalf("control frames seen per opcode: %v (want a ping, a pong and a close)", opcodes)
	}
}

// TestPongsPastTheBacklogAreRefused: the pongs walcast writes itself for a
// client's pings have the bound the library's have: a client that sends
// pings and never reads cannot grow its buffer past maxBacklog.
func TestPongsPastTheBacklogAreRefused(t *testing.T) {
	c := &corkConn{}
	c.mu.Lock()
	c.take()
	c.buf = append(c.buf, make([]byte, maxBacklog-129)...)
	c.mu.Unlock()
	payload := bytes.Repeat([]byte{'p'}, 125)
	if !c.writeControl(opPong, payload[:1]) {
		t.Fatal("a pong within the bound was refused")
	}
	if c.writeControl(opPong, payload) {
		t.Fatalf("a pong past the bound was taken: %d bytes buffered", len(c.buf))
	}
	if len(c.buf) != maxBacklog-129+3 {
		t.Fatalf("%d bytes buffered", len(c.buf))
	}
}
