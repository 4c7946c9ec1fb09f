package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/walcast/walcast/internal/auth"
)

type options struct {
	url, db, secret string
	subscribers     int
	projects        int
	writers         int
	rate            float64
	duration        time.Duration
	slow            int
	pingFlood       int
	floodEvery      time.Duration
	// floodChild runs only flooders, for the parent run: user:project
	// pairs, comma-separated (the attacker is a process of its own, so
	// its CPU is not the measuring process's).
	floodChild         string
	bulkRows           int
	idle               bool
	pid                int
	jsonOut, svgOut    string
	label              string
	drain              time.Duration
	connectConcurrency int
	keep               bool
	notify             bool
	hold               time.Duration
	addrs              int
	storm              bool
	killAfter          time.Duration
	restartCmd         string
}

func parse(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("walcast-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.url, "url", "http://127.0.0.1:8080", "walcast base URL")
	fs.StringVar(&o.db, "db", os.Getenv("WALCAST_DATABASE_URL"), "database URL for setup and writes (superuser or the app's role)")
	fs.StringVar(&o.secret, "secret", os.Getenv("WALCAST_JWT_SECRET"), "JWT secret walcast verifies with")
	fs.IntVar(&o.subscribers, "subscribers", 100, "WebSocket subscribers")
	fs.IntVar(&o.projects, "projects", 10, "projects the subscribers are spread over")
	fs.IntVar(&o.writers, "writers", 4, "concurrent SQL writers")
	fs.Float64Var(&o.rate, "rate", 200, "message inserts per second over all writers (0: as fast as possible)")
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "how long the writers run")
	fs.IntVar(&o.slow, "slow", 0, "extra subscribers that never read (slow consumers), spread over the projects like the others")
	fs.IntVar(&o.pingFlood, "ping-flood", 0, "extra subscribers that never read and send WebSocket pings as fast as they can (in a child process), spread over the projects like the others")
	fs.DurationVar(&o.floodEvery, "flood-every", 3*time.Second, "with --ping-flood: a flooder opens a new socket this long after the server closed its last")
	fs.StringVar(&o.floodChild, "flood-child", "", "internal: run only the ping flooders for these user:project pairs until stdin closes, print how many sockets the server closed")
	fs.IntVar(&o.bulkRows, "bulk-rows", 0, "instead of writers: one transaction inserting this many messages, spread over --projects (one subscriber each); reports walcast's peak RSS over idle and commit→BULK time")
	fs.BoolVar(&o.idle, "idle", false, "open and subscribe the sockets, write nothing, report memory per socket")
	fs.DurationVar(&o.hold, "hold", 2*time.Second, "with --idle: how long the sockets stay open before memory is read")
	fs.IntVar(&o.pid, "pid", 0, "walcast's pid for CPU and RSS (default: from /api/v1/status)")
	fs.StringVar(&o.jsonOut, "json", "", "write the summary as JSON to this file")
	fs.StringVar(&o.svgOut, "svg", "", "write a latency chart (distribution and over time) to this SVG file")
	fs.StringVar(&o.label, "label", "", "a name for this run in the outputs")
	fs.DurationVar(&o.drain, "drain", 10*time.Second, "how long to wait for the last frames after the writers stop")
	fs.IntVar(&o.connectConcurrency, "connect-concurrency", 32, "sockets opened at once during setup")
	fs.BoolVar(&o.keep, "keep", false, "keep the bench's rows in the database")
	fs.BoolVar(&o.notify, "notify", false, "walcast runs in NOTIFY mode (source: notify): one frame per message")
	fs.IntVar(&o.addrs, "addrs", 0, "loopback source addresses the sockets are spread over, 127.0.1.1 onwards (0: the system's choice); walcast's per-address connect limit applies to each, as to browsers behind their own addresses")
	fs.BoolVar(&o.storm, "storm", false, "restart storm: writers run for --duration; after --kill-after walcast gets SIGKILL and --restart-cmd starts it again; every socket reconnects like @walcast/client and resumes with since; every frame is checked")
	fs.DurationVar(&o.killAfter, "kill-after", 5*time.Second, "with --storm: when the SIGKILL comes, from the writers' start")
	fs.StringVar(&o.restartCmd, "restart-cmd", "", "with --storm: a shell command that starts walcast again in the background and returns")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case o.floodChild != "":
		return o, nil
	case o.db == "":
		return o, errors.New("--db (or WALCAST_DATABASE_URL) is required")
	case len(o.secret) < 16:
		return o, errors.New("--secret (or WALCAST_JWT_SECRET) is required")
	case o.subscribers < 1 || o.projects < 1 || o.writers < 1:
		return o, errors.New("--subscribers, --projects and --writers must be at least 1")
	case o.storm && o.restartCmd == "":
		return o, errors.New("--storm needs --restart-cmd")
	case o.addrs < 0 || o.addrs > 250*250:
		return o, errors.New("--addrs must be between 0 and 62500")
	}
	return o, nil
}

