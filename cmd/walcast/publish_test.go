package main

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walcast/walcast/internal/events"
	"github.com/walcast/walcast/internal/pgtest"
	"github.com/walcast/walcast/publish"
)

// published is the body of a published event for project.
func published(typ, data string) string {
	return `{"project_id":"` + project + `","type":"` + typ + `","data":` + data + `}`
}

// TestPublishedFromSQL: an event written with pg_logical_emit_message
// inside the application's transaction arrives between that transaction's
// row events, at its own position; rolled back (whole or to a savepoint)
// it never arrives; written outside a transaction it arrives at a
// position of its own; one that breaks a rule is refused, counted and
// logged, and the stream goes on.
func TestPublishedFromSQL(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	in := start(t, db, baseEnv(t, db))
	c := dial(t, in, bob)
	c.subscribe(project)
	ctx := context.Background()

	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'before')`, project, alice); err != nil {
			return err
		}
		if err := publish.Send(ctx, tx, project, "sprint_started", map[string]any{"sprint": 3}); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'after')`, project, alice)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []frame
	for range 5 {
		got = append(got, c.read(10*time.Second))
	}
	var types []string
	for _, f := range got {
		types = append(types, f.str("type"))
	}
	if strings.Join(types, " ") != "cache_invalidate message_created sprint_started cache_invalidate message_created" {
		t.Fatalf("frames %v", types)
	}
	first, _ := events.ParsePosition(got[0].str("position"))
	for i, f := range got {
		if pos, _ := events.ParsePosition(f.str("position")); pos != (events.Position{LSN: first.LSN, Index: first.Index + uint32(i)}) {
			t.Fatalf("frame %d at %s: not in place in its transaction (first at %s)", i, pos, first)
		}
	}
	if ev := got[2]; ev.str("project_id") != project || ev.data()["sprint"] != 3.0 || ev.str("timestamp") == "" {
		t.Fatalf("published frame %v", ev)
	}

	// Rolled back, whole or to a savepoint: never delivered.
	db.Exec(t, `BEGIN; SELECT pg_logical_emit_message(true, 'walcast', '`+published("rolled_back", `{}`)+`'); ROLLBACK;`)
	db.Exec(t, `BEGIN;
		SELECT pg_logical_emit_message(true, 'walcast', '`+published("kept", `{}`)+`');
		SAVEPOINT s;
		SELECT pg_logical_emit_message(true, 'walcast', '`+published("undone", `{}`)+`');
		ROLLBACK TO SAVEPOINT s;
		COMMIT;`)
	if f := c.read(10 * time.Second); f.str("type") != "kept" {
		t.Fatalf("after the rollbacks: %v", f)
	}

	// Outside a transaction: delivered at a position of its own.
	db.Exec(t, `SELECT pg_logical_emit_message(false, 'walcast', '`+published("now", `{"n":1}`)+`')`)
	f := c.read(10 * time.Second)
	if pos, err := events.ParsePosition(f.str("position")); f.str("type") != "now" || err != nil || pos.Index != 0 {
		t.Fatalf("non-transactional: %v", f)
	}

	// Refused: reserved types, malformed bodies, another prefix. The
	// stream goes on: the next event is the good one.
	for _, body := range []string{
		published("resync_required", `{}`), published("message_created", `{}`), `not json`,
		`{"type":"x","data":{}}`, published("x", `[1]`),
	} {
		db.Exec(t, `SELECT pg_logical_emit_message(true, 'walcast', $1::text)`, body)
	}
	db.Exec(t, `SELECT pg_logical_emit_message(true, 'walcast', '\xff'::bytea)`)
	db.Exec(t, `SELECT pg_logical_emit_message(true, 'other_app', '`+published("not_ours", `{}`)+`')`)
	if err := publish.Send(ctx, db.Pool, project, "after_the_refusals", nil); err != nil {
		t.Fatal(err)
	}
	if f := c.read(10 * time.Second); f.str("type") != "after_the_refusals" {
		t.Fatalf("a refused event was delivered: %v", f)
	}
	metrics := scrape(t, in.base)
	for _, want := range []string{
		`walcast_published_refused_total{reason="reserved_type"} 2`,
		`walcast_published_refused_total{reason="malformed"} 2`,
		`walcast_published_refused_total{reason="project_id"} 1`,
		`walcast_published_refused_total{reason="data"} 1`,
		`walcast_published_events_total 4`,
		`walcast_events_sent_total{type="published"} 4`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if !strings.Contains(in.logs.String(), "published event refused") {
		t.Error("refusals were not logged")
	}
}

