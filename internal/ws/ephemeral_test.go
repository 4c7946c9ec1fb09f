package ws

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/walcast/walcast/internal/eventually"
	"github.com/walcast/walcast/internal/hub"
)

const userC = "33333333-3333-4333-8333-333333333333"

// TestBroadcastAndPresenceOverSockets: the socket side of broadcast and
// presence, with no database. Members only, live subscriptions only, the
// sender excluded unless it asks, payload and rate bounds, presence state
// and diffs, leaving on disconnect.
func TestBroadcastAndPresenceOverSockets(t *testing.T) {
	members := memberSet{projectA + "/" + userA: true, projectA + "/" + userB: true}
	_, url, _ := protocolServer(t, Config{EphemeralRate: 1, EphemeralBurst: 5, MaxEphemeralBytes: 64}, hub.Config{}, members)
	a, b, c := dialJSON(t, url, issue(t, userA, time.Hour)), dialJSON(t, url, issue(t, userB, time.Hour)), dialJSON(t, url, issue(t, userC, time.Hour))
	expect := func(cl *jsonClient, want ...string) map[string]any {
		t.Helper()
		f := cl.must(5 * time.Second)
		for i := 0; i+1 < len(want); i += 2 {
			if got, _ := f[want[i]].(string); got != want[i+1] {
				t.Fatalf("%s = %q in %v, want %q", want[i], got, f, want[i+1])
			}
		}
		return f
	}

	// Not subscribed (yet, or ever): forbidden.
	a.send(`{"action":"broadcast","project_id":"` + projectA + `","event":"typing"}`)
	expect(a, "type", "error", "code", "forbidden")
	c.send(`{"action":"subscribe","project_id":"` + projectA + `"}`)
	expect(c, "type", "error", "code", "forbidden")
	c.send(`{"action":"presence","project_id":"` + projectA + `"}`)
	expect(c, "type", "error", "code", "forbidden")

	a.send(`{"action":"subscribe","project_id":"` + projectA + `","presence":true}`)
	expect(a, "type", "subscribed")
	if f := expect(a, "type", "presence_state"); len(f["users"].(map[string]any)) != 1 {
		t.Fatalf("state %v", f)
	}
	b.send(`{"action":"subscribe","project_id":"` + projectA + `"}`)
	expect(b, "type", "subscribed")
	if f := expect(a, "type", "presence_diff"); f["joins"].(map[string]any)[userB] == nil {
		t.Fatalf("bob's join: %v", f)
	}

	// The sender is excluded unless it asks.
	b.send(`{"action":"broadcast","project_id":"` + projectA + `","event":"typing","payload":{"on":true}}`)
	if f := expect(a, "type", "broadcast", "event", "typing", "from", userB, "project_id", projectA); f["payload"].(map[string]any)["on"] != true || f["position"] != nil {
		t.Fatalf("broadcast %v", f)
	}
	b.send(`{"action":"broadcast","project_id":"` + projectA + `","event":"cursor","self":true}`)
	expect(b, "type", "broadcast", "event", "cursor") // to itself first: nothing else was queued for b
	expect(a, "type", "broadcast", "event", "cursor")

	// Bad frames: each answered, nothing broadcast.
	for _, bad := range []struct{ frame, code string }{
		{`{"action":"broadcast","project_id":"` + projectA + `","event":"no spaces"}`, "bad_request"},
		{`{"action":"broadcast","project_id":"` + projectA + `"}`, "bad_request"},
		{`{"action":"broadcast","project_id":"` + projectA + `","event":"x","payload":[1]}`, "bad_request"},
		{`{"action":"broadcast","project_id":"` + projectA + `","event":"x","payload":{"pad":"` + strings.Repeat("x", 64) + `"}}`, "bad_request"},
		{`{"action":"presence","project_id":"` + projectA + `","meta":"x"}`, "bad_request"},
		{`{"action":"subscribe","project_id":"` + projectB + `","meta":{}}`, "bad_request"},
	} {
		b.send(bad.frame)
		expect(b, "type", "error", "code", bad.code)
	}

	// Presence meta: b asks for presence and says what it views.
	b.send(`{"action":"presence","project_id":"` + projectA + `","meta":{"viewing":"t1"}}`)
	if f := expect(b, "type", "presence_state"); len(f["users"].(map[string]any)) != 2 {
		t.Fatalf("state %v", f)
	}
	expect(b, "type", "presence_diff")
	if f := expect(a, "type", "presence_diff"); f["joins"].(map[string]any)[userB].(map[string]any)["meta"].(map[string]any)["viewing"] != "t1" {
		t.Fatalf("meta diff %v", f)
	}

	// The budget: 5 ephemeral frames in a burst (3 are spent), then
	// rate_limited. A broadcast sends its sender nothing: the first frame
	// b gets is the refusal.
	for range 5 {
		b.send(`{"action":"broadcast","project_id":"` + projectA + `","event":"typing"}`)
	}
	expect(b, "type", "error", "code", "rate_limited")

	// b goes away: a is told it left, after the broadcasts that got through.
	_ = b.conn.CloseNow()
	for {
		f := a.must(5 * time.Second)
		if f["type"] == "broadcast" {
			continue
		}
		if f["type"] != "presence_diff" || f["leaves"].(map[string]any)[userB] == nil {
			t.Fatalf("after b left: %v", f)
		}
		break
	}
}

