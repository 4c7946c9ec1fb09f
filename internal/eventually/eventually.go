// Package eventually is how tests wait for something that happens
// elsewhere (another goroutine, process or server): they poll a condition
// that observes it, never sleep for a guessed duration.
package eventually

import (
	"testing"
	"time"
)

// Interval is how often conditions are polled.
const Interval = 10 * time.Millisecond

// Poll reports whether cond held within d, checking it every Interval. It
// may be called off the test's goroutine.
func Poll(d time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(Interval)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			return cond()
		case <-tick.C:
		}
	}
	return true
}

// True fails the test if cond does not hold within d; what names it.
func True(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Poll(d, cond) {
		t.Fatalf("timed out after %s waiting for %s", d, what)
	}
}
