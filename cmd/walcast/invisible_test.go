package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/walcast/walcast/internal/eventually"
)

// TestDemoShowsAChangeStreamedBeforeItIsVisible: PostgreSQL streams a
// commit before other sessions can read it; with a synchronous standby
// that never answers, the committing session waits there, its row
// invisible. The demo page gets message_created for it, and its reload
// does not find the message. Once the commit is visible the page must
// show it: it reloads until the list reflects the event (it used to show
// the old list until the next event; CI saw this without a standby).
func TestDemoShowsAChangeStreamedBeforeItIsVisible(t *testing.T) {
	t.Parallel()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("the browser test needs Debian's chromium (apt-get install chromium; .ci/run installs it)")
	}
	cluster := newClusterDB(t)
	ctx := context.Background()
	in := start(t, nil, map[string]string{
		"WALCAST_DATABASE_URL": cluster.URL,
		"WALCAST_JWT_SECRET":   testSecret,
		"WALCAST_HTTP_ADDR":    freeAddr(t),
		"WALCAST_CONFIG":       "../../config/walcast.yaml",
		"WALCAST_DEMO":         "1",
		"WALCAST_LOG_LEVEL":    "debug",
	})

	// Every session but the held insert's commits locally.
	lcfg, err := pgxpool.ParseConfig(cluster.URL)
	if err != nil {
		t.Fatal(err)
	}
	lcfg.ConnConfig.RuntimeParams["synchronous_commit"] = "local"
	local, err := pgxpool.NewWithConfig(ctx, lcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(local.Close)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := local.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.UserDataDir(t.TempDir()),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	b, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	b, cancelT := context.WithTimeout(b, 2*time.Minute)
	defer cancelT()
	if err := chromedp.Do(b, chromedp.Navigate(in.base+"/demo/?user="+bob), chromedp.WaitVisible(chromedp.CSS(`#status.open`))); err != nil {
		t.Fatalf("open the demo as bob: %v", err)
	}
	if _, err := chromedp.Run(b, chromedp.Evaluate[any](`window.created = 0, walcastDemo.client.on("event", (e) => { if (e.type === "message_created") window.created++ }), true`)); err != nil {
		t.Fatal(err)
	}
	created := func() int {
		n, err := chromedp.Run(b, chromedp.Evaluate[int](`window.created`))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	texts := func() []string {
		out, err := chromedp.Run(b, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#messages li .text")].map(e => e.textContent)`))
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	// The page is live, its first loads done: a visible message shows.
	exec(`INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'visible')`, project, alice)
	if !eventually.Poll(5*time.Second, func() bool { return strings.Join(texts(), "|") == "visible" }) {
		t.Fatalf("bob's page shows %q, want [visible]", texts())
	}

	exec(`ALTER SYSTEM SET synchronous_standby_names = 'never_answers'`)
	exec(`SELECT pg_reload_conf()`)
	released := false
	release := func() {
		if released {
			return
		}
		released = true
		exec(`ALTER SYSTEM RESET synchronous_standby_names`)
		exec(`SELECT pg_reload_conf()`)
	}
	t.Cleanup(release)

	held, err := pgx.Connect(ctx, cluster.URL)
	if err != nil {
		t.Fatal(err)
	}
	pid := held.PgConn().PID()
	done := make(chan error, 1)
	// A reload takes effect asynchronously: the insert is tried until it
	// waits for the standby (an attempt that committed at once is seen
	// by the page and counted).
	attempts := 0
	insert := func() {
		attempts++
		go func() {
			_, err := held.Exec(context.Background(), `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'held')`, project, alice)
			done <- err
		}()
	}
	waiting := func() bool {
		var ev string
		if err := local.QueryRow(ctx, `SELECT coalesce(wait_event, '') FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&ev); err != nil {
			t.Fatal(err)
		}
		return ev == "SyncRep"
	}
	insert()
	if !eventually.Poll(10*time.Second, func() bool {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			insert() // committed before the wait was in force: again
			return false
		default:
		}
		return waiting()
	}) {
		t.Fatal("the insert never waited for the synchronous standby")
	}
	want := strings.Repeat("|held", attempts)
	// walcast streams it, the page reloads and cannot see it (its row is
	// invisible to every other session while the insert waits).
	var n int
	if err := local.QueryRow(ctx, `SELECT count(*) FROM messages WHERE content = 'held'`).Scan(&n); err != nil || n != attempts-1 {
		t.Fatalf("%d held rows visible (%v): the window this test needs did not open", n, err)
	}
	if !eventually.Poll(5*time.Second, func() bool { return created() >= 1+attempts }) {
		t.Fatalf("the page got %d message_created, want %d: the held commit was not streamed", created(), 1+attempts)
	}
	time.Sleep(300 * time.Millisecond) // pacing: the page's first reloads miss it
	if got := strings.Join(texts(), "|"); got != "visible"+strings.Repeat("|held", attempts-1) {
		t.Fatalf("bob's page shows %q while the commit is invisible", got)
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !eventually.Poll(5*time.Second, func() bool { return strings.Join(texts(), "|") == "visible"+want }) {
		t.Fatalf("bob's page shows %q once the commit is visible, want %q", texts(), "visible"+want)
	}
}
