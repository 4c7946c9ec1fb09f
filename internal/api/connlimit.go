package api

import (
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
// silent): an attacker holding connections cannot lock out /healthz,
// /readyz or anyone else, and no request in progress is cut. If every
// connection is busy, the new one is closed.
type ConnLimiter struct {
	max     int
	metrics *metrics.Metrics

	mu    sync.Mutex
	conns map[net.Conn]*tracked
}

type tracked struct {
	busy  bool      // serving a request
	since time.Time // waiting since, when not busy
}

// NewConnLimiter returns a limiter of max connections; 0 means no cap.
func NewConnLimiter(max int, m *metrics.Metrics) *ConnLimiter {
	return &ConnLimiter{max: max, metrics: m, conns: make(map[net.Conn]*tracked)}
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
			l.conns[c] = &tracked{since: time.Now()}
		}
	case http.StateActive:
		if t := l.conns[c]; t != nil {
			t.busy = true
		}
	case http.StateIdle:
		if t := l.conns[c]; t != nil {
			t.busy, t.since = false, time.Now()
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

// Len is the number of connections counted.
func (l *ConnLimiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

func (l *ConnLimiter) oldestWaiting() net.Conn {
	var oldest net.Conn
	var since time.Time
	for c, t := range l.conns {
		if !t.busy && (oldest == nil || t.since.Before(since)) {
			oldest, since = c, t.since
		}
	}
	return oldest
}

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
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		WriteTimeout:      lim.WriteTimeout,
		IdleTimeout:       lim.IdleTimeout,
		ConnState:         NewConnLimiter(lim.MaxConnections, m).ConnState,
		ErrorLog:          errorLog,
	}
}
