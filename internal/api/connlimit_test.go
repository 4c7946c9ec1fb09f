package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/walcast/walcast/internal/eventually"
	"github.com/walcast/walcast/internal/metrics"
)

// busy counts the connections serving a request.
func (l *ConnLimiter) busy() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, t := range l.conns {
		if t.busy {
			n++
		}
	}
	return n
}

// serveLimited runs NewServer with short limits on a loopback port.
func serveLimited(t *testing.T, lim ServerLimits) string {
	t.Helper()
	return serveLimitedBy(t, lim, nil)
}

// serveLimitedBy is serveLimited with the given connection limiter (nil:
// the server's own).
func serveLimitedBy(t *testing.T, lim ServerLimits, limiter *ConnLimiter) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		defer Streaming(r)()
		_, _ = io.WriteString(w, "streaming\n")
		http.NewResponseController(w).Flush()
		<-r.Context().Done() // until the client goes
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, "body", http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, "read")
	})
	srv := NewServer(mux, lim, nil, metrics.New(prometheus.NewRegistry()))
	if limiter != nil {
		srv.ConnState = limiter.ConnState
		srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, streamingKey{}, func() func() { limiter.release(c); return func() { limiter.rejoin(c) } })
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// closedWithin reports whether the server closes c within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	ne, ok := err.(net.Error)
	return !ok || !ne.Timeout()
}

// TestHeldConnectionsCannotLockOutHealthChecks: an attacker holding more
// idle connections than the cap does not keep /healthz from answering;
// the longest-waiting ones are evicted.
func TestHeldConnectionsCannotLockOutHealthChecks(t *testing.T) {
	addr := serveLimited(t, ServerLimits{ReadHeaderTimeout: time.Minute, ReadTimeout: time.Minute, WriteTimeout: time.Minute, IdleTimeout: time.Minute, MaxConnections: 5})
	var held []net.Conn
	for range 20 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	for i := range 3 {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("healthz %d with connections held: %v %v", i, resp, err)
		}
		resp.Body.Close()
	}
	if !closedWithin(held[0], 5*time.Second) {
		t.Fatal("the oldest held connection was not evicted")
	}
}

// TestIdleAndTrickledConnectionsTimeOut: an idle keep-alive connection is
// closed after the idle timeout, and a body trickled a byte at a time is
// cut at the read timeout.
func TestIdleAndTrickledConnectionsTimeOut(t *testing.T) {
	addr := serveLimited(t, ServerLimits{ReadHeaderTimeout: 200 * time.Millisecond, ReadTimeout: 500 * time.Millisecond, WriteTimeout: time.Second, IdleTimeout: 300 * time.Millisecond})

	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	fmt.Fprintf(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(idle), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("first request: %v %v", resp, err)
	}
	resp.Body.Close()
	if !closedWithin(idle, 5*time.Second) {
		t.Fatal("idle keep-alive connection stayed open")
	}

	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if !closedWithin(silent, 5*time.Second) {
		t.Fatal("a connection that never sent its headers stayed open")
	}

	trickle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer trickle.Close()
	fmt.Fprintf(trickle, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
	start := time.Now()
	go func() {
		// The attack: one byte every 100 ms.
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for range 100 {
			if _, err := trickle.Write([]byte("x")); err != nil {
				return
			}
			<-tick.C
		}
	}()
	resp, err = http.ReadResponse(bufio.NewReader(trickle), nil)
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		if strings.Contains(string(b), "read") {
			t.Fatalf("the trickled body was read whole (%s)", time.Since(start))
		}
	}
	if !closedWithin(trickle, 5*time.Second) || time.Since(start) > 5*time.Second {
		t.Fatalf("trickled request not cut (%s)", time.Since(start))
	}
}

// TestTrickledRequestsCannotLockOutHealthChecks: requests whose bodies are
// trickled in hold their connections busy up to the read timeout; at the
// cap, the longest-running of them gives way to a new connection.
func TestTrickledRequestsCannotLockOutHealthChecks(t *testing.T) {
	limiter := NewConnLimiter(5, metrics.New(prometheus.NewRegistry()))
	var mu sync.Mutex
	now := time.Now()
	limiter.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	addr := serveLimitedBy(t, ServerLimits{ReadHeaderTimeout: time.Minute, ReadTimeout: time.Minute, WriteTimeout: time.Minute, IdleTimeout: time.Minute, MaxConnections: 5}, limiter)
	for range 10 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\nx")
	}
	// Every slot holds a request being read, then the held requests age
	// past the grace.
	eventually.True(t, 5*time.Second, "5 connections serving requests", func() bool { return limiter.busy() == 5 })
	mu.Lock()
	now = now.Add(busyGrace + time.Millisecond)
	mu.Unlock()
	for i := range 3 {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("healthz %d with busy connections held: %v %v", i, resp, err)
		}
		resp.Body.Close()
	}
}

func TestUpgradesToWebSocket(t *testing.T) {
	for _, c := range []struct {
		values []string
		want   bool
	}{
		{[]string{"websocket"}, true},
		{[]string{"WebSocket"}, true},
		{[]string{"websocket, h2c"}, true},
		{[]string{"h2c", "websocket"}, true},
		{[]string{"h2c"}, false},
		{nil, false},
	} {
		if got := upgradesToWebSocket(c.values); got != c.want {
			t.Errorf("upgradesToWebSocket(%q) = %v", c.values, got)
		}
	}
}

// TestStreamsLeaveTheConnectionCap: an event stream (a request that runs
// for hours) leaves the plain-HTTP connection cap as a WebSocket does: a
// full server evicts idle and trickled connections for new ones, never a
// stream.
func TestStreamsLeaveTheConnectionCap(t *testing.T) {
	limiter := NewConnLimiter(3, metrics.New(prometheus.NewRegistry()))
	var mu sync.Mutex
	now := time.Now()
	limiter.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	addr := serveLimitedBy(t, ServerLimits{ReadHeaderTimeout: time.Minute, ReadTimeout: time.Minute, WriteTimeout: time.Minute, IdleTimeout: time.Minute, MaxConnections: 3}, limiter)
	type stream struct {
		conn net.Conn
		body *bufio.Reader
	}
	var streams []stream
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("stream: %v %v", resp, err)
		}
		body := bufio.NewReader(resp.Body)
		if line, err := body.ReadString('\n'); err != nil || line != "streaming\n" {
			t.Fatalf("stream body: %q %v", line, err)
		}
		streams = append(streams, stream{c, body})
	}
	mu.Lock()
	now = now.Add(time.Hour) // the streams are old: busy requests past any grace
	mu.Unlock()
	for i := range 6 {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("healthz %d: %v %v", i, resp, err)
		}
		resp.Body.Close()
	}
	limiter.mu.Lock()
	n := len(limiter.conns)
	limiter.mu.Unlock()
	if n > 3 {
		t.Fatalf("%d connections counted against a cap of 3", n)
	}
	// Every stream is still open: a read waits (times out) rather than
	// ending.
	for i, st := range streams {
		_ = st.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, err := st.body.ReadByte()
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("stream %d was closed: %v", i, err)
		}
	}
}
