package events

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestAppendTimeMatchesAppendFormat(t *testing.T) {
	cases := []time.Time{
		time.Date(2026, 11, 26, 21, 20, 1, 668649123, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-44, 3, 15, 12, 0, 0, 0, time.UTC),
		time.Date(2026, 6, 1, 12, 0, 0, 5000, time.FixedZone("x", 5*3600+1800)),
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		cases = append(cases, time.Unix(r.Int64N(1<<36)-1<<35, r.Int64N(1e9)))
	}
	for _, tc := range cases {
		got, want := string(appendTime(nil, tc)), tc.UTC().Format("2006-01-02T15:04:05.000000Z07:00")
		switch y := tc.UTC().Year(); {
		case y > 9999:
			want = "+0" + want // ISO 8601's expanded years, as Date parses them
		case y < 0:
			want = "-00" + want[1:]
		}
		if got != want {
			t.Fatalf("appendTime(%v) = %s, want %s", tc, got, want)
		}
	}
}

func TestPlain8(t *testing.T) {
	ref := func(b [8]byte) bool {
		for _, c := range b {
			if c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
				return false
			}
		}
		return true
	}
	pack := func(b [8]byte) uint64 {
		var x uint64
		for i, c := range b {
			x |= uint64(c) << (8 * i)
		}
		return x
	}
	check := func(b [8]byte) {
		if got := plain8(pack(b)); got != ref(b) {
			t.Fatalf("plain8(%q) = %v", b[:], got)
		}
	}
	// Every byte value at every position, among plain and among special
	// neighbours (a borrow from one byte must not hide or fake another).
	for _, fill := range []byte{'a', ' ', '~', 0x21, 0x1f, '"', 0x80} {
		for pos := range 8 {
			for c := range 256 {
				var b [8]byte
				for i := range b {
					b[i] = fill
				}
				b[pos] = byte(c)
				check(b)
			}
		}
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 200000 {
		var b [8]byte
		for i := range b {
			b[i] = byte(r.IntN(256))
			if r.IntN(2) == 0 {
				b[i] = byte(0x20 + r.IntN(0x60))
			}
		}
		check(b)
	}
}
