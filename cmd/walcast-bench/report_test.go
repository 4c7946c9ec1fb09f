package main

import (
	"encoding/xml"
	"strings"
	"testing"
	"time"
)

func TestPercentilesAndChart(t *testing.T) {
	var all []sample
	for i := 1; i <= 100; i++ {
		all = append(all, sample{at: time.Duration(i) * 50 * time.Millisecond, lat: time.Duration(i) * time.Millisecond})
	}
	var r result
	r.fill(all)
	if r.P50ms != 50 || r.P99ms != 99 || r.Maxms != 100 {
		t.Fatalf("percentiles %+v", r)
	}
	svg := chart(r, all)
	if err := xml.Unmarshal([]byte(svg), new(struct{})); err != nil {
		t.Fatalf("chart is not well-formed XML: %v", err)
	}
	if !strings.Contains(svg, "p99 99.00 ms") {
		t.Fatal("chart title lacks the p99")
	}
}

func TestParseTimestamp(t *testing.T) {
	for _, c := range []struct {
		in   string
		ok   bool
		want time.Time
	}{
		{"2026-11-26T21:20:01.668649Z", true, time.Date(2026, 11, 26, 21, 20, 1, 668649000, time.UTC)},
		{"2026-01-02T03:04:05.000000Z", true, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
		{"2026-11-26T21:20:01.668649", false, time.Time{}},
		{"2026-11-26 21:20:01.668649Z", false, time.Time{}},
		{"2026-1x-26T21:20:01.668649Z", false, time.Time{}},
		{"", false, time.Time{}},
	} {
		got, ok := parseTimestamp([]byte(c.in))
		if ok != c.ok || !got.Equal(c.want) {
			t.Errorf("parseTimestamp(%q) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestParseLSN(t *testing.T) {
	for in, want := range map[string]uint64{"0/0": 0, "1/D3A53478": 0x1D3A53478, "FF/1": 0xFF00000001, "": 0, "1-2": 0, "x/1": 0} {
		if got := parseLSN(in); got != want {
			t.Errorf("parseLSN(%q) = %X, want %X", in, got, want)
		}
	}
}
