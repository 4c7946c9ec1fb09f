package ws

import (
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// keyedLimiter is a token bucket per key: per client address for new
// sockets, per user for refused subscribes.
type keyedLimiter struct {
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

func newKeyedLimiter(perSecond float64, burst int) *keyedLimiter {
	return &keyedLimiter{rate: rate.Limit(perSecond), burst: burst, byIP: make(map[string]*ipEntry), maxSize: 100_000}
}

// allow takes a token of key's bucket and reports whether there was one.
func (l *keyedLimiter) allow(key string, now time.Time) bool {
	if l.rate <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.byIP) >= l.maxSize || now.Sub(l.swept) > time.Minute {
		l.sweep(now)
	}
	e, ok := l.byIP[key]
	if !ok {
		e = &ipEntry{lim: rate.NewLimiter(l.rate, l.burst)}
		l.byIP[key] = e
	}
	e.seen = now
	return e.lim.AllowN(now, 1)
}

// reserve takes a token of key's bucket, if it has one, and returns the
// function that gives it back (when what it was taken for did not happen).
// Taken before the work, not after it, so that concurrent callers cannot
// all pass a bucket that has one token left.
func (l *keyedLimiter) reserve(key string, now time.Time) (giveBack func(), ok bool) {
	if l.rate <= 0 {
		return func() {}, true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.byIP) >= l.maxSize || now.Sub(l.swept) > time.Minute {
		l.sweep(now)
	}
	e, found := l.byIP[key]
	if !found {
		e = &ipEntry{lim: rate.NewLimiter(l.rate, l.burst)}
		l.byIP[key] = e
	}
	e.seen = now
	r := e.lim.ReserveN(now, 1)
	if !r.OK() || r.DelayFrom(now) > 0 {
		r.CancelAt(now)
		return nil, false
	}
	return func() { r.Cancel() }, true
}

// sweep forgets addresses idle long enough for their bucket to be full.
func (l *keyedLimiter) sweep(now time.Time) {
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