// sample is one received event: when (since start) and how late.
type sample struct {
	at  time.Duration
	lat time.Duration
}

type subscriber struct {
	user, project string
	local         net.Addr // source address; nil: the system's choice
	conn          *wsConn
	samples       []sample
	received      int64
	closeCode     int
}

// startFloodChild runs the flooders of subs in a child process (the same
// binary, --flood-child) and returns the function that stops it and
// reports how many flooder sockets the server closed.
func startFloodChild(o options, subs []*subscriber) (stop func() int, err error) {
	if len(subs) == 0 {
		return func() int { return 0 }, nil
	}
	var pairs []string
	for _, s := range subs {
		_ = s.conn.Close() // the child opens its own
		pairs = append(pairs, s.user+":"+s.project)
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "--flood-child", strings.Join(pairs, ","), "--url", o.url, "--secret", o.secret, "--flood-every", o.floodEvery.String())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() int {
		_ = stdin.Close() // the child stops when its stdin ends
		_ = cmd.Wait()
		n, _ := strconv.Atoi(strings.TrimSpace(out.String()))
		return n
	}, nil
}

// runFloodChild floods pings from one socket per user:project pair, each
// reopening after the server closes it, until stdin closes.
func runFloodChild(o options, stdin io.Reader, stdout io.Writer) error {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _, _ = io.Copy(io.Discard, stdin); cancel() }()
	url := strings.Replace(o.url, "http", "ws", 1) + "/ws"
	var wg sync.WaitGroup
	var closed atomic.Int64
	for _, pair := range strings.Split(o.floodChild, ",") {
		user, project, _ := strings.Cut(pair, ":")
		s := &subscriber{user: user, project: project}
		if err := s.connect(ctx, url, o.secret); err != nil {
			cancel()
			return err
		}
		wg.Add(1)
		go func() { defer wg.Done(); closed.Add(int64(s.floodPings(ctx, url, o.secret, o.floodEvery))) }()
	}
	wg.Wait()
	cancel()
	fmt.Fprintln(stdout, closed.Load())
	return nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	if o.floodChild != "" {
		return runFloodChild(o, os.Stdin, stdout)
	}
	pcfg, err := pgxpool.ParseConfig(o.db)
	if err != nil {
		return err
	}
	pcfg.MaxConns = int32(o.writers + 2) // every writer holds one for the run
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	pid := o.pid
	if pid == 0 {
		pid = walcastPID(o.url)
	}

	runID := fmt.Sprintf("%x", rand.Uint32())
	fmt.Fprintf(stderr, "bench %s: setting up %d users and %d projects\n", runID, o.subscribers+o.slow+o.pingFlood, o.projects)
	fx, err := setup(ctx, pool, runID, o.subscribers+o.slow+o.pingFlood, o.projects)
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	if !o.keep {
		defer fx.cleanup(pool)
	}

	if o.storm {
		return runStorm(ctx, o, pool, fx, pid, stdout, stderr)
	}
	// The setup's rows reach walcast's history before the baseline: the
	// memory per socket is the sockets', not the history's.
	waitCaughtUp(ctx, pool, o.url, stderr)
	rssBefore := rssKB(pid)
	start := time.Now()
	subs, err := connectAll(ctx, o, fx)
	if err != nil {
		return err
	}
	healthy := subs[:o.subscribers]
	if o.bulkRows > 0 {
		return runBulk(ctx, o, pool, fx, healthy, pid, stdout)
	}
	readers, err := readAll(healthy, start)
	if err != nil {
		return err
	}
	defer func() {
		readers.Close()
		for _, s := range subs[o.subscribers:] {
			_ = s.conn.Close()
		}
	}()
	fmt.Fprintf(stderr, "bench %s: %d sockets subscribed in %s\n", runID, len(subs), time.Since(start).Round(time.Millisecond))

	res := result{Label: o.label, Subscribers: o.subscribers, Projects: o.projects, Writers: o.writers, Rate: o.rate, Slow: o.slow, PingFlood: o.pingFlood}
	if o.idle {
		// Read twice: two seconds after the last subscribe, with the
		// garbage of the connects still on the heap, and at the end of
		// the hold, once the runtime has collected (it forces a cycle
		// every two minutes), shrunk stacks and returned pages.
		time.Sleep(min(o.hold, 2*time.Second))
		early := rssKB(pid)
		time.Sleep(o.hold - min(o.hold, 2*time.Second))
		after := rssKB(pid)
		res.RSSKB = after
		res.Baseline = rssBefore
		if rssBefore > 0 && after > 0 {
			res.RSSPerConnKB = float64(after-rssBefore) / float64(len(subs))
			res.RSSPerConnEarlyKB = float64(early-rssBefore) / float64(len(subs))
			res.HoldS = o.hold.Seconds()
		}
		return report(o, res, nil, stdout)
	}

	waitCaughtUp(ctx, pool, o.url, stderr)
	flood, err := startFloodChild(o, subs[o.subscribers+o.slow:])
	if err != nil {
		return err
	}
	cpu0, cpuAt0 := cpuSeconds(pid), time.Now()
	committed, sent := drive(ctx, o, pool, fx, healthy, stderr)
	floodersClosed := flood()
	// Each message is a cache_invalidate and, in WAL mode, a message_created.
	perMessage := int64(2)
	if o.notify {
		perMessage = 1
	}
	var expected int64
	for proj, n := range committed {
		expected += perMessage * n * int64(fx.subsPerProject[proj])
	}
	deadline := time.Now().Add(o.drain)
	for time.Now().Before(deadline) && total(healthy) < expected {
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(cpuAt0)
	cpu1 := cpuSeconds(pid)
	readers.Close() // the samples are complete

	var all []sample
	for _, s := range healthy {
		all = append(all, s.samples...)
	}
	res.Sent = sent
	res.Expected = expected
	res.Delivered = total(healthy)
	res.Lost = expected - res.Delivered
	res.DurationS = o.duration.Seconds()
	res.DeliveriesPerS = float64(res.Delivered) / o.duration.Seconds()
	res.fill(all)
	res.RSSKB = rssKB(pid)
	if cpu0 >= 0 && cpu1 >= 0 {
		res.CPUSeconds = cpu1 - cpu0
		res.CPUPercent = 100 * res.CPUSeconds / elapsed.Seconds()
		if res.Delivered > 0 {
			res.CPUPerFrameUS = 1e6 * res.CPUSeconds / float64(res.Delivered)
		}
	}
	for _, s := range subs[o.subscribers : o.subscribers+o.slow] {
		// 4008 when it resumed reading within the write timeout; a reset
		// connection (-1) when the blocked write timed out first.
		switch s.closeCodeAfterDrain() {
		case 4008:
			res.SlowClosed++
		case -1:
			res.SlowDropped++
		}
	}
	res.FloodersClosed = floodersClosed
	return report(o, res, all, stdout)
}

