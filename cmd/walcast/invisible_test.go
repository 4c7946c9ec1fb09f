package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"

	"github.com/walcast/walcast/internal/eventually"
)

// TestDemoShowsAChangeStreamedBeforeItIsVisible: PostgreSQL streams a
// commit before other sessions can read it. With the commit held by a
// synchronous standby that never answers, the demo page gets
// message_created and its reload does not find the message. Once the
// commit is visible the page must show it: it reloads until the list
// reflects the event (it used to show the old list until the next event;
// CI saw this without a standby).
func TestDemoShowsAChangeStreamedBeforeItIsVisible(t *testing.T) {
	t.Parallel()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("the browser test needs Debian's chromium (apt-get install chromium; .ci/run installs it)")
	}
	cluster := newClusterDB(t)
	env := clusterEnv(t, cluster)
	env["WALCAST_DEMO"] = "1"
	in := start(t, nil, env)
	standby := newSilentStandby(t, cluster)

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
	// The page's own counts: message_created events it got, and message
	// lists it loaded (the demo fetches through window.fetch at each call).
	if _, err := chromedp.Run(b, chromedp.Evaluate[any](`
		window.created = 0, window.loaded = 0,
		walcastDemo.client.on("event", (e) => { if (e.type === "message_created") window.created++ }),
		window.fetch = ((f) => async (...a) => { const r = await f(...a); if (String(a[0]).includes("/messages")) window.loaded++; return r })(window.fetch),
		true`)); err != nil {
		t.Fatal(err)
	}
	count := func(name string) int {
		n, err := chromedp.Run(b, chromedp.Evaluate[int](`window.`+name))
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
	standby.exec(`INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'visible')`, project, alice)
	if !eventually.Poll(5*time.Second, func() bool { return strings.Join(texts(), "|") == "visible" }) {
		t.Fatalf("bob's page shows %q, want [visible]", texts())
	}

	standby.hold()
	held, err := pgx.Connect(context.Background(), cluster.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := held.Exec(context.Background(), `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'held')`, project, alice)
		done <- err
	}()
	loadedBefore := count("loaded")
	// walcast streams it; the page reloads, and its list cannot show it.
	if !eventually.Poll(5*time.Second, func() bool { return count("created") == 2 && count("loaded") > loadedBefore }) {
		t.Fatalf("the page got %d message_created and loaded %d lists: the held commit was not streamed", count("created"), count("loaded")-loadedBefore)
	}
	if !standby.waiting(held.PgConn().PID()) || len(done) > 0 {
		t.Fatal("the insert is not held by the standby: the window this test needs is not open")
	}
	if got := strings.Join(texts(), "|"); got != "visible" {
		t.Fatalf("bob's page shows %q while the commit is invisible", got)
	}
	standby.release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !eventually.Poll(5*time.Second, func() bool { return strings.Join(texts(), "|") == "visible|held" }) {
		t.Fatalf("bob's page shows %q once the commit is visible, want [visible held]", texts())
	}
}
