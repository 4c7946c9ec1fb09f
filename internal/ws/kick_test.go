package ws

import (
	"bufio"
	"context"
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
