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
)

// sseEvent is one Server-Sent Events message.
type sseEvent struct {
	id string
	f  frame
}

// openSSE opens GET /sse; events arrive on the returned channel.
func openSSE(t *testing.T, base, tok, query, lastEventID string) (*http.Response, <-chan sseEvent) {
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
	if ev := nextSSE(t, events, 5*time.Second); ev.f.str("type") != "subscribed" || ev.id != ev.f.str("position") {
		t.Fatalf("first event %+v", ev)
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
