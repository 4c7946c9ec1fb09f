package hub

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// fill queues control frames on c until its queue holds exactly QueueSize.
func fill(h *Hub, c *Client) {
	for c.Len() < int64(h.cfg.QueueSize) {
		h.Send(c, "pong", []byte(`{"type":"pong"}`))
	}
}

// TestSetPresenceOnAFullQueue (found by an attack; it panicked under the hub's lock): a socket whose queue is exactly
// full (a client that stops reading) sets its meta without watching yet:
// watch's presence_state overflows the queue, dropSlow detaches the only
// subscription, and SetPresence dereferences the deleted member.
func TestSetPresenceOnAFullQueue(t *testing.T) {
	h := newHub(t, Config{QueueSize: 8})
	alice := h.NewClient(uAlice)
	subscribe(t, h, alice, pA, nil)
	fill(h, alice)
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("SetPresence panicked (under the hub's lock, on the socket's own goroutine: the process dies): %v", r)
		}
	}()
	_ = h.SetPresence(alice, pA, json.RawMessage(`{"x":1}`))
}

// TestOverflowDuringADiffLeavesNoGhost (found by an attack): alice watches; her queue is full; she
// sets a meta: the join diff to herself overflows, she is dropped and
// leaves, but watchers visited after her get the join after the leave.
func TestOverflowDuringADiffLeavesNoGhost(t *testing.T) {
	ghosts := 0
	for trial := 0; trial < 50; trial++ {
		h := newHub(t, Config{QueueSize: 8})
		alice := h.NewClient(uAlice)
		subscribe(t, h, alice, pA, nil)
		if err := h.WatchPresence(alice, pA); err != nil {
			t.Fatal(err)
		}
		var watchers []*Client
		for i := 0; i < 8; i++ {
			w := h.NewClient(uCarol)
			subscribe(t, h, w, pA, nil)
			_ = h.WatchPresence(w, pA)
			ephemeralFrames(t, w)
			watchers = append(watchers, w)
		}
		ephemeralFrames(t, alice)
		fill(h, alice)
		_ = h.SetPresence(alice, pA, json.RawMessage(`{"x":1}`))
		if p := h.Present(pA); p[uAlice] != nil {
			t.Fatalf("alice still present in the hub: %v", p)
		}
		for _, w := range watchers {
			got := strings.Join(ephemeralFrames(t, w), " ")
			if strings.HasSuffix(got, "diff:+1-") {
				ghosts++
				t.Logf("trial %d: watcher sees %q: alice ends joined though she left", trial, got)
			}
		}
	}
	if ghosts > 0 {
		t.Fatalf("%d watchers were left with alice as a ghost", ghosts)
	}
}

// TestJoinKeepsANewerRemoteMeta (found by an attack): alice is present on replica R1
// with meta v1. She opens a socket here (R2) just as she sets v2 on R1:
// this replica copies v1 with Updated = now, later than v2's time, so when
// v2 arrives it loses: v1 is shown everywhere from then on, though v2 was
// set last.
func TestJoinKeepsANewerRemoteMeta(t *testing.T) {
	h := newHub(t, Config{QueueSize: 64})
	t0 := time.Now()
	h.RemotePresence("r1", pA, uAlice, &Presence{Meta: json.RawMessage(`{"v":1}`), OnlineAt: t0, Updated: t0})
	setAt := t0.Add(time.Millisecond) // alice sets v2 on R1 then; it reaches this replica later
	h.now = func() time.Time { return t0.Add(5 * time.Millisecond) }
	alice := h.NewClient(uAlice)
	subscribe(t, h, alice, pA, nil) // joins here before v2 arrived: copies v1
	h.RemotePresence("r1", pA, uAlice, &Presence{Meta: json.RawMessage(`{"v":2}`), OnlineAt: t0, Updated: setAt})
	if got := string(h.Present(pA)[uAlice]); got != `{"v":2}` {
		t.Fatalf("alice's meta is %s; she set {\"v\":2} last", got)
	}
}

// TestMetaDoesNotRevertWhenAReplicaLeaves (found by an attack): alice has a tab on R1 (meta
// v1) and opens one here (copies v1). She sets v2 on R1, then closes the
// R1 tab: this replica's copy, v1, comes back, though v2 was set last.
func TestMetaDoesNotRevertWhenAReplicaLeaves(t *testing.T) {
	h := newHub(t, Config{QueueSize: 64})
	t0 := time.Now().Add(-time.Minute)
	h.RemotePresence("r1", pA, uAlice, &Presence{Meta: json.RawMessage(`{"v":1}`), OnlineAt: t0, Updated: t0})
	now := time.Now()
	h.now = func() time.Time { return now }
	alice := h.NewClient(uAlice)
	subscribe(t, h, alice, pA, nil)
	h.RemotePresence("r1", pA, uAlice, &Presence{Meta: json.RawMessage(`{"v":2}`), OnlineAt: t0, Updated: now.Add(2 * time.Millisecond)})
	if got := string(h.Present(pA)[uAlice]); got != `{"v":2}` {
		t.Fatalf("after v2: %s", got)
	}
	h.RemotePresence("r1", pA, uAlice, nil) // the R1 tab closes
	if got := string(h.Present(pA)[uAlice]); got != `{"v":2}` {
		t.Fatalf("alice's meta went back to %s; she set {\"v\":2} last", got)
	}
}
