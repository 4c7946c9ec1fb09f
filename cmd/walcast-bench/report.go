package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// result is the summary of one run; JSON field names are stable.
type result struct {
	Label          string  `json:"label,omitempty"`
	Subscribers    int     `json:"subscribers"`
	Projects       int     `json:"projects"`
	Writers        int     `json:"writers"`
	Rate           float64 `json:"rate_target"`
	Slow           int     `json:"slow_subscribers"`
	SlowClosed     int     `json:"slow_closed_4008"`
	SlowDropped    int     `json:"slow_dropped_after_write_timeout"`
	PingFlood      int     `json:"ping_flooders,omitempty"`
	FloodersClosed int     `json:"ping_flooders_closed,omitempty"`
	DurationS      float64 `json:"duration_s"`
	Sent           int64   `json:"messages_committed"`
	Expected       int64   `json:"frames_expected"`
	Delivered      int64   `json:"frames_delivered"`
	Lost           int64   `json:"frames_lost"`
	DeliveriesPerS float64 `json:"deliveries_per_s"`
	P50ms          float64 `json:"latency_p50_ms"`
	P95ms          float64 `json:"latency_p95_ms"`
	P99ms          float64 `json:"latency_p99_ms"`
	Maxms          float64 `json:"latency_max_ms"`
	CPUSeconds     float64 `json:"walcast_cpu_s"`
	CPUPercent     float64 `json:"walcast_cpu_percent"`
	CPUPerFrameUS  float64 `json:"walcast_cpu_per_frame_us"`
	RSSKB          int64   `json:"walcast_rss_kb"`
	RSSPerConnKB   float64 `json:"walcast_rss_per_socket_kb,omitempty"`
	// With --idle: RSS before the sockets, per socket 2 s after they
	// subscribed, and the hold (RSSPerConnKB is at its end).
	Baseline          int64   `json:"walcast_rss_baseline_kb,omitempty"`
	RSSPerConnEarlyKB float64 `json:"walcast_rss_per_socket_after_2s_kb,omitempty"`
	HoldS             float64 `json:"hold_s,omitempty"`
	// PerSecond is the latency in each second of the run, so a spike can
	// be placed in time.
	PerSecond []second `json:"per_second,omitempty"`
}

// second is the latency of the frames received in one second of the run.
type second struct {
	T      int     `json:"t_s"`
	Frames int     `json:"frames"`
	P50ms  float64 `json:"p50_ms"`
	P99ms  float64 `json:"p99_ms"`
	Maxms  float64 `json:"max_ms"`
}

// perSecond groups samples by the second of the run they arrived in.
func perSecond(all []sample) []second {
	secs := map[int][]time.Duration{}
	last := -1
	for _, s := range all {
		k := int(s.at / time.Second)
		secs[k] = append(secs[k], s.lat)
		last = max(last, k)
	}
	out := make([]second, last+1)
	for k := range out {
		l := secs[k]
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
		out[k].T = k
		if len(l) > 0 {
			out[k] = second{T: k, Frames: len(l), P50ms: ms(pct(l, 50)), P99ms: ms(pct(l, 99)), Maxms: ms(l[len(l)-1])}
		}
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (r *result) fill(all []sample) {
	l := sortedLatencies(all)
	r.P50ms, r.P95ms, r.P99ms = ms(pct(l, 50)), ms(pct(l, 95)), ms(pct(l, 99))
	if len(l) > 0 {
		r.Maxms = ms(l[len(l)-1])
	}
	r.PerSecond = perSecond(all)
}

func report(o options, r result, all []sample, stdout io.Writer) error {
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "%s\t%v\n", k, v) }
	if r.Label != "" {
		row("run", r.Label)
	}
	row("subscribers / projects / writers", fmt.Sprintf("%d / %d / %d", r.Subscribers, r.Projects, r.Writers))
	if o.idle {
		row("walcast RSS", fmt.Sprintf("%d KiB", r.RSSKB))
		row("RSS per subscribed socket", fmt.Sprintf("%.1f KiB after %.0f s (%.1f KiB after 2 s; baseline %d KiB)", r.RSSPerConnKB, r.HoldS, r.RSSPerConnEarlyKB, r.Baseline))
		tw.Flush()
		return writeOutputs(o, r, all)
	}
	row("messages committed", fmt.Sprintf("%d (%.0f/s target %s)", r.Sent, float64(r.Sent)/r.DurationS, rateText(r.Rate)))
	row("frames delivered / expected", fmt.Sprintf("%d / %d", r.Delivered, r.Expected))
	row("frames lost", r.Lost)
	row("deliveries/s", fmt.Sprintf("%.0f", r.DeliveriesPerS))
	row("latency p50 / p95 / p99 / max", fmt.Sprintf("%.2f / %.2f / %.2f / %.2f ms", r.P50ms, r.P95ms, r.P99ms, r.Maxms))
	row("walcast CPU", fmt.Sprintf("%.2f s (%.0f%%), %.2f µs per delivered frame", r.CPUSeconds, r.CPUPercent, r.CPUPerFrameUS))
	row("walcast RSS", fmt.Sprintf("%d KiB", r.RSSKB))
	if r.Slow > 0 {
		row("slow subscribers closed", fmt.Sprintf("%d of %d (4008: %d, write timeout: %d)", r.SlowClosed+r.SlowDropped, r.Slow, r.SlowClosed, r.SlowDropped))
	}
	if r.PingFlood > 0 {
		row("ping flooders", fmt.Sprintf("%d, each reopening after a close: %d sockets closed by the server", r.PingFlood, r.FloodersClosed))
	}
	tw.Flush()
	return writeOutputs(o, r, all)
}

