package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/walcast/walcast/internal/auth"
	"github.com/walcast/walcast/internal/events"
)

// The restart storm: every socket loses walcast at once (SIGKILL during
// writes), reconnects the way @walcast/client does, and resumes each
// project with since. The load generator checks every frame it gets:
// positions only go forward, no message comes twice or out of its
// writer's order, and in the end every socket has every message committed
// to its project.

// Reconnect policy of web/walcast-client.js: after a drop or a failed
// open, wait between half and all of min(max, min·2^attempt); a socket
// that opened resets the attempts.
const (
	stormMinBackoff = 250 * time.Millisecond
	stormMaxBackoff = 15 * time.Second
)

type stormSub struct {
	id            int
	user, project string
	writers       int
	killedAt      *atomic.Int64 // UnixNano of the SIGKILL; shared

	// Read and written by the socket's goroutine only.
	last    events.Position
	origin  string
	lastSeq []int64 // per writer: the last message number seen
	seenMu  sync.Mutex
	seen    map[string]bool // contents of the messages received
	attempt int

	got        atomic.Int64 // message_created frames
	liveAt     atomic.Int64 // UnixNano of the last subscribed
	caughtUpAt atomic.Int64 // UnixNano when got reached the target after the restart
	target     atomic.Int64 // messages committed to the project before /readyz; -1: not set
	opens      atomic.Int64
	resyncs    atomic.Int64
	slowCloses atomic.Int64
	problems   atomic.Int64
	problem    atomic.Value // string: the first one
}

func (s *stormSub) fail(format string, args ...any) {
	s.problems.Add(1)
	s.problem.CompareAndSwap(nil, fmt.Sprintf(format, args...))
}

