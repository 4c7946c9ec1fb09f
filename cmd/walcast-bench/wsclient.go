package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// wsConn is the load generator's own minimal WebSocket client (RFC 6455,
// no extensions). The load generator shares two cores with the walcast and
// PostgreSQL it measures, so every microsecond it spends per frame shows up
// as walcast latency: a general-purpose client (a context and a lock per
// read, a reader object per message) cost ~9 µs per frame here, more than
// walcast spent sending it. This one reads frames straight out of a
// bufio.Reader into one reused buffer and answers pings itself.
type wsConn struct {
	conn net.Conn
	br   *bufio.Reader
	buf  []byte
	wmu  sync.Mutex
}

// closeError is how the server closed the socket.
type closeError struct{ code int }

func (e *closeError) Error() string { return fmt.Sprintf("websocket closed with %d", e.code) }

// closeCode returns the close code err carries, -1 for any other ending.
func closeCode(err error) int {
	var ce *closeError
	if errors.As(err, &ce) {
		return ce.code
	}
	return -1
}

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// dialWS opens a WebSocket to rawURL (ws://host/path?query) from local
// (nil: the system's choice).
func dialWS(ctx context.Context, rawURL string, local net.Addr) (*wsConn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	d := net.Dialer{LocalAddr: local}
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + "\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(conn, 16<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	resp.Body.Close()
	sum := sha1.Sum([]byte(key + wsGUID))
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		conn.Close()
		return nil, fmt.Errorf("websocket handshake: %s", resp.Status)
	}
	_ = conn.SetDeadline(time.Time{})
	return &wsConn{conn: conn, br: br, buf: make([]byte, 0, 4096)}, nil
}

// maskedFrame builds one frame masked, as a client's must be.
func maskedFrame(op byte, p []byte) []byte {
	frame := make([]byte, 0, 14+len(p))
	frame = append(frame, 0x80|op)
	switch l := len(p); {
	case l < 126:
		frame = append(frame, 0x80|byte(l))
	case l <= 0xFFFF:
		frame = append(frame, 0x80|126, byte(l>>8), byte(l))
	default:
		frame = append(frame, 0x80|127)
		frame = binary.BigEndian.AppendUint64(frame, uint64(l))
	}
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	frame = append(frame, mask[:]...)
	for i, b := range p {
		frame = append(frame, b^mask[i&3])
	}
	return frame
}

// parseFrame reads one whole server frame from the front of b: its opcode,
// FIN bit, payload, and length in b. ok is false when b holds only part of
// it.
func parseFrame(b []byte) (op byte, fin bool, payload []byte, size int, ok bool, err error) {
	if len(b) < 2 {
		return 0, false, nil, 0, false, nil
	}
	if b[1]&0x80 != 0 {
		return 0, false, nil, 0, false, errors.New("websocket: server frame is masked")
	}
	hdr, n := 2, uint64(b[1]&0x7F)
	switch n {
	case 126:
		if len(b) < 4 {
			return 0, false, nil, 0, false, nil
		}
		hdr, n = 4, uint64(binary.BigEndian.Uint16(b[2:]))
	case 127:
		if len(b) < 10 {
			return 0, false, nil, 0, false, nil
		}
		hdr, n = 10, binary.BigEndian.Uint64(b[2:])
	}
	if n > 16<<20 {
		return 0, false, nil, 0, false, fmt.Errorf("websocket: %d-byte frame", n)
	}
	if uint64(len(b)-hdr) < n {
		return 0, false, nil, 0, false, nil
	}
	end := hdr + int(n)
	return b[0] & 0x0F, b[0]&0x80 != 0, b[hdr:end], end, true, nil
}

// writeFrame sends one masked frame.
func (c *wsConn) writeFrame(op byte, p []byte) error {
	frame := maskedFrame(op, p)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.conn.Write(frame)
	return err
}

// WriteText sends a text message.
func (c *wsConn) WriteText(p []byte) error { return c.writeFrame(0x1, p) }

// Next returns the next text or binary message, valid until the next call.
// It answers pings, and returns a *closeError when the server closes.
func (c *wsConn) Next() ([]byte, error) {
	c.buf = c.buf[:0]
	for {
		var h [2]byte
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			return nil, err
		}
		fin, op := h[0]&0x80 != 0, h[0]&0x0F
		if h[1]&0x80 != 0 {
			return nil, errors.New("websocket: server frame is masked")
		}
		n := uint64(h[1] & 0x7F)
		switch n {
		case 126:
			var ext [2]byte
			if _, err := io.ReadFull(c.br, ext[:]); err != nil {
				return nil, err
			}
			n = uint64(binary.BigEndian.Uint16(ext[:]))
		case 127:
			var ext [8]byte
			if _, err := io.ReadFull(c.br, ext[:]); err != nil {
				return nil, err
			}
			n = binary.BigEndian.Uint64(ext[:])
		}
		if n > 16<<20 {
			return nil, fmt.Errorf("websocket: %d-byte frame", n)
		}
		if op >= 0x8 { // control frames come whole, between fragments too
			p := make([]byte, n)
			if _, err := io.ReadFull(c.br, p); err != nil {
				return nil, err
			}
			switch op {
			case 0x8:
				code := 1005
				if len(p) >= 2 {
					code = int(binary.BigEndian.Uint16(p))
				}
				_ = c.writeFrame(0x8, p[:min(len(p), 2)])
				return nil, &closeError{code: code}
			case 0x9:
				if err := c.writeFrame(0xA, p); err != nil {
					return nil, err
				}
			}
			continue
		}
		start := len(c.buf)
		c.buf = append(c.buf, make([]byte, n)...)
		if _, err := io.ReadFull(c.br, c.buf[start:]); err != nil {
			return nil, err
		}
		if fin {
			return c.buf, nil
		}
	}
}

// Close ends the connection without a closing handshake.
func (c *wsConn) Close() error { return c.conn.Close() }
