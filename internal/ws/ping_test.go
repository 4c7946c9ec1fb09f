package ws

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/eventually"
)

// rawClient speaks just enough RFC 6455 to see the server's pings and to
// choose whether to answer them, which a WebSocket library does not let a
// test decide.
type rawClient struct {
	conn net.Conn
	br   *bufio.Reader
}

func dialRaw(t *testing.T, wsURL string) *rawClient {
	t.Helper()
	return dialRawBuffer(t, wsURL, 0)
}

// dialRawBuffer is dialRaw with the client's receive buffer set to
// readBuffer bytes (0: the system's), for clients that stop reading.
func dialRawBuffer(t *testing.T, wsURL string, readBuffer int) *rawClient {
	t.Helper()
	u, err := url.Parse(wsURL)
	if err != nil {
		t.Fatal(err)
	}
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		if readBuffer > 0 {
			_ = c.Control(func(fd uintptr) {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, readBuffer)
			})
		}
		return nil
	}}
	conn, err := d.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(nonce[:]) + "\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	return &rawClient{conn: conn, br: br}
}

// next returns the next frame's opcode and payload (server frames are
// never masked; walcast sends no frame longer than 125 bytes unprompted).
func (c *rawClient) next() (byte, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return 0, nil, err
	}
	p := make([]byte, h[1]&0x7F)
	_, err := io.ReadFull(c.br, p)
	return h[0] & 0x0F, p, err
}

func (c *rawClient) pong(p []byte) error {
	frame := append([]byte{0x8A, 0x80 | byte(len(p)), 1, 2, 3, 4}, p...)
	for i := range p {
		frame[6+i] ^= []byte{1, 2, 3, 4}[i&3]
	}
	_, err := c.conn.Write(frame)
	return err
}

// The server pings on every interval, not only once (the writer re-arms
// the timer after each ping), and drops a socket that stops answering
// within the write timeout.
func TestServerPingsAndDropsSilentSockets(t *testing.T) {
	const interval, timeout = 60 * time.Millisecond, 300 * time.Millisecond
	_, _, wsURL := newTestServer(t, Config{PingInterval: interval, WriteTimeout: timeout}, 16)
	c := dialRaw(t, wsURL)
	defer c.conn.Close()
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))

	const answered = 4
	pings := 0
	var silentSince time.Time
	for {
		op, p, err := c.next()
		if err != nil {
			// The server gave up on the socket: it must have pinged at
			// least once more after the last pong, and not before the
			// write timeout passed.
			if pings <= answered {
				t.Fatalf("socket ended after %d pings (%v); want more than the %d answered", pings, err, answered)
			}
			// (The server's clock starts when it sends the ping, a
			// moment before this client sees it.)
			if waited := time.Since(silentSince); waited < timeout*9/10 {
				t.Fatalf("dropped %v after the first unanswered ping, before the %v write timeout", waited, timeout)
			}
			return
		}
		if op != 0x9 {
			continue
		}
		pings++
		if pings <= answered {
			if err := c.pong(p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if silentSince.IsZero() {
			silentSince = time.Now()
		}
	}
}

// A client may send frames right behind its upgrade request, before it
// sees the 101: those bytes reach the HTTP server's buffer, which the
// socket lets go for a smaller one. Both frames, one larger than the
// socket's read buffer, must be read and answered.
func TestFramesSentWithTheHandshakeAreRead(t *testing.T) {
	_, _, wsURL := newTestServer(t, Config{}, 16)
	u, err := url.Parse(wsURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	c := &rawClient{conn: conn, br: bufio.NewReader(conn)}
	var early bytes.Buffer
	early.WriteString("GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	big := `{"action":"ping"` + strings.Repeat(" ", 3*socketReadBuffer/2) + `}`
	for _, msg := range []string{`{"action":"ping"}`, big} {
		early.Write(maskedText(msg))
	}
	if _, err := conn.Write(early.Bytes()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	for i := range 2 {
		op, p, err := c.next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if op != 0x1 || !strings.Contains(string(p), `"pong"`) {
			t.Fatalf("frame %d: opcode %d %s; want the pong", i, op, p)
		}
	}
}

// maskedText is one masked client text frame carrying s.
func maskedText(s string) []byte {
	b := []byte{0x81}
	switch n := len(s); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	default:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	}
	key := [4]byte{9, 8, 7, 6}
	b = append(b, key[:]...)
	for i := range len(s) {
		b = append(b, s[i]^key[i%4])
	}
	return b
}

// TestNoPingTimerOutlivesItsSocket (found by an attack): a ping tick that
// ran while its socket ended re-armed the timer run had just stopped, and
// went on writing pings into the ended socket's buffer.
func TestNoPingTimerOutlivesItsSocket(t *testing.T) {
	s, _, url := newTestServer(t, Config{PingInterval: 200 * time.Microsecond, WriteTimeout: 10 * time.Second}, 64)
	var clients []*rawClient
	for range 40 {
		clients = append(clients, dialRaw(t, url))
	}
	var socks []*socket
	eventually.True(t, 5*time.Second, "sockets admitted", func() bool {
		s.admit.Lock()
		defer s.admit.Unlock()
		socks = socks[:0]
		for _, m := range s.byUser {
			for sc := range m {
				socks = append(socks, sc)
			}
		}
		return len(socks) == len(clients)
	})
	time.Sleep(20 * time.Millisecond) // pacing: let ticks run
	for _, c := range clients {
		c.conn.Close()
	}
	eventually.True(t, 10*time.Second, "sockets ended", func() bool { return s.Connections() == 0 })
	armed := 0
	for _, sc := range socks {
		sc.pingMu.Lock()
		if sc.pingTimer.Stop() {
			armed++
		}
		sc.pingMu.Unlock()
	}
	if armed > 0 {
		t.Fatalf("%d ended sockets still had an armed ping timer", armed)
	}
}
