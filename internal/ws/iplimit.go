package ws

import (
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

// empty reports whether key's bucket has no token left, taking none.
// (Checked before the work and charged after it, with allow, when the
// work was refused: a reservation given back does not restore its token
// when others were taken since, and concurrent subscribes of one user
// drained the bucket that way.)
func (l *keyedLimiter) empty(key string, now time.Time) bool {
	if l.rate <= 0 {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.byIP[key]
	return ok && e.lim.TokensAt(now) < 1
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