// TestPublishedEventsResumeAfterAKill: published events are replayed like
// row changes. A client resuming with since, after walcast was killed
// inside its hold-back window, gets every event published after its
// position exactly once: those published before the kill (replayed from
// the slot) and those published while walcast was down.
func TestPublishedEventsResumeAfterAKill(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	env := baseEnv(t, db)
	env["WALCAST_HOLD_BACK_AGE"] = "1h"
	env["WALCAST_LOG_LEVEL"] = "warn"
	p := startProcess(t, env)
	ctx := context.Background()
	send := func(typ string) {
		t.Helper()
		if err := publish.Send(ctx, db.Pool, project, typ, map[string]string{"t": typ}); err != nil {
			t.Fatal(err)
		}
	}
	c := dial(t, &instance{base: p.base}, bob)
	c.subscribe(project)
	send("one")
	f := c.read(10 * time.Second)
	if f.str("type") != "one" {
		t.Fatalf("got %v", f)
	}
	since := f.str("position")
	send("two")
	if f := c.read(10 * time.Second); f.str("type") != "two" {
		t.Fatalf("got %v", f)
	}
	p.kill(syscall.SIGKILL)
	send("three")
	db.Exec(t, `SELECT pg_logical_emit_message(false, 'walcast', '`+published("four", `{}`)+`')`)
	p = startProcess(t, env)

	r := dial(t, &instance{base: p.base}, bob)
	r.send(map[string]string{"action": "subscribe", "project_id": project, "since": since})
	send("five")
	var types []string
	for len(types) < 4 {
		f := r.read(10 * time.Second)
		switch f.str("type") {
		case "subscribed", "stream_up":
			continue
		case "resync_required":
			t.Fatalf("resync_required inside the window: %v", f)
		}
		types = append(types, f.str("type"))
	}
	if strings.Join(types, " ") != "two three four five" {
		t.Fatalf("resumed with %v, want two three four five", types)
	}
}

