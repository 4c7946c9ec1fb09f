package ws

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/walcast/walcast/internal/auth"
	"github.com/walcast/walcast/internal/eventually"
	"github.com/walcast/walcast/internal/hub"
	"github.com/walcast/walcast/internal/metrics"
)

type hookWriter struct {
	http.ResponseWriter
	onHijack func()
}

func (h hookWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h.onHijack()
	return h.ResponseWriter.(http.Hijacker).Hijack()
}

// TestDisconnectDuringAnUpgrade (found by an attack): the operator
// disconnects a user after its token was checked and while its upgrade is
// in flight (no ban): Disconnect finds no socket yet, and the socket, once
// admitted, is closed with 4003 all the same.
func TestDisconnectDuringAnUpgrade(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry())
	h := hub.New(hub.Config{QueueSize: 64, AccessWait: time.Second}, m)
	h.SetFloor(1)
	v, _ := auth.NewVerifier([]byte(testSecret), "HS256", 0)
	s := NewServer(withDefaults(Config{}), h, v, memberSet{}, slog.New(slog.NewJSONHandler(io.Discard, nil)), m)
	running(t, s)
	kicked := -1
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.ServeHTTP(hookWriter{w, func() { kicked = s.Disconnect(userA, 0) }}, r)
	}))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		srv.Close()
	})
	c := dialJSON(t, srv.URL, issue(t, userA, time.Hour))
	c.send(`{"action":"ping"}`)
	f, err := c.read(3 * time.Second)
	t.Logf("Disconnect closed %d sockets; the socket then answered %v, err %v (close %d)", kicked, f, err, websocket.CloseStatus(err))
	if websocket.CloseStatus(err) != CloseDisconnected {
		t.Errorf("a socket whose token was checked before the operator's disconnect: %v %v", f, err)
	}
}

// TestCloseHandshakeWhileTheClientSends (found by CI's race detector): the
// library's Close reads the peer's close frame from the read buffer the
// socket's read goroutine looks into between frames. The operator closes
// sockets whose clients keep sending; each must end with 4003, and under
// -race the two readers must never meet.
func TestCloseHandshakeWhileTheClientSends(t *testing.T) {
	s, url, _ := protocolServer(t, Config{FrameRate: 1e6, FrameBurst: 1e6}, hub.Config{QueueSize: 1 << 20}, memberSet{})
	for round := range 20 {
		user := fmt.Sprintf("11111111-1111-4111-8111-%012d", round)
		c := dialJSON(t, url, issue(t, user, time.Hour))
		c.send(`{"action":"ping"}`)
		c.must(5 * time.Second)
		stop := make(chan struct{})
		sent := make(chan struct{})
		go func() {
			defer close(sent)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if c.conn.Write(context.Background(), websocket.MessageText, []byte(`{"action":"ping"}`)) != nil {
					return
				}
			}
		}()
		if n := s.Disconnect(user, 0); n != 1 {
			t.Fatalf("round %d: Disconnect closed %d sockets", round, n)
		}
		var err error
		for err == nil {
			_, err = c.read(5 * time.Second)
		}
		close(stop)
		<-sent
		if websocket.CloseStatus(err) != CloseDisconnected {
			t.Fatalf("round %d: closed with %v", round, err)
		}
	}
}

// TestCloseFrameDuringAPingFlood (found by an attack): a client that
// floods pings while the operator closes its socket gets the close frame,
// not a reset: the library gave up its closing handshake at the next
// ping and closed the connection with the close frame still buffered.
func TestCloseFrameDuringAPingFlood(t *testing.T) {
	s, url, _ := protocolServer(t, Config{FrameRate: 1e6, FrameBurst: 1e6}, hub.Config{QueueSize: 1 << 20}, memberSet{})
	var pings []byte
	for i := range 200 {
		pings = append(pings, masked(0x89, []byte(fmt.Sprintf("p%d", i)), [4]byte{1, 2, 3, 4})...)
	}
	for round := range 20 {
		user := fmt.Sprintf("11111111-1111-4111-8111-%012d", round)
		c := dialRaw(t, strings.Replace(url, "http", "ws", 1)+"/?token="+issue(t, user, time.Hour))
		stop := make(chan struct{})
		flooded := make(chan struct{})
		go func() {
			defer close(flooded)
			for {
				for i := 0; i < len(pings); i += 97 {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := c.conn.Write(pings[i:min(i+97, len(pings))]); err != nil {
						return
					}
				}
			}
		}()
		_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for pongs := 0; pongs < 50; pongs++ { // the flood is on
			if op, _, err := c.next(); err != nil || op != 0xA {
				t.Fatalf("round %d: %d %v", round, op, err)
			}
		}
		if n := s.Disconnect(user, 0); n != 1 {
			t.Fatalf("round %d: Disconnect closed %d sockets", round, n)
		}
		var closeCode int
		var endErr error
		for {
			op, p, err := c.next()
			if err != nil {
				endErr = err
				break
			}
			if op == 0x8 && len(p) >= 2 {
				closeCode = int(p[0])<<8 | int(p[1])
				close(stop)
				<-flooded
				_ = c.frame(0x8, p[:2]) // as a browser answers
				break
			}
		}
		if closeCode == 0 {
			close(stop)
			<-flooded
		}
		c.conn.Close()
		if closeCode != int(CloseDisconnected) {
			t.Fatalf("round %d: the connection ended with close code %d (%v), want %d", round, closeCode, endErr, CloseDisconnected)
		}
	}
}

// TestShutdownDoesNotWaitForASilentClient (found by an attack): a client
// that never answers the close frame held Shutdown for the library's five
// seconds, whatever the write timeout.
func TestShutdownDoesNotWaitForASilentClient(t *testing.T) {
	s, _, url := newTestServer(t, Config{WriteTimeout: 200 * time.Millisecond}, 16)
	c := dialRaw(t, url) // never reads, never answers
	defer c.conn.Close()
	eventually.True(t, 5*time.Second, "socket waiting", func() bool { shallow, _ := readers(); return shallow == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a write timeout of 200 ms and 3 s to go: %v", err)
	}
}
