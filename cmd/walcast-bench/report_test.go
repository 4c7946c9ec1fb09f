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