// TestHTTPPublish: POST /api/v1/projects/{id}/events with the service
// credential answers 202 with the event's position, and the members
// receive it there; user tokens, missing or wrong credentials, reserved
// types, malformed or oversized bodies each get their error, and none of
// them delivers anything.
func TestHTTPPublish(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	env := baseEnv(t, db)
	const serviceToken = "publish-token-0123456789abcdef0123456789"
	env["WALCAST_PUBLISH_TOKEN"] = serviceToken
	in := start(t, db, env)
	c := dial(t, in, bob)
	c.subscribe(project)
	url := in.base + "/api/v1/projects/" + project + "/events"

	code, body := doJSON(t, "POST", url, serviceToken, `{"type":"deploy_finished","data":{"version":"1.2.3"}}`, "application/json")
	if code != 202 || body["position"] == nil || body["type"] != "deploy_finished" || body["project_id"] != project {
		t.Fatalf("publish: %d %v", code, body)
	}
	f := c.read(10 * time.Second)
	if f.str("type") != "deploy_finished" || f.str("position") != body["position"] || f.data()["version"] != "1.2.3" {
		t.Fatalf("delivered %v for %v", f, body)
	}

	userToken := token(t, alice, time.Hour)
	for _, tc := range []struct {
		name, tok, body, ct, url string
		code                     int
		errCode                  string
	}{
		{"no credential", "", `{"type":"x"}`, "application/json", url, 401, "unauthorized"},
		{"wrong credential", "publish-token-0123456789abcdef0123456789-not", `{"type":"x"}`, "application/json", url, 401, "unauthorized"},
		{"a user token", userToken, `{"type":"x"}`, "application/json", url, 403, "forbidden"},
		{"walcast's frame", serviceToken, `{"type":"subscription_revoked"}`, "application/json", url, 422, "reserved_type"},
		{"a row event", serviceToken, `{"type":"task_updated","data":{}}`, "application/json", url, 422, "reserved_type"},
		{"a bad type", serviceToken, `{"type":"no spaces"}`, "application/json", url, 422, "invalid_type"},
		{"no type", serviceToken, `{"data":{}}`, "application/json", url, 422, "invalid_type"},
		{"data not an object", serviceToken, `{"type":"x","data":"s"}`, "application/json", url, 422, "invalid_data"},
		{"not JSON", serviceToken, `{"type":`, "application/json", url, 400, "bad_request"},
		{"null", serviceToken, `null`, "application/json", url, 400, "bad_request"},
		{"keys in capitals", serviceToken, `{"TYPE":"x","DATA":{}}`, "application/json", url, 400, "bad_request"},
		{"an unknown field", serviceToken, `{"type":"x","project_id":"` + project2 + `"}`, "application/json", url, 400, "bad_request"},
		{"trailing data", serviceToken, `{"type":"x"} {}`, "application/json", url, 400, "bad_request"},
		{"oversized", serviceToken, `{"type":"x","data":{"pad":"` + strings.Repeat("x", 70_000) + `"}}`, "application/json", url, 413, "too_large"},
		{"not JSON content", serviceToken, `{"type":"x"}`, "text/plain", url, 415, "unsupported_media_type"},
		{"a bad project", serviceToken, `{"type":"x"}`, "application/json", in.base + "/api/v1/projects/nope/events", 400, "bad_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := doJSON(t, "POST", tc.url, tc.tok, tc.body, tc.ct)
			if e, _ := body["error"].(map[string]any); code != tc.code || e["code"] != tc.errCode {
				t.Fatalf("%d %v, want %d %s", code, body, tc.code, tc.errCode)
			}
		})
	}
	// Nothing of the refused requests was delivered: the next frame is
	// the next good event.
	// A body of 40,000 '<' is under the 64 KiB bound however JSON would
	// escape it for HTML.
	if code, body := doJSON(t, "POST", url, serviceToken, `{"type":"html","data":{"s":"`+strings.Repeat("<", 40_000)+`"}}`, "application/json"); code != 202 {
		t.Fatalf("%d %v", code, body)
	}
	if f := c.read(10 * time.Second); f.str("type") != "html" || len(f.data()["s"].(string)) != 40_000 {
		t.Fatalf("after the refused requests: %.200v", f)
	}
	if code, body := doJSON(t, "POST", url, serviceToken, `{"type":"last","data":null}`, "application/json"); code != 202 {
		t.Fatalf("%d %v", code, body)
	}
	if f := c.read(10 * time.Second); f.str("type") != "last" || f.data() == nil || len(f.data()) != 0 {
		t.Fatalf("after the refused requests: %v", f)
	}
	if m := scrape(t, in.base); !strings.Contains(m, "walcast_http_published_total 3") {
		t.Error("walcast_http_published_total is not 3")
	}
}

// TestHTTPPublishIsOffWithoutAToken: no publish token, no route.
func TestHTTPPublishIsOffWithoutAToken(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	in := start(t, db, baseEnv(t, db))
	code, body := doJSON(t, "POST", in.base+"/api/v1/projects/"+project+"/events", testSecret, `{"type":"x"}`, "application/json")
	if e, _ := body["error"].(map[string]any); code != 404 || !strings.Contains(e["message"].(string), "publish.token") {
		t.Fatalf("%d %v", code, body)
	}
}