func (s *stormSub) backoff(ctx context.Context) {
	base := min(stormMaxBackoff, stormMinBackoff<<min(s.attempt, 10))
	s.attempt++
	d := base/2 + rand.N(base/2+1)
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// stormFrame is what the load generator reads of a frame.
type stormFrame struct {
	Type      string `json:"type"`
	ProjectID string `json:"project_id"`
	Position  string `json:"position"`
	Origin    string `json:"origin"`
	Code      string `json:"code"`
	Message   string `json:"message"`
	Data      struct {
		Content string `json:"content"`
	} `json:"data"`
}

// run keeps the socket open and subscribed until ctx ends.
func (s *stormSub) run(ctx context.Context, wsURL, secret string, addrs int) {
	for ctx.Err() == nil {
		err := s.session(ctx, wsURL, secret, addrs)
		if ctx.Err() != nil {
			return
		}
		if closeCode(err) == 4008 {
			s.slowCloses.Add(1)
		}
		s.backoff(ctx)
	}
}

// session is one socket's life: open, subscribe (resuming), read.
func (s *stormSub) session(ctx context.Context, wsURL, secret string, addrs int) error {
	tok, err := auth.Issue([]byte(secret), "HS256", s.user, 2*time.Hour, time.Now())
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := dialWS(dctx, wsURL+"?token="+tok, sourceAddr(s.id, addrs))
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	s.opens.Add(1)
	s.attempt = 0
	sub := `{"action":"subscribe","project_id":"` + s.project + `"`
	if !s.last.IsZero() {
		sub += `,"since":"` + s.last.String() + `"`
		if s.origin != "" {
			sub += `,"origin":"` + s.origin + `"`
		}
	}
	if err := conn.WriteText([]byte(sub + "}")); err != nil {
		return err
	}
	for {
		b, err := conn.Next()
		if err != nil {
			return err
		}
		var f stormFrame
		if err := json.Unmarshal(b, &f); err != nil {
			s.fail("frame that is not JSON: %.80s", b)
			continue
		}
		switch f.Type {
		case "subscribed":
			// Everything up to its position has been delivered
			// (docs/protocol.md B.1), as the client takes it.
			if p, err := events.ParsePosition(f.Position); err == nil && p.Compare(s.last) > 0 {
				s.last = p
			}
			if f.Origin != "" {
				s.origin = f.Origin
			}
			s.liveAt.Store(time.Now().UnixNano())
			s.checkCaughtUp()
		case "resync_required":
			// The client would refetch; for the storm it is a failure to
			// resume, and what it missed can no longer be counted.
			s.resyncs.Add(1)
			if p, err := events.ParsePosition(f.Position); err == nil {
				s.last = p
			}
		case "error":
			// Refused while walcast starts (the stream not yet up):
			// reconnect like the client, which treats it as a failure.
			return fmt.Errorf("%s: %s", f.Code, f.Message)
		case "pong", "token_refreshed":
		default:
			s.event(&f, b)
		}
	}
}

func (s *stormSub) event(f *stormFrame, b []byte) {
	if f.ProjectID != s.project {
		s.fail("event of another project: %.80s", b)
		return
	}
	p, err := events.ParsePosition(f.Position)
	if err != nil {
		s.fail("event without a position: %.80s", b)
		return
	}
	if p.Compare(s.last) <= 0 {
		s.fail("position %s after %s: sent twice or out of order", p, s.last)
		return
	}
	s.last = p
	if f.Type != "message_created" {
		return
	}
	w, n, ok := parseStormContent(f.Data.Content)
	if !ok || w >= s.writers {
		return // not this run's message
	}
	if n <= s.lastSeq[w] {
		s.fail("writer %d's message %d after its message %d: sent twice or out of order", w, n, s.lastSeq[w])
		return
	}
	s.lastSeq[w] = n
	s.seenMu.Lock()
	s.seen[f.Data.Content] = true
	s.seenMu.Unlock()
	s.got.Add(1)
	s.checkCaughtUp()
}

func (s *stormSub) checkCaughtUp() {
	if t := s.target.Load(); t >= 0 && s.caughtUpAt.Load() == 0 && s.got.Load() >= t && s.liveAt.Load() > s.killedAt.Load() {
		s.caughtUpAt.Store(time.Now().UnixNano())
	}
}

// parseStormContent reads "storm w<writer>-<n>".
func parseStormContent(c string) (w int, n int64, ok bool) {
	rest, found := strings.CutPrefix(c, "storm w")
	if !found {
		return 0, 0, false
	}
	ws, ns, found := strings.Cut(rest, "-")
	if !found {
		return 0, 0, false
	}
	wi, err1 := strconv.Atoi(ws)
	ni, err2 := strconv.ParseInt(ns, 10, 64)
	return wi, ni, err1 == nil && err2 == nil && wi >= 0
}

// runStorm is --storm.
func runStorm(ctx context.Context, o options, pool *pgxpool.Pool, fx *fixture, pid int, stdout, stderr io.Writer) error {
	wsURL := strings.Replace(o.url, "http", "ws", 1) + "/ws"
	waitCaughtUp(ctx, pool, o.url, stderr)
	subs := make([]*stormSub, len(fx.users))
	byProject := map[string][]*stormSub{}
	killed := new(atomic.Int64)
	killed.Store(1 << 62) // not yet
	for i, u := range fx.users {
		s := &stormSub{id: i, user: u, project: fx.projects[i%len(fx.projects)], writers: o.writers, lastSeq: make([]int64, o.writers), killedAt: killed}
		s.target.Store(-1)
		s.seen = map[string]bool{}
		subs[i] = s
		byProject[s.project] = append(byProject[s.project], s)
	}
	runCtx, stopSockets := context.WithCancel(ctx)
	defer stopSockets()
	var sockets sync.WaitGroup
	start := time.Now()
	for _, s := range subs {
		sockets.Add(1)
		go func() { defer sockets.Done(); s.run(runCtx, wsURL, o.secret, o.addrs) }()
	}
	defer sockets.Wait()
	defer stopSockets()
	if err := waitUntil(ctx, 5*time.Minute, func() bool { return countLive(subs, 0) == len(subs) }); err != nil {
		return fmt.Errorf("sockets did not all subscribe: %d of %d", countLive(subs, 0), len(subs))
	}
	fmt.Fprintf(stderr, "storm: %d sockets subscribed in %s\n", len(subs), time.Since(start).Round(time.Millisecond))

	// Writers: each message says which writer wrote it and its number.
	committed := map[string]*atomic.Int64{}
	for _, p := range fx.projects {
		committed[p] = new(atomic.Int64)
	}
	var sent atomic.Int64
	wctx, stopWriters := context.WithTimeout(ctx, o.duration)
	defer stopWriters()
	var writers sync.WaitGroup
	for w := range o.writers {
		writers.Add(1)
		go func() {
			defer writers.Done()
			conn, err := pool.Acquire(context.Background())
			if err != nil {
				return
			}
			defer conn.Release()
			t := time.NewTicker(time.Duration(float64(time.Second) * float64(o.writers) / o.rate))
			defer t.Stop()
			for n := int64(1); ; n++ {
				select {
				case <-t.C:
				case <-wctx.Done():
					return
				}
				proj := fx.projects[rand.IntN(len(fx.projects))]
				if _, err := conn.Exec(context.Background(), `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, $3)`,
					proj, fx.users[0], fmt.Sprintf("storm w%d-%d", w, n)); err != nil {
					fmt.Fprintln(stderr, "storm writer:", err)
					return
				}
				committed[proj].Add(1)
				sent.Add(1)
			}
		}()
	}

	// The kill, the restart, and walcast's readiness.
	select {
	case <-time.After(o.killAfter):
	case <-ctx.Done():
		return ctx.Err()
	}
	if pid == 0 {
		return errors.New("storm: walcast's pid is unknown (give --pid)")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("storm: SIGKILL %d: %w", pid, err)
	}
	killedAt := time.Now()
	killed.Store(killedAt.UnixNano())
	fmt.Fprintf(stderr, "storm: SIGKILL to walcast (pid %d) at t=%.1fs, %d committed so far\n", pid, killedAt.Sub(start).Seconds(), sent.Load())
	// The old process must be gone before the new one binds its port.
	_ = waitUntil(ctx, 10*time.Second, func() bool { return syscall.Kill(pid, 0) != nil })
	cmd := exec.Command("sh", "-c", o.restartCmd)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("storm: --restart-cmd: %w", err)
	}
	if err := waitUntil(ctx, 60*time.Second, func() bool { return ready(o.url) }); err != nil {
		return errors.New("storm: walcast did not become ready within 60 s of the restart")
	}
	readyAt := time.Now()
	newPID := walcastPID(o.url)
	for p, n := range committed {
		t := n.Load()
		for _, s := range byProject[p] {
			s.target.Store(t)
			s.checkCaughtUp()
		}
	}
	fmt.Fprintf(stderr, "storm: walcast (pid %d) ready %.2fs after the kill\n", newPID, readyAt.Sub(killedAt).Seconds())

	// walcast's CPU and memory through the storm.
	var peakCPU, peakRSS atomic.Int64 // percent of a core; KiB
	samplerCtx, stopSampler := context.WithCancel(ctx)
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		// CPU over 100 ms windows (the kernel counts in 10 ms ticks),
		// memory every 20 ms.
		prev, prevAt := cpuSeconds(newPID), time.Now()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if r := rssKB(newPID); r > peakRSS.Load() {
				peakRSS.Store(r)
			}
			if now := time.Now(); now.Sub(prevAt) >= 100*time.Millisecond {
				c := cpuSeconds(newPID)
				if pct := int64(100 * (c - prev) / now.Sub(prevAt).Seconds()); pct > peakCPU.Load() {
					peakCPU.Store(pct)
				}
				prev, prevAt = c, now
			}
			select {
			case <-samplerCtx.Done():
				return
			case <-t.C:
			}
		}
	}()
	cpuAtReady := cpuSeconds(newPID)
	caughtUp := waitUntil(ctx, 2*time.Minute, func() bool { return countCaughtUp(subs) == len(subs) })
	allAt := time.Now()
	cpuToCaughtUp := cpuSeconds(newPID) - cpuAtReady
	cpuSinceStart := cpuSeconds(newPID)
	// The storm's tail: a little longer, so the sampler sees its end.
	time.Sleep(200 * time.Millisecond)
	stopSampler()
	sampler.Wait()
	if caughtUp != nil {
		fmt.Fprintf(stderr, "storm: only %d of %d sockets caught up within 2 minutes of /readyz; %d subscribed again\n", countCaughtUp(subs), len(subs), countLive(subs, killedAt.UnixNano()))
		shown := 0
		for _, s := range subs {
			if s.caughtUpAt.Load() == 0 && shown < 5 {
				shown++
				fmt.Fprintf(stderr, "  socket %d (project %s): %d of %d messages, last position %s, subscribed %.2fs after /readyz, %d opens\n",
					s.id, s.project, s.got.Load(), s.target.Load(), s.last, time.Duration(s.liveAt.Load()-readyAt.UnixNano()).Seconds(), s.opens.Load())
			}
		}
	}

	// The writers finish; every socket must then have every message.
	writers.Wait()
	var expected int64
	for p, n := range committed {
		expected += n.Load() * int64(len(byProject[p]))
	}
	_ = waitUntil(ctx, o.drain, func() bool { return totalGot(subs) >= expected })
	stopSockets()
	sockets.Wait()

	shown := 0
	for _, s := range subs {
		if d := committed[s.project].Load() - s.got.Load(); d > 0 && shown < 5 {
			shown++
			fmt.Fprintf(stderr, "  socket %d (project %s) lacks %d: %d of %d messages, last position %s, subscribed %.2fs after /readyz, %d opens\n",
				s.id, s.project, d, s.got.Load(), committed[s.project].Load(), s.last, time.Duration(s.liveAt.Load()-readyAt.UnixNano()).Seconds(), s.opens.Load())
			rows, err := pool.Query(ctx, `SELECT content, created_at FROM messages WHERE project_id = $1 AND content LIKE 'storm w%' ORDER BY created_at`, s.project)
			if err == nil {
				for rows.Next() {
					var c string
					var at time.Time
					_ = rows.Scan(&c, &at)
					if !s.seen[c] {
						fmt.Fprintf(stderr, "    missing %q committed %.2fs after the kill\n", c, at.Sub(killedAt).Seconds())
					}
				}
				rows.Close()
			}
		}
	}
	var lost, problems, resyncs, slow, opens int64
	var firstProblem string
	var liveAfter, caughtAfter []time.Duration
	for _, s := range subs {
		if d := committed[s.project].Load() - s.got.Load(); d > 0 {
			lost += d
		}
		problems += s.problems.Load()
		if p, ok := s.problem.Load().(string); ok && firstProblem == "" {
			firstProblem = p
		}
		resyncs += s.resyncs.Load()
		slow += s.slowCloses.Load()
		opens += s.opens.Load()
		if at := s.liveAt.Load(); at > killedAt.UnixNano() {
			liveAfter = append(liveAfter, time.Duration(at-readyAt.UnixNano()))
		}
		if at := s.caughtUpAt.Load(); at > 0 {
			caughtAfter = append(caughtAfter, time.Duration(at-readyAt.UnixNano()))
		}
	}
	sortDurations(liveAfter)
	sortDurations(caughtAfter)
	res := stormResult{
		Label: o.label, Sockets: len(subs), Projects: len(fx.projects), Rate: o.rate, Addrs: o.addrs,
		Committed: sent.Load(), Expected: expected, Delivered: totalGot(subs), Lost: lost,
		Duplicates: problems, Resyncs: resyncs, SlowClosed: slow, Opens: opens,
		ReadyAfterKillS:  readyAt.Sub(killedAt).Seconds(),
		LastLiveS:        last(liveAfter).Seconds(),
		LastCaughtUpS:    last(caughtAfter).Seconds(),
		P50CaughtUpS:     pctDur(caughtAfter, 50).Seconds(),
		P99CaughtUpS:     pctDur(caughtAfter, 99).Seconds(),
		AllCaughtUp:      caughtUp == nil,
		PeakCPUPercent:   peakCPU.Load(),
		PeakRSSKB:        peakRSS.Load(),
		CPUToCaughtUpS:   cpuToCaughtUp,
		CPUSinceStartS:   cpuSinceStart,
		CaughtUpWindowS:  allAt.Sub(readyAt).Seconds(),
		FirstProblem:     firstProblem,
		BackoffMinMillis: stormMinBackoff.Milliseconds(),
		BackoffMaxMillis: stormMaxBackoff.Milliseconds(),
	}
	fmt.Fprintf(stdout, "run\t%s\n", o.label)
	fmt.Fprintf(stdout, "sockets / projects / source addresses\t%d / %d / %d\n", res.Sockets, res.Projects, res.Addrs)
	fmt.Fprintf(stdout, "messages committed (during the storm too)\t%d at %.0f/s\n", res.Committed, o.rate)
	fmt.Fprintf(stdout, "SIGKILL → /readyz\t%.2f s\n", res.ReadyAfterKillS)
	fmt.Fprintf(stdout, "/readyz → last socket subscribed again\t%.2f s\n", res.LastLiveS)
	fmt.Fprintf(stdout, "/readyz → caught up: p50 / p99 / last\t%.2f / %.2f / %.2f s (all: %v)\n", res.P50CaughtUpS, res.P99CaughtUpS, res.LastCaughtUpS, res.AllCaughtUp)
	fmt.Fprintf(stdout, "frames checked: delivered / expected / lost\t%d / %d / %d messages\n", res.Delivered, res.Expected, res.Lost)
	fmt.Fprintf(stdout, "duplicated or out of order / resync_required / closed as slow\t%d / %d / %d\n", res.Duplicates, res.Resyncs, res.SlowClosed)
	if firstProblem != "" {
		fmt.Fprintf(stdout, "first problem\t%s\n", firstProblem)
	}
	fmt.Fprintf(stdout, "walcast from /readyz to caught up: peak CPU / peak RSS / CPU used\t%d %% of a core / %d KiB / %.2f s (%.2f s since its start)\n", res.PeakCPUPercent, res.PeakRSSKB, res.CPUToCaughtUpS, res.CPUSinceStartS)
	if o.jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(o.jsonOut, b, 0o644); err != nil {
			return err
		}
	}
	if lost > 0 || problems > 0 {
		return fmt.Errorf("storm: %d messages lost, %d frames duplicated or out of order", lost, problems)
	}
	return nil
}