// sourceAddr is the i-th socket's source address over n loopback
// addresses (127.0.1.1, 127.0.1.2, …), or nil when n is 0.
func sourceAddr(i, n int) net.Addr {
	if n == 0 {
		return nil
	}
	k := i % n
	return &net.TCPAddr{IP: net.IPv4(127, 0, byte(1+k/250), byte(1+k%250))}
}

func total(subs []*subscriber) int64 {
	var n int64
	for _, s := range subs {
		n += atomic.LoadInt64(&s.received)
	}
	return n
}

type fixture struct {
	runID          string
	users          []string
	projects       []string
	subsPerProject map[string]int
}

func setup(ctx context.Context, pool *pgxpool.Pool, runID string, users, projects int) (*fixture, error) {
	fx := &fixture{runID: runID, subsPerProject: map[string]int{}}
	rows, err := pool.Query(ctx, `INSERT INTO users (email, display_name)
		SELECT 'bench-' || $1 || '-' || i || '@bench.invalid', 'bench ' || i FROM generate_series(1, $2) i RETURNING id::text`, runID, users)
	if err != nil {
		return nil, err
	}
	if fx.users, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return nil, err
	}
	rows, err = pool.Query(ctx, `INSERT INTO projects (name, owner_id)
		SELECT 'bench ' || $1 || ' ' || i, $2 FROM generate_series(1, $3) i RETURNING id::text`, runID, fx.users[0], projects)
	if err != nil {
		return nil, err
	}
	if fx.projects, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return nil, err
	}
	members := make([][]any, len(fx.users))
	for i, u := range fx.users {
		members[i] = []any{fx.projects[i%len(fx.projects)], u}
	}
	_, err = pool.CopyFrom(ctx, pgx.Identifier{"project_members"}, []string{"project_id", "user_id"}, pgx.CopyFromRows(members))
	return fx, err
}

