package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/events"
)

// sseEvent is one Server-Sent Events message.
type sseEvent struct {
	id string
	f  frame
}

// openSSE opens GET /sse; events arrive on the returned channel.
func openSSE(t *testing.T, base, tok, query, lastEventID string) (*http.Response, <-chan sseEvent) {
	t.Helper()
	return openSSEWith(t, base, tok, query, lastEventID, false)
}

// openSSEWith is openSSE; with idOnly, id-only messages arrive too (with
// no frame).
func openSSEWith(t *testing.T, base, tok, query, lastEventID string, idOnly bool) (*http.Response, <-chan sseEvent) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/sse?"+query, nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan sseEvent, 1000)
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		close(out)
		return resp, out
	}
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev sseEvent
		var data []string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if len(data) > 0 {
					_ = json.Unmarshal([]byte(strings.Join(data, "\n")), &ev.f)
					out <- ev
				} else if ev.id != "" && idOnly {
					out <- ev // an id-only message: the browser's Last-Event-ID moves
				}
				ev, data = sseEvent{}, nil
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "data: "):
				data = append(data, line[6:])
			}
		}
	}()
	return resp, out
}

func nextSSE(t *testing.T, events <-chan sseEvent, within time.Duration) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-events:
		if !ok {
			t.Fatal("the stream ended")
		}
		return ev
	case <-time.After(within):
		t.Fatalf("no event within %s", within)
		return sseEvent{}
	}
}

// TestServerSentEvents: the fallback transport. A member's stream gets
// subscribed and the project's events, each with its position as the SSE
// id; a stream resumed with Last-Event-ID gets exactly what followed; a
// bad token, a malformed Last-Event-ID, bad or too many projects, and too
// many streams of one user each get their error; a non-member's project
// is refused inside the stream, the others it asked for still stream.
func TestServerSentEvents(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	in := start(t, db, baseEnv(t, db))
	bobTok := token(t, bob, time.Hour)

	resp, events := openSSE(t, in.base, bobTok, "project_id="+project, "")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if ev := nextSSE(t, events, 5*time.Second); ev.f.str("type") != "subscribed" || ev.id != "" {
		t.Fatalf("first event %+v (the stream's first frames carry no id: see TestSSEIDsNeverGoBack)", ev)
	}
	for _, c := range []string{"one", "two", "three"} {
		db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, $3)`, project, alice, c)
	}
	var got []sseEvent
	for len(got) < 6 {
		ev := nextSSE(t, events, 5*time.Second)
		if ev.id == "" || ev.id != ev.f.str("position") {
			t.Fatalf("event without its position as id: %+v", ev)
		}
		got = append(got, ev)
	}
	if got[1].f.data()["content"] != "one" || got[5].f.data()["content"] != "three" {
		t.Fatalf("events %+v", got)
	}

	// Resumed from the first message: only what followed.
	_, resumed := openSSE(t, in.base, bobTok, "project_id="+project, got[1].id)
	var contents []string
	for len(contents) < 2 {
		ev := nextSSE(t, resumed, 5*time.Second)
		if ev.f.str("type") == "message_created" {
			contents = append(contents, ev.f.data()["content"].(string))
		}
	}
	if strings.Join(contents, ",") != "two,three" {
		t.Fatalf("resumed with %v", contents)
	}

	// A non-member's project refused in the stream; the other streams.
	_, mixed := openSSE(t, in.base, token(t, mallory, time.Hour), "project_id="+project+","+project2, "")
	sawForbidden, sawSubscribed := false, false
	for !(sawForbidden && sawSubscribed) {
		ev := nextSSE(t, mixed, 5*time.Second)
		switch {
		case ev.f.str("type") == "error" && ev.f.str("code") == "forbidden" && ev.f.str("project_id") == project:
			sawForbidden = true
		case ev.f.str("type") == "subscribed" && ev.f.str("project_id") == project2:
			sawSubscribed = true
		case ev.f.str("project_id") == project && ev.f.str("type") != "error":
			t.Fatalf("a non-member got %+v", ev)
		}
	}

	for name, c := range map[string]struct {
		tok, query, last string
		code             int
	}{
		"bad token":               {"nope", "project_id=" + project, "", 401},
		"no token":                {"", "project_id=" + project, "", 401},
		"malformed Last-Event-ID": {bobTok, "project_id=" + project, "yesterday", 400},
		"no project":              {bobTok, "", "", 400},
		"not a uuid":              {bobTok, "project_id=1", "", 400},
	} {
		if resp, _ := openSSE(t, in.base, c.tok, c.query, c.last); resp.StatusCode != c.code {
			t.Errorf("%s: %d, want %d", name, resp.StatusCode, c.code)
		}
	}
	var many []string
	for i := range 101 {
		many = append(many, fmt.Sprintf("%08d-0000-4000-8000-000000000000", i))
	}
	if resp, _ := openSSE(t, in.base, bobTok, "project_id="+strings.Join(many, ","), ""); resp.StatusCode != 400 {
		t.Errorf("101 projects in one stream: %d, want 400", resp.StatusCode)
	}
	// Too many streams of one user: 10 by default; two are open.
	refused := false
	for range 10 {
		if resp, _ := openSSE(t, in.base, bobTok, "project_id="+project, ""); resp.StatusCode == http.StatusTooManyRequests {
			refused = true
			break
		}
	}
	if !refused {
		t.Fatal("one user opened 12 streams")
	}
}

// TestSSEIDsNeverGoBack (found by an attack): a stream of two projects
// resumed from before both projects' events replays each project in turn,
// so their positions interleave; as SSE ids they went backwards, and a
// browser that reconnected after a higher one lost the other project's
// lower events. The frames that open a stream carry no id; one id-only
// message then says every project is delivered through it; later frames
// carry theirs, in order. Resuming from any id received loses nothing.
func TestSSEIDsNeverGoBack(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	db.Exec(t, `INSERT INTO project_members (project_id, user_id, role) VALUES ($1, $2, 'member')`, project2, bob)
	in := start(t, db, baseEnv(t, db))
	tok := token(t, bob, time.Hour)
	_, live := openSSE(t, in.base, tok, "project_id="+project+","+project2, "")
	nextSSE(t, live, 5*time.Second)
	nextSSE(t, live, 5*time.Second)
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'p2 first')`, project2, mallory)
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'p1 second')`, project, alice)
	var earliest string
	for seen := 0; seen < 2; {
		ev := nextSSE(t, live, 5*time.Second)
		if ev.f.str("type") == "cache_invalidate" && earliest == "" {
			earliest = ev.id
		}
		if ev.f.str("type") == "message_created" {
			seen++
		}
	}
	before, _ := events.ParsePosition(earliest)
	before.Index = 0
	before.LSN--

	// Resumed from before both: replays of both projects, then the
	// checkpoint, then a live event: ids only grow.
	_, resumed := openSSEWith(t, in.base, tok, "project_id="+project+","+project2, before.String(), true)
	var ids []string
	var contents []string
	for len(contents) < 3 {
		ev := nextSSE(t, resumed, 5*time.Second)
		if ev.id != "" {
			if len(ids) > 0 && ev.id <= ids[len(ids)-1] {
				t.Fatalf("id %s after %s", ev.id, ids[len(ids)-1])
			}
			ids = append(ids, ev.id)
		}
		if ev.f.str("type") == "message_created" {
			contents = append(contents, ev.f.data()["content"].(string))
		}
		if len(contents) == 2 && len(ids) > 0 {
			db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'p2 live')`, project2, mallory)
			contents = append(contents, "")
		}
	}
	for ev := nextSSE(t, resumed, 5*time.Second); ev.f.data()["content"] != "p2 live"; ev = nextSSE(t, resumed, 5*time.Second) {
	}
	// Every id received resumes with what followed it and nothing lost.
	_, again := openSSE(t, in.base, tok, "project_id="+project+","+project2, ids[0])
	for ev := nextSSE(t, again, 5*time.Second); ev.f.data()["content"] != "p2 live"; ev = nextSSE(t, again, 5*time.Second) {
		if c := ev.f.data()["content"]; c == "p2 first" || c == "p1 second" {
			t.Fatalf("resumed from the checkpoint %s, got %v again (%+v; ids %v)", ids[0], c, ev, ids)
		}
	}
}