type stormResult struct {
	Label            string  `json:"label"`
	Sockets          int     `json:"sockets"`
	Projects         int     `json:"projects"`
	Rate             float64 `json:"rate"`
	Addrs            int     `json:"source_addresses"`
	Committed        int64   `json:"committed"`
	Expected         int64   `json:"expected_messages"`
	Delivered        int64   `json:"delivered_messages"`
	Lost             int64   `json:"lost_messages"`
	Duplicates       int64   `json:"duplicated_or_out_of_order"`
	Resyncs          int64   `json:"resyncs"`
	SlowClosed       int64   `json:"closed_as_slow"`
	Opens            int64   `json:"socket_opens"`
	ReadyAfterKillS  float64 `json:"ready_after_kill_s"`
	LastLiveS        float64 `json:"last_live_after_ready_s"`
	P50CaughtUpS     float64 `json:"p50_caught_up_after_ready_s"`
	P99CaughtUpS     float64 `json:"p99_caught_up_after_ready_s"`
	LastCaughtUpS    float64 `json:"last_caught_up_after_ready_s"`
	AllCaughtUp      bool    `json:"all_caught_up"`
	CaughtUpWindowS  float64 `json:"caught_up_window_s"`
	PeakCPUPercent   int64   `json:"walcast_peak_cpu_percent"`
	PeakRSSKB        int64   `json:"walcast_peak_rss_kb"`
	CPUToCaughtUpS   float64 `json:"walcast_cpu_ready_to_caught_up_s"`
	CPUSinceStartS   float64 `json:"walcast_cpu_start_to_caught_up_s"`
	FirstProblem     string  `json:"first_problem,omitempty"`
	BackoffMinMillis int64   `json:"backoff_min_ms"`
	BackoffMaxMillis int64   `json:"backoff_max_ms"`
}

// countLive counts the sockets subscribed after the time given (UnixNano).
func countLive(subs []*stormSub, after int64) int {
	n := 0
	for _, s := range subs {
		if s.liveAt.Load() > after {
			n++
		}
	}
	return n
}

func countCaughtUp(subs []*stormSub) int {
	n := 0
	for _, s := range subs {
		if s.caughtUpAt.Load() > 0 {
			n++
		}
	}
	return n
}

func totalGot(subs []*stormSub) int64 {
	var n int64
	for _, s := range subs {
		n += s.got.Load()
	}
	return n
}

// waitUntil polls cond every 10 ms until it holds, ctx ends or within
// passes.
func waitUntil(ctx context.Context, within time.Duration, cond func() bool) error {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

func ready(base string) bool {
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func sortDurations(d []time.Duration) { sort.Slice(d, func(i, j int) bool { return d[i] < d[j] }) }

func last(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[len(d)-1]
}

func pctDur(sorted []time.Duration, p float64) time.Duration { return pct(sorted, p) }
