package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"
)

// chaosClient reconnects at random and resumes every project with the last
// position it saw; it records the message ids it receives per project.
type chaosClient struct {
	user     string
	projects []string
	url      string
	// urls, when set, are replicas to move between: a failed dial tries
	// the next one.
	urls []string
	next int

	mu      sync.Mutex
	last    map[string]string
	got     map[string][]string
	resyncs int
	resumes int // subscribes sent with since
	dups    []string
	calm    bool // stop disconnecting at random
	// origin is the server's, sent back with since.
	origin string
	// log, when set, keeps every event and resync_required per project
	// (newRecorder).
	log   map[string][]received
	trace []string
}

func (c *chaosClient) run(ctx context.Context, tok string) {
	for ctx.Err() == nil {
		c.session(ctx, tok)
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(20+rand.IntN(80)) * time.Millisecond):
		}
	}
}

func (c *chaosClient) session(ctx context.Context, tok string) {
	url := c.url
	if len(c.urls) > 0 {
		url = c.urls[c.next%len(c.urls)]
	}
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	conn, _, err := websocket.Dial(dctx, url+"/ws?token="+tok, nil)
	cancel()
	if err != nil {
		c.next++ // this replica is down: try another
		return
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	c.mu.Lock()
	for _, p := range c.projects {
		c.trace = append(c.trace, "SESSION "+c.last[p]+" "+c.origin)
		msg := map[string]string{"action": "subscribe", "project_id": p}
		if pos := c.last[p]; pos != "" {
			msg["since"] = pos
			if c.origin != "" {
				msg["origin"] = c.origin
			}
			c.resumes++
		}
		b, _ := json.Marshal(msg)
		if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
			c.mu.Unlock()
			return
		}
	}
	c.mu.Unlock()
	life := time.Duration(200+rand.IntN(1200)) * time.Millisecond
	lctx, lcancel := context.WithTimeout(ctx, life)
	defer lcancel()
	for {
		_, b, err := conn.Read(lctx)
		if err != nil {
			c.mu.Lock()
			calm := c.calm
			c.mu.Unlock()
			if calm && ctx.Err() == nil && lctx.Err() != nil {
				// Calm phase: stay connected, read on.
				lctx, lcancel = context.WithTimeout(ctx, time.Hour)
				defer lcancel()
				continue
			}
			return
		}
		var f frame
		if err := json.Unmarshal(b, &f); err != nil {
			continue
		}
		c.take(f)
	}
}

func (c *chaosClient) take(f frame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, pos := f.str("project_id"), f.str("position")
	c.trace = append(c.trace, f.str("type")+"@"+pos+" "+f.str("origin"))
	switch f.str("type") {
	case "resync_required":
		c.resyncs++
		// Live from here on; after a new origin positions start over.
		c.last[p] = pos
		if o := f.str("origin"); o != "" {
			c.origin = o
		}
		if c.log != nil {
			c.log[p] = append(c.log[p], received{position: pos, origin: f.str("origin")})
		}
		return
	case "subscribed":
		// Everything up to it has been delivered (docs/protocol.md B.1).
		if pos > c.last[p] {
			c.last[p] = pos
		}
		if o := f.str("origin"); o != "" {
			c.origin = o
		}
		return
	case "subscription_revoked", "stream_down", "stream_up":
		return
	}
	if pos == "" {
		return
	}
	if pos <= c.last[p] {
		c.dups = append(c.dups, f.str("type")+"@"+pos)
		return
	}
	c.last[p] = pos
	if f.str("type") == "message_created" {
		c.got[p] = append(c.got[p], f.data()["id"].(string))
	}
	if c.log != nil {
		if k := eventKey(f); k != "" {
			c.log[p] = append(c.log[p], received{key: k, position: pos})
		}
	}
}

// TestChaos: a writer commits a few thousand messages across several
// projects while walcast is killed with SIGKILL and restarted twice and
// clients disconnect at random; every client ends with exactly the messages
// committed to its projects, in commit order, without duplicates, and no
// resync_required (every since stays inside the window).
func TestChaos(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	var projects []string
	for i := 0; i < 4; i++ {
		p := fmt.Sprintf("%08d-0000-4000-8000-000000000000", i+1)
		projects = append(projects, p)
		db.Exec(t, `INSERT INTO projects (id, name, owner_id) VALUES ($1, $2, $3)`, p, "chaos", alice)
		db.Exec(t, `INSERT INTO project_members (project_id, user_id) VALUES ($1, $2)`, p, alice)
		if i%2 == 0 {
			db.Exec(t, `INSERT INTO project_members (project_id, user_id) VALUES ($1, $2)`, p, bob)
		}
	}
	env := baseEnv(t, db)
	env["WALCAST_HISTORY_SIZE"] = "20000"
	env["WALCAST_LOG_LEVEL"] = "warn"
	p := startProcess(t, env)
	url := strings.Replace(p.base, "http", "ws", 1)

	var clients []*chaosClient
	for i := 0; i < 6; i++ {
		c := &chaosClient{user: alice, projects: projects, url: url, last: map[string]string{}, got: map[string][]string{}}
		if i%2 == 1 {
			c.user, c.projects = bob, []string{projects[0], projects[2]}
		}
		clients = append(clients, c)
	}
	stop := runClients(t, clients)
	defer stop()

	writer := startWriting(db.URL, projects, 3000, 3, 12*time.Second)

	for i := 0; i < 2; i++ {
		time.Sleep(time.Duration(1000+rand.IntN(1000)) * time.Millisecond)
		select {
		case w := <-writer:
			writer <- w
			t.Fatal("the writer finished before the kills: slow it down")
		default:
		}
		p.kill(syscall.SIGKILL)
		time.Sleep(time.Duration(rand.IntN(500)) * time.Millisecond)
		p = startProcess(t, env)
	}
	w := <-writer
	if w.err != nil {
		t.Fatalf("writer: %v", w.err)
	}
	total := 0
	for _, ids := range w.ids {
		total += len(ids)
	}
	t.Logf("committed %d messages across %d projects", total, len(w.ids))
	checkExact(t, db.URL, clients, w.ids)
	for i, c := range clients {
		c.mu.Lock()
		if c.resumes < 3 {
			t.Errorf("client %d resumed only %d times: the chaos did not happen", i, c.resumes)
		}
		c.mu.Unlock()
	}
}