func (fx *fixture) cleanup(pool *pgxpool.Pool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, _ = pool.Exec(ctx, `DELETE FROM projects WHERE name LIKE 'bench ' || $1 || ' %'`, fx.runID)
	_, _ = pool.Exec(ctx, `DELETE FROM users WHERE email LIKE 'bench-' || $1 || '-%'`, fx.runID)
}

func connectAll(ctx context.Context, o options, fx *fixture) ([]*subscriber, error) {
	wsURL := strings.Replace(o.url, "http", "ws", 1) + "/ws"
	subs := make([]*subscriber, len(fx.users))
	sem := make(chan struct{}, o.connectConcurrency)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for i, u := range fx.users {
		proj := fx.projects[i%len(fx.projects)]
		slow := i >= o.subscribers
		if !slow {
			fx.subsPerProject[proj]++
		}
		s := &subscriber{user: u, project: proj, local: sourceAddr(i, o.addrs)}
		if !slow && !o.idle {
			// Room for every sample of the run up front: a load generator
			// whose heap grows collects garbage during the run, and its
			// collections showed up as walcast latency spikes.
			perSub := 1 << 16
			if o.rate > 0 {
				perSub = int(o.rate*o.duration.Seconds()/float64(len(fx.projects))*1.2) + 1024
			}
			s.samples = make([]sample, 0, perSub)
		}
		subs[i] = s
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := s.connect(ctx, wsURL, o.secret); err != nil {
				firstErr.CompareAndSwap(nil, err)
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return nil, err
	}
	return subs, nil
}

func (s *subscriber) connect(ctx context.Context, url, secret string) error {
	tok, err := auth.Issue([]byte(secret), "HS256", s.user, 2*time.Hour, time.Now())
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := dialWS(dctx, url+"?token="+tok, s.local)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	s.conn = conn
	if err := conn.WriteText([]byte(`{"action":"subscribe","project_id":"` + s.project + `"}`)); err != nil {
		return err
	}
	dl, _ := dctx.Deadline()
	_ = conn.conn.SetReadDeadline(dl)
	for { // frames held while the subscription was checked come first
		b, err := conn.Next()
		if err != nil || bytes.Contains(b, []byte(`"error"`)) {
			return fmt.Errorf("subscribe: %s %v", b, err)
		}
		if bytes.Contains(b, []byte(`"subscribed"`)) {
			break
		}
	}
	_ = conn.conn.SetReadDeadline(time.Time{})
	return nil
}

// floodPings sends the largest pings as fast as the connection takes them
// and reads nothing; after the server closes the socket it opens another
// (every later) and floods again, until ctx ends. It returns how many of its sockets the
// server closed.
func (s *subscriber) floodPings(ctx context.Context, url, secret string, every time.Duration) (closed int) {
	ping := bytes.Repeat([]byte{'p'}, 125)
	for ctx.Err() == nil {
		conn := s.conn
		// A write blocked at the end of the run is cut by the deadline.
		stop := context.AfterFunc(ctx, func() { _ = conn.conn.SetWriteDeadline(time.Now()) })
		for ctx.Err() == nil && conn.writeFrame(0x9, ping) == nil {
		}
		stop()
		_ = conn.Close()
		if ctx.Err() != nil {
			return closed
		}
		closed++
		select { // a new attacker socket, as a hostile client would
		case <-ctx.Done():
			return closed
		case <-time.After(every):
		}
		if s.connect(ctx, url, secret) != nil {
			return closed
		}
	}
	return closed
}

// closeCodeAfterDrain reads what a slow subscriber left unread and returns
// how the server closed it (4008 expected), or 0 if it is still open.
func (s *subscriber) closeCodeAfterDrain() int {
	for {
		_ = s.conn.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := s.conn.Next(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return 0
			}
			return closeCode(err)
		}
	}
}