// TestEphemeralBudgetIsPerUserToo: more sockets of one user buy no more
// broadcasts: the user's budget is shared by its sockets.
func TestEphemeralBudgetIsPerUserToo(t *testing.T) {
	members := memberSet{projectA + "/" + userA: true}
	_, url, _ := protocolServer(t, Config{EphemeralRate: 0.001, EphemeralBurst: 4}, hub.Config{}, members)
	var socks []*jsonClient
	for range 4 {
		c := dialJSON(t, url, issue(t, userA, time.Hour))
		c.send(`{"action":"subscribe","project_id":"` + projectA + `"}`)
		if f := c.must(5 * time.Second); f["type"] != "subscribed" {
			t.Fatalf("%v", f)
		}
		socks = append(socks, c)
	}
	// Two each: 8 in all for a user budget of 4 (each socket's own is 4).
	for _, c := range socks {
		for range 2 {
			c.send(`{"action":"broadcast","project_id":"` + projectA + `","event":"typing"}`)
		}
	}
	// Every frame sent: 4 broadcasts, each to the 3 other sockets, and 4
	// refusals.
	limited, relayed := 0, 0
	for relayed+limited < 4*3+4 {
		got := false
		for _, c := range socks {
			select {
			case f := <-c.frames:
				got = true
				switch {
				case f["type"] == "broadcast":
					relayed++
				case f["code"] == "rate_limited":
					limited++
				}
			default:
			}
		}
		if !got && !eventually.Poll(5*time.Second, func() bool {
			for _, c := range socks {
				if len(c.frames) > 0 {
					return true
				}
			}
			return false
		}) {
			t.Fatalf("%d relayed, %d refused, then nothing", relayed, limited)
		}
	}
	if limited != 4 || relayed != 12 {
		t.Fatalf("8 broadcasts of one user over 4 sockets, a user budget of 4: %d relayed, %d refused", relayed, limited)
	}
}

// TestDisconnectAUser: the operator cuts a user off: every socket of the
// user closes with 4003, other users' stay open, and with a ban the
// user's new sockets are refused (403) until it ends.
func TestDisconnectAUser(t *testing.T) {
	members := memberSet{projectA + "/" + userA: true, projectA + "/" + userB: true}
	s, url, _ := protocolServer(t, Config{}, hub.Config{}, members)
	clk := &fakeClock{now: time.Now()}
	s.clock = clk
	a1, a2 := dialJSON(t, url, issue(t, userA, 3*time.Hour)), dialJSON(t, url, issue(t, userA, 3*time.Hour))
	b := dialJSON(t, url, issue(t, userB, 3*time.Hour))
	for _, c := range []*jsonClient{a1, a2, b} {
		c.send(`{"action":"ping"}`)
		c.must(5 * time.Second)
	}
	if n := s.Disconnect(userA, time.Hour); n != 2 {
		t.Fatalf("Disconnect closed %d sockets, want 2", n)
	}
	for _, c := range []*jsonClient{a1, a2} {
		if _, err := c.read(5 * time.Second); websocket.CloseStatus(err) != CloseDisconnected {
			t.Fatalf("closed with %v", err)
		}
	}
	b.send(`{"action":"ping"}`)
	if f := b.must(5 * time.Second); f["type"] != "pong" {
		t.Fatalf("another user's socket: %v", f)
	}
	_, resp, err := websocket.Dial(context.Background(), strings.Replace(url, "http", "ws", 1)+"/?token="+issue(t, userA, 3*time.Hour), nil)
	if err == nil || resp == nil || resp.StatusCode != 403 {
		t.Fatalf("a banned user's new socket: %v %v", resp, err)
	}
	clk.advance(2 * time.Hour)
	c := dialJSON(t, url, issue(t, userA, 3*time.Hour))
	c.send(`{"action":"ping"}`)
	if f := c.must(5 * time.Second); f["type"] != "pong" {
		t.Fatalf("after the ban: %v", f)
	}
}