// TestSSELimits (found by an attack): streams share one cap with the
// sockets; a stream of others' projects draws on the user's budget of
// refusals like subscribes do (each refusal was a database lookup, without
// bound); and an open stream does not hold up shutdown.
func TestSSELimits(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	env := baseEnv(t, db)
	env["WALCAST_MAX_CONNECTIONS"] = "3"
	in := start(t, db, env)
	sock := dial(t, in, alice)
	sock.send(map[string]string{"action": "ping"})
	sock.read(5 * time.Second)
	if resp, _ := openSSE(t, in.base, token(t, bob, time.Hour), "project_id="+project, ""); resp.StatusCode != 200 {
		t.Fatalf("first stream: %d", resp.StatusCode)
	}

	var foreign []string
	for i := range 60 {
		foreign = append(foreign, fmt.Sprintf("%08d-1111-4000-8000-000000000000", i))
	}
	resp, errs := openSSE(t, in.base, token(t, mallory, time.Hour), "project_id="+strings.Join(foreign, ","), "")
	if resp.StatusCode != 200 {
		t.Fatalf("mallory's stream: %d", resp.StatusCode)
	}
	forbidden, limited := 0, 0
	for forbidden+limited < 60 {
		ev := nextSSE(t, errs, 5*time.Second)
		switch ev.f.str("code") {
		case "forbidden":
			forbidden++
		case "rate_limited":
			limited++
		}
	}
	if forbidden > 21 || limited < 39 {
		t.Fatalf("60 others' projects: %d refused after a lookup, %d without (a burst of 20 lookups, then 1/s)", forbidden, limited)
	}
	if resp, _ := openSSE(t, in.base, token(t, bob, time.Hour), "project_id="+project, ""); resp.StatusCode != 503 {
		t.Fatalf("a socket and two streams under a cap of 3, then another stream: %d, want 503", resp.StatusCode)
	}

	stopped := time.Now()
	in.stop()
	if took := time.Since(stopped); took > 3*time.Second {
		t.Fatalf("shutdown with streams open took %s (http.shutdown_timeout is 10s)", took.Round(time.Millisecond))
	}
}