// TestClusterPublished: published events pass through the cluster stream.
// Published on the standby's HTTP route (the leader reads the WAL), the
// event reaches the standby's subscribers and the route answers with its
// position; one published from SQL reaches them too, in place.
func TestClusterPublished(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	db := newDB(t)
	base := clustered(baseEnv(t, db), ns, "PUBLISHED")
	const serviceToken = "publish-token-0123456789abcdef0123456789"
	base["WALCAST_PUBLISH_TOKEN"] = serviceToken
	a, b, c := leaderAndStandby(t, db, base)
	if !isLeader(a.base) || isLeader(b.base) {
		t.Fatal("A should lead and B stand by")
	}
	code, body := doJSON(t, "POST", b.base+"/api/v1/projects/"+project+"/events", serviceToken, `{"type":"deploy_finished"}`, "application/json")
	if code != 202 || body["position"] == nil {
		t.Fatalf("publish on the standby: %d %v", code, body)
	}
	f, _ := gapUntil(t, c, "deploy_finished", project, 10*time.Second)
	if f.str("position") != body["position"] {
		t.Fatalf("delivered at %s, answered %v", f.str("position"), body["position"])
	}
	if err := publish.Send(context.Background(), db.Pool, project, "from_sql", map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	if f := c.read(10 * time.Second); f.str("type") != "from_sql" || f.data()["n"] != 1.0 {
		t.Fatalf("got %v", f)
	}
}

// TestNonTransactionalMessagesKeepTheirOwnPositions: a message written
// outside any transaction right before a commit record (pgoutput gives it
// the LSN where that commit starts) takes no position of the transaction:
// both arrive, each event once, in strictly increasing positions. Found
// by an attack: the message took the transaction's first position and the
// hub dropped the transaction's first event.
func TestNonTransactionalMessagesKeepTheirOwnPositions(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	in := start(t, db, baseEnv(t, db))
	c := dial(t, in, bob)
	c.subscribe(project)
	ctx := context.Background()
	readTypes := func(n int) []string {
		t.Helper()
		var types []string
		prev := ""
		for range n {
			f := c.read(10 * time.Second)
			if p := f.str("position"); p <= prev {
				t.Fatalf("%v at or before %s", f, prev)
			} else {
				prev = p
			}
			types = append(types, f.str("type"))
		}
		return types
	}

	// In the transaction, right before its commit.
	db.Exec(t, `BEGIN;
		INSERT INTO messages (project_id, sender_id, content) VALUES ('`+project+`', '`+alice+`', 'in');
		SELECT pg_logical_emit_message(false, 'walcast', '`+published("outside", `{}`)+`');
		COMMIT;`)
	if got := strings.Join(readTypes(3), " "); got != "outside cache_invalidate message_created" {
		t.Fatalf("frames %s", got)
	}

	// Another session's, right before a commit that publishes.
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := publish.Send(ctx, tx, project, "inside", nil); err != nil {
		t.Fatal(err)
	}
	db.Exec(t, `SELECT pg_logical_emit_message(false, 'walcast', '`+published("autocommit", `{}`)+`')`)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(readTypes(2), " "); got != "autocommit inside" {
		t.Fatalf("frames %s", got)
	}
	// And a forged gap marker from SQL changes nothing.
	db.Exec(t, `SELECT pg_logical_emit_message(true, 'walcast.gap', '{"publication":"`+pgtest.Publication+`","reason":"forged"}')`)
	if err := publish.Send(ctx, db.Pool, project, "after_the_forgery", nil); err != nil {
		t.Fatal(err)
	}
	if f := c.read(10 * time.Second); f.str("type") != "after_the_forgery" {
		t.Fatalf("after a forged gap marker: %v", f)
	}
}
