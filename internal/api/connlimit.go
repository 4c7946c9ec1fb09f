package api

import (
	"context"
	"log"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/walcast/walcast/internal/metrics"
)

// ConnLimiter caps the plain HTTP connections the server keeps (WebSocket
// connections leave its count when they are hijacked; the socket server
// caps those). Past the cap, a new connection evicts the longest-waiting
// connection that is not serving a request (idle keep-alive, or opened and
// silent), or else the request that has been running longest if it has run
// for over a second (a trickled body): an attacker holding connections
// cannot lock out /healthz, /readyz or anyone else. If every connection is
// serving a request younger than that, the new one is closed.
type ConnLimiter struct {
	max     int
	metrics *metrics.Metrics
	now     func() time.Time // time.Now; tests age connections without sleeping

	mu    sync.Mutex
	conns map[net.Conn]*tracked
}

type tracked struct {
	busy  bool      // serving a request
	since time.Time // waiting since, when not busy
}

// NewConnLimiter returns a limiter of max connections; 0 means no cap.
func NewConnLimiter(max int, m *metrics.Metrics) *ConnLimiter {
	return &ConnLimiter{max: max, metrics: m, now: time.Now, conns: make(map[net.Conn]*tracked)}
}

// ConnState is the http.Server hook.
func (l *ConnLimiter) ConnState(c net.Conn, state http.ConnState) {
	if l.max <= 0 {
		return
	}
	var evict net.Conn
	l.mu.Lock()
	switch state {
	case http.StateNew:
		if len(l.conns) >= l.max {
			if evict = l.oldestWaiting(); evict == nil {
				evict = c
			}
			delete(l.conns, evict)
		}
		if evict != c {
			l.conns[c] = &tracked{since: l.now()}
		}
	case http.StateActive:
		if t := l.conns[c]; t != nil {
			t.busy, t.since = true, l.now()
		}
	case http.StateIdle:
		if t := l.conns[c]; t != nil {
			t.busy, t.since = false, l.now()
		}
	case http.StateHijacked, http.StateClosed:
		delete(l.conns, c)
	}
	l.mu.Unlock()
	if evict != nil {
		l.metrics.HTTPConnsEvicted.Inc()
		_ = evict.Close()
	}
}

// oldestWaiting is the connection to evict: the longest-waiting one not
// serving a request, or else the one serving a request for the longest if
// that has taken over busyGrace (a request whose body is trickled in holds
// its connection busy up to the read timeout: many of them must not lock
// everyone out either; a real request is long done).
func (l *ConnLimiter) oldestWaiting() net.Conn {
	var idle, busy net.Conn
	var idleSince, busySince time.Time
	for c, t := range l.conns {
		switch {
		case !t.busy && (idle == nil || t.since.Before(idleSince)):
			idle, idleSince = c, t.since
		case t.busy && (busy == nil || t.since.Before(busySince)):
			busy, busySince = c, t.since
		}
	}
	if idle != nil {
		return idle
	}
	if busy != nil && l.now().Sub(busySince) > busyGrace {
		return busy
	}
	return nil
}

// busyGrace is how long a request may hold its connection before, at the
// cap, a new connection may take its place.
const busyGrace = time.Second

// ServerLimits are the plain-HTTP limits of NewServer.
type ServerLimits struct {
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	MaxConnections                                            int
}

// NewServer returns the HTTP server for handler with every plain-HTTP
// limit set: idle, read (body included) and write timeouts, and a cap on
// connections that evicts waiting ones first. A WebSocket upgrade clears
// the deadlines when it takes the connection over.
func NewServer(handler http.Handler, lim ServerLimits, errorLog *log.Logger, m *metrics.Metrics) *http.Server {
	limiter := NewConnLimiter(lim.MaxConnections, m)
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		WriteTimeout:      lim.WriteTimeout,
		IdleTimeout:       lim.IdleTimeout,
		ConnState:         limiter.ConnState,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, streamingKey{}, func() func() { limiter.release(c); return func() { limiter.rejoin(c) } })
		},
		ErrorLog: errorLog,
	}
}

type streamingKey struct{}

// Streaming takes the request's connection out of the plain-HTTP
// connection cap, as a WebSocket upgrade does: an event stream (GET /sse)
// is a request that runs for hours, which the cap would otherwise evict as
// a trickled request once the server is full. The stream's own cap bounds
// such connections. Call the returned func when the stream ends: the
// connection, which may serve more requests, counts again.
func Streaming(r *http.Request) (done func()) {
	if release, ok := r.Context().Value(streamingKey{}).(func() func()); ok {
		return release()
	}
	return func() {}
}

// release forgets c: it no longer counts against the cap, nor can be
// evicted.
func (l *ConnLimiter) release(c net.Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// rejoin counts c again, as serving a request (its state changes next).
func (l *ConnLimiter) rejoin(c net.Conn) {
	if l.max <= 0 {
		return
	}
	l.mu.Lock()
	l.conns[c] = &tracked{busy: true, since: l.now()}
	l.mu.Unlock()
}