var (
	tsKey          = []byte(`"timestamp":"`)
	keyCreated     = []byte(`"message_created"`)
	keyInvalidate  = []byte(`"cache_invalidate"`)
	keyMessageRsrc = []byte(`"resource":"message"`)
)

// parseTimestamp reads walcast's fixed timestamp form,
// 2006-01-02T15:04:05.000000Z, without allocating (time.Parse takes a
// string, and converting the bytes would allocate once per frame).
func parseTimestamp(b []byte) (time.Time, bool) {
	if len(b) != 27 || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' || b[19] != '.' || b[26] != 'Z' {
		return time.Time{}, false
	}
	num := func(b []byte) (int, bool) {
		n := 0
		for _, c := range b {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	var v [7]int
	for i, r := range [7][2]int{{0, 4}, {5, 7}, {8, 10}, {11, 13}, {14, 16}, {17, 19}, {20, 26}} {
		var ok bool
		if v[i], ok = num(b[r[0]:r[1]]); !ok {
			return time.Time{}, false
		}
	}
	return time.Date(v[0], time.Month(v[1]), v[2], v[3], v[4], v[5], v[6]*1000, time.UTC), true
}

// read counts event frames and samples latency from one socket on a
// goroutine of its own (the poller does it for many sockets at once where
// epoll exists).
func (s *subscriber) read(start time.Time) {
	for {
		b, err := s.conn.Next()
		if err != nil {
			s.closeCode = closeCode(err)
			return
		}
		s.frame(b, time.Now(), start)
	}
}

// frame counts one event frame received at now and samples its latency,
// without allocating: the load generator shares the machine with walcast
// and PostgreSQL.
func (s *subscriber) frame(b []byte, now, start time.Time) {
	head := b[:min(len(b), 64)]
	if bytes.Contains(head, keyCreated) {
		atomic.AddInt64(&s.received, 1)
		return
	}
	// Latency is read from the cache_invalidate of resource "message",
	// which walcast sends in WAL and in NOTIFY mode alike.
	if !bytes.Contains(head, keyInvalidate) || !bytes.Contains(b, keyMessageRsrc) {
		return
	}
	i := bytes.Index(b, tsKey)
	if i < 0 || i+len(tsKey)+27 > len(b) {
		return
	}
	ts, ok := parseTimestamp(b[i+len(tsKey) : i+len(tsKey)+27])
	if !ok {
		return
	}
	s.samples = append(s.samples, sample{at: now.Sub(start), lat: now.Sub(ts)})
	atomic.AddInt64(&s.received, 1)
}

// drive runs the writers for o.duration and returns the messages committed
// per project and in all.
func drive(ctx context.Context, o options, pool *pgxpool.Pool, fx *fixture, healthy []*subscriber, stderr io.Writer) (map[string]int64, int64) {
	committed := make([]map[string]int64, o.writers)
	var sent atomic.Int64
	ctx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	var wg sync.WaitGroup
	for w := 0; w < o.writers; w++ {
		committed[w] = map[string]int64{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pool.Acquire(context.Background())
			if err != nil {
				return
			}
			defer conn.Release()
			var tick <-chan time.Time
			if o.rate > 0 {
				t := time.NewTicker(time.Duration(float64(time.Second) * float64(o.writers) / o.rate))
				defer t.Stop()
				tick = t.C
			}
			for ctx.Err() == nil {
				if tick != nil {
					select {
					case <-tick:
					case <-ctx.Done():
						return
					}
				}
				proj := fx.projects[rand.IntN(len(fx.projects))]
				// Not ctx: a commit cut off by the deadline would be
				// counted as not sent though it reached the WAL.
				if _, err := conn.Exec(context.Background(), `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'bench message')`, proj, fx.users[0]); err != nil {
					return
				}
				committed[w][proj]++
				sent.Add(1)
			}
		}()
	}
	progressDone := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		startAt := time.Now()
		for {
			select {
			case <-progressDone:
				return
			case <-t.C:
				fmt.Fprintf(stderr, "  t=%2.0fs committed=%d delivered=%d\n", time.Since(startAt).Seconds(), sent.Load(), total(healthy))
			}
		}
	}()
	wg.Wait()
	close(progressDone)
	out := map[string]int64{}
	for _, m := range committed {
		for p, n := range m {
			out[p] += n
		}
	}
	return out, sent.Load()
}

