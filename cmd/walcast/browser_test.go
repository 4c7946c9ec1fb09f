package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/walcast/walcast/internal/eventually"
)

// TestDemoInRealBrowsers is the bug walcast ends, in headless Chromium: two
// members on the demo page; A sends a message and B's page shows it without
// reload within a second; a non-member's page never shows it; B's socket
// drops while A sends three more, and B ends with all of them in order.
// Both list who is online; B typing shows on A; B's page closed leaves
// A's list. Screenshots go to artifacts/.
func TestDemoInRealBrowsers(t *testing.T) {
	t.Parallel()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("the browser test needs Debian's chromium (apt-get install chromium; .ci/run installs it)")
	}
	db := newDB(t)
	db.Exec(t, `INSERT INTO tasks (project_id, title, status, story_points) VALUES ($1, 'Ship walcast', 'todo', 5)`, project)
	env := baseEnv(t, db)
	env["WALCAST_DATABASE_URL"] = db.URL // demo routes move tasks: more than the walcast role may do
	env["WALCAST_DEMO"] = "1"
	in := start(t, db, env)

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1200, 800),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	closeTab := map[string]context.CancelFunc{}
	var failedMu sync.Mutex
	var failed []string // responses the pages got with an error status
	responses := 0
	page := func(user string, init ...string) context.Context {
		ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext(), chromedp.WithListener(func(ev any) {
			if e, ok := ev.(*network.EventResponseReceived); ok {
				failedMu.Lock()
				responses++
				if e.Response.Status >= 400 && !strings.Contains(e.Response.URL, "/api/") {
					failed = append(failed, fmt.Sprintf("%s %d", e.Response.URL, int(e.Response.Status)))
				}
				failedMu.Unlock()
			}
		}))
		t.Cleanup(cancel)
		if len(init) == 0 {
			closeTab[user] = cancel
		} else {
			closeTab[user+" (scripted)"] = cancel
		}

		// The page lives for the whole test (every wait has its own
		// bound): 60 s was a whole test run on a loaded machine, and a
		// page past it failed its next wait (CI: "bob's board").
		ctx, cancelT := context.WithTimeout(ctx, 5*time.Minute)
		t.Cleanup(cancelT)
		if err := chromedp.Do(ctx,
			chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
				for _, src := range init {
					if _, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: src}); err != nil {
						return err
					}
				}
				return nil
			}),
			chromedp.Navigate(in.base+"/demo/?user="+user),
			chromedp.WaitVisible(chromedp.CSS(`#status.open`)),
		); err != nil {
			t.Fatalf("open the demo as %s: %v", user, err)
		}
		return ctx
	}
	a, b, m := page(alice), page(bob), page(mallory)

	texts := func(ctx context.Context) []string {
		out, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#messages li .text")].map(e => e.textContent)`))
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	send := func(text string) {
		t.Helper()
		if err := chromedp.Do(a,
			chromedp.SetValue(chromedp.CSS(`#message-input`), text),
			chromedp.Click(chromedp.CSS(`#send`)),
		); err != nil {
			t.Fatal(err)
		}
	}
	waitText := func(ctx context.Context, want []string, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		var got []string
		if !eventually.Poll(within, func() bool { got = texts(ctx); return strings.Join(got, "\n") == strings.Join(want, "\n") }) {
			t.Fatalf("page shows %q, want %q", got, want)
		}
		return time.Since(start)
	}

	send("hello from alice's browser")
	took := waitText(b, []string{"hello from alice's browser"}, time.Second)
	t.Logf("bob's page showed alice's message %s after she clicked send", took.Round(time.Millisecond))
	waitText(a, []string{"hello from alice's browser"}, time.Second)

	// Bob's connection drops (his Send button is disabled meanwhile);
	// alice sends three more; bob comes back.
	if _, err := chromedp.Run(b, chromedp.Evaluate[any](`walcastDemo.client.pause(), true`)); err != nil {
		t.Fatal(err)
	}
	if disabled, err := chromedp.Run(b, chromedp.Evaluate[bool](`document.querySelector("#send").disabled`)); err != nil || !disabled {
		t.Fatalf("bob's Send button while his socket is down: disabled=%v (%v)", disabled, err)
	}
	for _, s := range []string{"one", "two", "three"} {
		send(s)
	}
	waitText(a, []string{"hello from alice's browser", "one", "two", "three"}, 3*time.Second)
	if _, err := chromedp.Run(b, chromedp.Evaluate[any](`walcastDemo.client.resume(), true`)); err != nil {
		t.Fatal(err)
	}
	waitText(b, []string{"hello from alice's browser", "one", "two", "three"}, 5*time.Second)

	// Bob's tab goes to the background and his socket drops; with a
	// backoff of a minute, only the tab being shown again brings him back
	// at once, with what alice sent meanwhile.
	if _, err := chromedp.Run(b, chromedp.Evaluate[any](`walcastDemo.client.opts.minBackoffMs = 60000, walcastDemo.client.ws.close(), true`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "bob's socket down", func() bool {
		s, err := chromedp.Run(b, chromedp.Evaluate[string](`walcastDemo.client.state`))
		return err == nil && s == "closed"
	})
	send("while hidden")
	if _, err := chromedp.Run(b, chromedp.Evaluate[any](`document.dispatchEvent(new Event("visibilitychange")), true`)); err != nil {
		t.Fatal(err)
	}
	waitText(b, []string{"hello from alice's browser", "one", "two", "three", "while hidden"}, 5*time.Second)
	if _, err := chromedp.Run(b, chromedp.Evaluate[any](`walcastDemo.client.opts.minBackoffMs = 250, true`)); err != nil {
		t.Fatal(err)
	}
	waitText(a, []string{"hello from alice's browser", "one", "two", "three", "while hidden"}, 3*time.Second)

	// A network that blocks WebSockets: bob's second page, with none,
	// falls back to Server-Sent Events and still shows alice's messages.
	noWS := page(bob, `Object.defineProperty(window, "WebSocket", {value: undefined})`)
	if transport, err := chromedp.Run(noWS, chromedp.Evaluate[string](`walcastDemo.client.transport`)); err != nil || transport != "sse" {
		t.Fatalf("transport without WebSockets: %q (%v)", transport, err)
	}
	send("over sse")
	waitText(noWS, []string{"hello from alice's browser", "one", "two", "three", "while hidden", "over sse"}, 5*time.Second)
	waitText(b, []string{"hello from alice's browser", "one", "two", "three", "while hidden", "over sse"}, 3*time.Second)
	waitText(a, []string{"hello from alice's browser", "one", "two", "three", "while hidden", "over sse"}, 3*time.Second)
	closeTab[bob+" (scripted)"]() // bob stays online through his other tab

	// Moving a task on alice's board moves it on bob's.
	if err := chromedp.Do(a, chromedp.Click(chromedp.CSS(`.column[data-status="todo"] .task button[data-move="right"]`))); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(b, chromedp.WaitVisible(chromedp.CSS(`.column[data-status="in_progress"] .task`))); err != nil {
		t.Fatalf("bob's board: %v", err)
	}

	// Mallory is no member: her page shows none of it.
	if got := texts(m); len(got) != 0 {
		t.Fatalf("mallory's page shows %q", got)
	}
	banner, err := chromedp.Run(m, chromedp.Text(chromedp.CSS(`#banner`)))
	if err != nil || !strings.Contains(banner, "not a member") {
		t.Fatalf("mallory's banner %q (%v)", banner, err)
	}

	// Who is online (presence) and who is typing (broadcast).
	textOf := func(ctx context.Context, sel string) string {
		out, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("`+sel+`").textContent`))
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	waitFor(t, 5*time.Second, "alice's page lists alice and bob online, not mallory", func() bool {
		s := textOf(a, "#online")
		return strings.Contains(s, "Alice") && strings.Contains(s, "Bob") && !strings.Contains(s, "Mallory")
	})
	if err := chromedp.Do(b, chromedp.SendKeys(chromedp.CSS(`#message-input`), "typing a reply")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "alice's page shows bob typing", func() bool { return textOf(a, "#typing") == "Bob is typing…" })
	if s := textOf(b, "#typing"); s != "" {
		t.Fatalf("bob's own page shows %q", s)
	}

	dir := filepath.Join("..", "..", "artifacts")
	_ = os.MkdirAll(dir, 0o755)
	for name, ctx := range map[string]context.Context{"alice": a, "bob": b, "mallory": m} {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, fmt.Sprintf("demo-%s.png", name))
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", path)
	}

	failedMu.Lock()
	if responses == 0 {
		t.Error("no response seen: the check of failed requests sees nothing")
	}
	if len(failed) > 0 {
		t.Errorf("the pages' requests that failed (404s and the like, shown in the browser's console): %v", failed)
	}
	failedMu.Unlock()

	// Bob closes his page (the tab): he leaves alice's list.
	closeTab[bob]()
	waitFor(t, 5*time.Second, "bob leaves alice's online list", func() bool {
		s := textOf(a, "#online")
		return strings.Contains(s, "Alice") && !strings.Contains(s, "Bob")
	})
}
