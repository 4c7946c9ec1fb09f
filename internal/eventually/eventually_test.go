package eventually

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestPoll(t *testing.T) {
	var n atomic.Int32
	cases := []struct {
		name string
		d    time.Duration
		cond func() bool
		want bool
	}{
		{"holds at once", time.Millisecond, func() bool { return true }, true},
		{"never holds", 30 * time.Millisecond, func() bool { return false }, false},
		{"holds on the third poll", time.Second, func() bool { return n.Add(1) >= 3 }, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Poll(c.d, c.cond); got != c.want {
				t.Fatalf("Poll = %v, want %v", got, c.want)
			}
		})
	}
}
