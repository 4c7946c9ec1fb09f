package ws

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"
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
		c.cork()
		if err := c.writeText(payload); err != nil {
			t.Fatal(err)
		}
		if err := c.writeText([]byte(`{"type":"pong"}`)); err != nil {
			t.Fatal(err)
		}
		if err := c.uncork(); err != nil {
			t.Fatal(err)
		}
		fin, op, got, rest := parseFrame(t, cc.buf.Bytes())
		if !fin || op != 1 || !bytes.Equal(got, payload) {
			t.Fatalf("size %d: fin %v op %d len %d", size, fin, op, len(got))
		}
		if _, _, second, rest2 := parseFrame(t, rest); string(second) != `{"type":"pong"}` || len(rest2) != 0 {
			t.Fatalf("size %d: second frame %q, %d bytes left", size, second, len(rest2))
		}
		if size < maxCorked/2 && cc.writes != 1 {
			t.Fatalf("size %d: %d writes while corked, want 1", size, cc.writes)
		}
	}
}
