package ws

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/walcast/walcast/internal/access"
	"github.com/walcast/walcast/internal/auth"
	"github.com/walcast/walcast/internal/hub"
	"github.com/walcast/walcast/internal/metrics"
)

type allowAll struct{}

func (allowAll) Lookup(context.Context, string, string, bool) (access.Proof, error) {
	return access.Proof{Member: true, Fresh: true}, nil
}

// Sockets arriving while Shutdown runs are either admitted and closed with
// 1001, or refused; -race checks the admission against Shutdown's wait.
func TestShutdownWhileSocketsArrive(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry())
	h := hub.New(hub.Config{QueueSize: 16}, m)
	h.SetFloor(1)
	v, err := auth.NewVerifier([]byte("0123456789abcdef0123"), "HS256", 0)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(withDefaults(Config{WriteTimeout: time.Second}), h, v, allowAll{}, slog.New(slog.NewTextHandler(io.Discard, nil)), m)
	running(t, s)
	srv := httptest.NewServer(s)
	defer srv.Close()
	tok, _ := auth.Issue([]byte("0123456789abcdef0123"), "HS256", "11111111-1111-4111-8111-111111111111", time.Hour, time.Now())
	url := strings.Replace(srv.URL, "http", "ws", 1) + "/?token=" + tok

	var wg sync.WaitGroup
	admitted := make(chan struct{}, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			conn, _, err := websocket.Dial(ctx, url, nil)
			if err != nil {
				return // refused during shutdown
			}
			admitted <- struct{}{}
			defer conn.CloseNow()
			for {
				if _, _, err := conn.Read(ctx); err != nil {
					if st := websocket.CloseStatus(err); st != websocket.StatusGoingAway && st != -1 {
						t.Errorf("closed with %v", st)
					}
					return
				}
			}
		}()
	}
	<-admitted // shut down with some sockets open and others arriving
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	wg.Wait()
}