// runClients starts every client on its own goroutine and waits until each
// has subscribed to all its projects once; stop ends them.
func runClients(t *testing.T, clients []*chaosClient) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, c := range clients {
		tok := token(t, c.user, time.Hour)
		wg.Add(1)
		go func() { defer wg.Done(); c.run(ctx, tok) }()
	}
	stop = func() { cancel(); wg.Wait() }
	waitFor(t, 10*time.Second, "clients subscribed", func() bool {
		for _, c := range clients {
			c.mu.Lock()
			n := len(c.last)
			c.mu.Unlock()
			if n < len(c.projects) {
				return false
			}
		}
		return true
	})
	return stop
}

// written is what a background writeMessages returned.
type written struct {
	ids map[string][]string
	err error
}

// startWriting runs writeMessages in the background; its result arrives on
// the channel, which has room for one so a peek can put it back.
func startWriting(dbURL string, projects []string, max, batch int, within time.Duration) chan written {
	writer := make(chan written, 1)
	go func() {
		ids, err := writeMessages(context.Background(), dbURL, projects, max, batch, within)
		writer <- written{ids, err}
	}()
	return writer
}

// writeMessages commits messages into random projects from one connection
// (so commit order per project is the order of its commits) until it has
// written max or the time is up, 1 to batch rows per transaction, and
// returns the ids per project in commit order.
func writeMessages(ctx context.Context, dbURL string, projects []string, max, batch int, within time.Duration) (map[string][]string, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	committed := map[string][]string{}
	deadline := time.Now().Add(within)
	for n := 0; n < max && time.Now().Before(deadline); {
		proj := projects[rand.IntN(len(projects))]
		k := 1 + rand.IntN(batch)
		rows, err := conn.Query(ctx, `INSERT INTO messages (project_id, sender_id, content)
			SELECT $1, $2, 'chaos ' || i FROM generate_series(1, $3) i RETURNING id::text`, proj, alice, k)
		if err != nil {
			return committed, err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return committed, err
		}
		committed[proj] = append(committed[proj], ids...)
		n += k
		time.Sleep(time.Duration(2+rand.IntN(4)) * time.Millisecond)
	}
	return committed, nil
}

// checkExact calms the clients, commits one last message to each project
// and waits until each client has it, then fails unless each got exactly
// the committed messages of its projects, in commit order, without
// duplicates or resyncs. (Each socket is ordered: a duplicate or a stray
// event would have come before that last message.)
func checkExact(t *testing.T, dbURL string, clients []*chaosClient, committed map[string][]string) {
	t.Helper()
	for _, c := range clients {
		c.mu.Lock()
		c.calm = true
		c.mu.Unlock()
	}
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	want := map[string][]string{}
	for _, c := range clients {
		for _, proj := range c.projects {
			if _, done := want[proj]; done {
				continue
			}
			var last string
			if err := conn.QueryRow(context.Background(), `INSERT INTO messages (project_id, sender_id, content)
				VALUES ($1, $2, 'last') RETURNING id::text`, proj, alice).Scan(&last); err != nil {
				t.Fatal(err)
			}
			want[proj] = append(append([]string(nil), committed[proj]...), last)
		}
	}
	waitFor(t, 30*time.Second, "every client has the last message of each project", func() bool {
		for _, c := range clients {
			c.mu.Lock()
			for _, proj := range c.projects {
				got, w := c.got[proj], want[proj]
				if len(got) == 0 || got[len(got)-1] != w[len(w)-1] {
					c.mu.Unlock()
					return false
				}
			}
			c.mu.Unlock()
		}
		return true
	})
	for i, c := range clients {
		c.mu.Lock()
		t.Logf("client %d (%s): %d resumed subscriptions", i, c.user[:8], c.resumes)
		if c.resyncs > 0 || len(c.dups) > 0 {
			t.Errorf("client %d: %d resyncs, duplicates %v", i, c.resyncs, c.dups)
		}
		for _, proj := range c.projects {
			if strings.Join(c.got[proj], ",") != strings.Join(want[proj], ",") {
				t.Errorf("client %d project %s: got %d messages, want %d in commit order", i, proj, len(c.got[proj]), len(want[proj]))
			}
		}
		c.mu.Unlock()
	}
}
