package ws

import (
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// ipLimiter limits how fast one client address may open sockets.
type ipLimiter struct {
	rate  rate.Limit
	burst int

	mu      sync.Mutex
	byIP    map[string]*ipEntry
	swept   time.Time
	maxSize int
}

type ipEntry struct {
	lim  *rate.Limiter
	seen time.Time
}

func newIPLimiter(perSecond float64, burst int) *ipLimiter {
	return &ipLimiter{rate: rate.Limit(perSecond), burst: burst, byIP: make(map[string]*ipEntry), maxSize: 100_000}
}

// allow reports whether ip may open another socket now.
func (l *ipLimiter) allow(ip string, now time.Time) bool {
	if l.rate <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.byIP) >= l.maxSize || now.Sub(l.swept) > time.Minute {
		l.sweep(now)
	}
	e, ok := l.byIP[ip]
	if !ok {
		e = &ipEntry{lim: rate.NewLimiter(l.rate, l.burst)}
		l.byIP[ip] = e
	}
	e.seen = now
	return e.lim.AllowN(now, 1)
}

// sweep forgets addresses idle long enough for their bucket to be full.
func (l *ipLimiter) sweep(now time.Time) {
	l.swept = now
	idle := time.Duration(float64(l.burst)/float64(l.rate)*float64(time.Second)) + time.Second
	for ip, e := range l.byIP {
		if now.Sub(e.seen) > idle {
			delete(l.byIP, ip)
		}
	}
	if len(l.byIP) >= l.maxSize {
		clear(l.byIP)
	}
}

// clientIP is the request's peer address without the port. walcast does not
// trust X-Forwarded-For: a proxy in front should limit by itself.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
