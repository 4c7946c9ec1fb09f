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
		got, want := string(appendTime(nil, tc)), tc.UTC().Format(timeLayout)
		if got != want {
			t.Fatalf("appendTime(%v) = %s, want %s", tc, got, want)
		}
	}
}
