package wal

import (
	"testing"
	"time"
)

func TestParseUTCTimestamp(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2026-11-26 21:20:01.668649+00", time.Date(2026, 11, 26, 21, 20, 1, 668649000, time.UTC), true},
		{"2026-11-26 21:20:01+00", time.Date(2026, 11, 26, 21, 20, 1, 0, time.UTC), true},
		{"2026-11-26 21:20:01.5+00", time.Date(2026, 11, 26, 21, 20, 1, 500000000, time.UTC), true},
		{"0001-01-01 00:00:00+00", time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), true},
		{"2024-02-29 12:00:00+00", time.Date(2024, 2, 29, 12, 0, 0, 0, time.UTC), true},
		{"2026-02-29 12:00:00+00", time.Time{}, false}, // not a leap year
		{"2026-11-26 21:20:01.668649+01", time.Time{}, false},
		{"2026-11-26 21:20:01.668649+05:30", time.Time{}, false},
		{"2026-11-26 21:20:01.+00", time.Time{}, false},
		{"2026-11-26 21:20:01.1234567890+00", time.Time{}, false},
		{"2026-11-26 24:00:00+00", time.Time{}, false},
		{"2026-13-26 21:20:01+00", time.Time{}, false},
		{"0044-03-15 12:00:00+00 BC", time.Time{}, false},
		{"12026-11-26 21:20:01+00", time.Time{}, false},
		{"2026-11-26T21:20:01+00", time.Time{}, false},
		{"2026-1a-26 21:20:01+00", time.Time{}, false},
		{"infinity", time.Time{}, false},
		{"", time.Time{}, false},
	} {
		got, ok := parseUTCTimestamp([]byte(c.in))
		if ok != c.ok || !got.Equal(c.want) {
			t.Errorf("parseUTCTimestamp(%q) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

// Where the fast path answers, it must agree with time.Parse.
func FuzzParseUTCTimestamp(f *testing.F) {
	f.Add("2026-11-26 21:20:01.668649+00")
	f.Add("2026-02-29 12:00:00+00")
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseUTCTimestamp([]byte(s))
		if !ok {
			return
		}
		want, err := time.Parse("2006-01-02 15:04:05.999999999Z07", s)
		if err != nil || !got.Equal(want) {
			t.Fatalf("parseUTCTimestamp(%q) = %v; time.Parse: %v, %v", s, got, want, err)
		}
	})
}