// waitCaughtUp waits until walcast has received the WAL written so far, so
// a run does not start behind the previous run's clean-up (deleting its
// users and projects cascades to every message it wrote: one large
// transaction walcast must decode before the new run's first insert).
// In NOTIFY mode there is no WAL position to wait for; a second's pause
// lets the clean-up's notifications pass.
func waitCaughtUp(ctx context.Context, pool *pgxpool.Pool, base string, stderr io.Writer) {
	var target uint64
	var text string
	if err := pool.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&text); err != nil {
		return
	}
	if target = parseLSN(text); target == 0 {
		return
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var st struct {
			Source   string `json:"source"`
			Received string `json:"received_lsn"`
		}
		if resp, err := http.Get(base + "/api/v1/status"); err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
		}
		if st.Source == "notify" {
			time.Sleep(time.Second)
			return
		}
		if parseLSN(st.Received) >= target {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Fprintln(stderr, "walcast-bench: walcast did not catch up with the WAL within 60 s; measuring anyway")
}

// parseLSN reads PostgreSQL's X/Y form, or returns 0.
func parseLSN(s string) uint64 {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0
	}
	return h<<32 | l
}

// walcastPID asks walcast's status document for its pid.
func walcastPID(base string) int {
	resp, err := http.Get(base + "/api/v1/status")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var st struct {
		PID int `json:"pid"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&st)
	return st.PID
}

// cpuSeconds reads utime+stime of pid from /proc, or -1.
func cpuSeconds(pid int) float64 {
	if pid == 0 {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	var ut, st float64
	fmt.Sscan(fields[11], &ut)
	fmt.Sscan(fields[12], &st)
	return (ut + st) / 100 // USER_HZ
}

// rssKB reads VmRSS of pid, or 0.
func rssKB(pid int) int64 {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &kb)
			return kb
		}
	}
	return 0
}

func sortedLatencies(all []sample) []time.Duration {
	l := make([]time.Duration, len(all))
	for i, s := range all {
		l[i] = s.lat
	}
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	return l
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p / 100 * float64(len(sorted)-1))
	return sorted[i]
}

// runBulk commits one transaction of o.bulkRows messages spread over the
// projects and measures what it costs walcast: its peak RSS above idle
// while it decodes and maps the transaction, and the time from the commit
// to the last subscriber's BULK invalidation.
func runBulk(ctx context.Context, o options, pool *pgxpool.Pool, fx *fixture, subs []*subscriber, pid int, stdout io.Writer) error {
	// Readers first: they answer the server's pings while walcast catches
	// up with the previous run's clean-up.
	got := make(chan error, len(subs))
	for _, s := range subs {
		go func() {
			_ = s.conn.conn.SetReadDeadline(time.Now().Add(30 * time.Minute))
			for {
				b, err := s.conn.Next()
				if err != nil {
					got <- fmt.Errorf("subscriber of %s: %w", s.project, err)
					return
				}
				if bytes.Contains(b, []byte(`"BULK"`)) {
					got <- nil
					return
				}
			}
		}()
	}
	waitCaughtUp(ctx, pool, o.url, io.Discard)
	idle := rssKB(pid)
	var peak atomic.Int64
	peak.Store(idle)
	sampling, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if r := rssKB(pid); r > peak.Load() {
				peak.Store(r)
			}
			select {
			case <-sampling.Done():
				return
			case <-t.C:
			}
		}
	}()

	start := time.Now()
	_, err := pool.Exec(ctx, `INSERT INTO messages (project_id, sender_id, content)
		SELECT ($1::uuid[])[1 + i % cardinality($1::uuid[])], $2, 'bulk ' || i FROM generate_series(1, $3) i`,
		fx.projects, fx.users[0], o.bulkRows)
	if err != nil {
		return fmt.Errorf("bulk insert: %w", err)
	}
	committed := time.Now()
	for range subs {
		if err := <-got; err != nil {
			return err
		}
	}
	last := time.Now()
	stopSampling()
	sampler.Wait()
	insert := committed.Sub(start)
	fmt.Fprintf(stdout, "run\t%s\n", o.label)
	fmt.Fprintf(stdout, "rows\t%d in one transaction over %d projects\n", o.bulkRows, len(fx.projects))
	fmt.Fprintf(stdout, "insert\t%s (%.0f rows/s, PostgreSQL)\n", insert.Round(time.Millisecond), float64(o.bulkRows)/insert.Seconds())
	fmt.Fprintf(stdout, "commit→last BULK\t%s (%.0f rows/s through walcast)\n", last.Sub(committed).Round(time.Millisecond), float64(o.bulkRows)/last.Sub(committed).Seconds())
	fmt.Fprintf(stdout, "walcast RSS idle / peak / above idle\t%d / %d / %d KiB\n", idle, peak.Load(), peak.Load()-idle)
	if o.jsonOut != "" {
		b, _ := json.Marshal(map[string]any{"label": o.label, "rows": o.bulkRows, "projects": len(fx.projects),
			"insert_s": insert.Seconds(), "commit_to_last_bulk_s": last.Sub(committed).Seconds(),
			"rss_idle_kb": idle, "rss_peak_kb": peak.Load(), "rss_above_idle_kb": peak.Load() - idle})
		return os.WriteFile(o.jsonOut, b, 0o644)
	}
	return nil
}