func rateText(r float64) string {
	if r <= 0 {
		return "max"
	}
	return fmt.Sprintf("%.0f/s", r)
}

func writeOutputs(o options, r result, all []sample) error {
	if o.jsonOut != "" {
		b, _ := json.MarshalIndent(r, "", "  ")
		if err := os.WriteFile(o.jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if o.svgOut != "" && len(all) > 0 {
		if err := os.WriteFile(o.svgOut, []byte(chart(r, all)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// chart draws two panels: the latency distribution (log-scale buckets) and
// p50/p99/max per second over the run.
func chart(r result, all []sample) string {
	const w, h, pad = 900, 620, 60
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`, w, h)
	title := fmt.Sprintf("walcast commit→socket latency %s — %d subscribers, %s, p50 %.2f ms, p99 %.2f ms, max %.2f ms, lost %d",
		r.Label, r.Subscribers, rateText(r.Rate), r.P50ms, r.P99ms, r.Maxms, r.Lost)
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="13" font-weight="bold">%s</text>`, pad, escape(title))

	// Panel 1: histogram over log10(latency in ms), 0.1 ms .. 1 s.
	top, ph := 40, 230
	lo, hi := -1.0, 3.0
	const bins = 40
	counts := make([]int, bins)
	for _, s := range all {
		x := math.Log10(math.Max(ms(s.lat), 0.1))
		i := int((x - lo) / (hi - lo) * bins)
		counts[min(max(i, 0), bins-1)]++
	}
	maxC := 1
	for _, c := range counts {
		maxC = max(maxC, c)
	}
	bw := float64(w-2*pad) / bins
	for i, c := range counts {
		bh := float64(ph) * float64(c) / float64(maxC)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#4a7bd0"/>`, float64(pad)+float64(i)*bw, float64(top+ph)-bh, bw-1, bh)
	}
	axis(&b, pad, top+ph, w-pad)
	for _, t := range []float64{0.1, 1, 10, 100, 1000} {
		x := float64(pad) + (math.Log10(t)-lo)/(hi-lo)*float64(w-2*pad)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%g ms</text>`, x, top+ph+15, t)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d">frames per latency bucket (log scale)</text>`, pad, top+12)

	// Panel 2: per-second p50/p99/max.
	top2, ph2 := 330, 230
	var maxMs float64
	pts := r.PerSecond
	if len(pts) == 0 {
		pts = perSecond(all)
	}
	last := max(len(pts)-1, 0)
	for _, p := range pts {
		maxMs = math.Max(maxMs, p.Maxms)
	}
	maxMs = niceCeil(maxMs)
	line := func(get func(second) float64, color string) {
		var d strings.Builder
		for k, p := range pts {
			x := float64(pad) + float64(k)/math.Max(float64(last), 1)*float64(w-2*pad)
			y := float64(top2+ph2) - get(p)/maxMs*float64(ph2)
			if k == 0 {
				fmt.Fprintf(&d, "M%.1f,%.1f", x, y)
			} else {
				fmt.Fprintf(&d, " L%.1f,%.1f", x, y)
			}
		}
		fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="1.5"/>`, d.String(), color)
	}
	line(func(p second) float64 { return p.Maxms }, "#d0564a")
	line(func(p second) float64 { return p.P99ms }, "#e0a030")
	line(func(p second) float64 { return p.P50ms }, "#4a7bd0")
	axis(&b, pad, top2+ph2, w-pad)
	fmt.Fprintf(&b, `<text x="%d" y="%d">latency per second of the run: p50 (blue), p99 (orange), max (red); y up to %g ms</text>`, pad, top2+12, maxMs)
	fmt.Fprintf(&b, `<text x="%d" y="%d">0 s</text><text x="%d" y="%d" text-anchor="end">%d s</text>`, pad, top2+ph2+15, w-pad, top2+ph2+15, last)
	b.WriteString(`</svg>`)
	return b.String()
}

func axis(b *strings.Builder, x0, y, x1 int) {
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`, x0, y, x1, y)
}

func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
