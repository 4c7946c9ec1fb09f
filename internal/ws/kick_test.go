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
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/walcast/walcast/internal/auth"
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
