package hub

import (
	"encoding/json"
	"errors"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/events"
)

const (
	uAlice = "11111111-1111-4111-8111-111111111111"
	uCarol = "33333333-3333-4333-8333-333333333333"
)

// ephemeralFrames drains c's queue and describes its presence and
// broadcast frames: "state:<users>", "diff:+<joins>-<leaves>",
// "broadcast:<event>:<from>" (user ids by their first letter).
func ephemeralFrames(t *testing.T, c *Client) []string {
	t.Helper()
	var out []string
	for _, it := range c.Take(nil) {
		c.Written(it)
		if it.Frame == nil {
			continue
		}
		var f struct {
			Type          string
			Users         map[string]json.RawMessage
			Joins, Leaves map[string]json.RawMessage
			Event, From   string
		}
		if err := json.Unmarshal(it.Frame.Data, &f); err != nil {
			continue
		}
		ids := func(m map[string]json.RawMessage) string {
			var s []string
			for id := range m {
				s = append(s, id[:1])
			}
			sort.Strings(s)
			return strings.Join(s, "")
		}
		switch f.Type {
		case TypePresenceState:
			out = append(out, "state:"+ids(f.Users))
		case TypePresenceDiff:
			out = append(out, "diff:+"+ids(f.Joins)+"-"+ids(f.Leaves))
		case TypeBroadcast:
			out = append(out, "broadcast:"+f.Event+":"+f.From[:1])
		}
	}
	return out
}

// TestPresence: a user is present while one of its subscriptions is live;
// several sockets count once; leaving by unsubscribe, disconnect or
// revocation tells the watchers; only subscriptions that watch presence
// receive its frames.
func TestPresence(t *testing.T) {
	h := newHub(t, Config{QueueSize: 64})
	alice := h.NewClient(uAlice)
	subscribe(t, h, alice, pA, nil)
	if err := h.WatchPresence(alice, pA); err != nil {
		t.Fatal(err)
	}
	bob1, bob2, carol := h.NewClient(uBob), h.NewClient(uBob), h.NewClient(uCarol)
	subscribe(t, h, bob1, pA, nil)
	subscribe(t, h, bob2, pA, nil) // bob is present already: no diff
	subscribe(t, h, carol, pA, nil)
	if err := h.WatchPresence(carol, pA); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(ephemeralFrames(t, alice), " "); got != "state:1 diff:+2- diff:+3-" {
		t.Fatalf("alice got %s", got)
	}
	if got := strings.Join(ephemeralFrames(t, carol), " "); got != "state:123" {
		t.Fatalf("carol got %s", got)
	}
	if got := ephemeralFrames(t, bob1); len(got) != 0 {
		t.Fatalf("bob does not watch presence, got %v", got)
	}

	// One of bob's sockets goes: he is still present; the other: he left.
	if err := h.Unsubscribe(bob1, pA, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if got := ephemeralFrames(t, alice); len(got) != 0 {
		t.Fatalf("bob left with a socket still subscribed: %v", got)
	}
	h.Remove(bob2)
	if got := strings.Join(ephemeralFrames(t, alice), " "); got != "diff:+-2" {
		t.Fatalf("alice got %s after bob's last socket", got)
	}

	// Meta: set by carol, seen by both watchers, carol included.
	if err := h.SetPresence(carol, pA, json.RawMessage(`{"viewing":"task-1"}`)); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(ephemeralFrames(t, alice), " "); got != "diff:+3-" {
		t.Fatalf("alice got %s", got)
	}
	if got := h.Present(pA); string(got[uCarol]) != `{"viewing":"task-1"}` || len(got) != 2 {
		t.Fatalf("present %v", got)
	}

	// Revoked: carol leaves presence for everyone.
	ephemeralFrames(t, carol)
	h.Revoke(pA, uCarol, events.ReasonMemberRemoved)
	if got := strings.Join(ephemeralFrames(t, alice), " "); got != "diff:+-3" {
		t.Fatalf("alice got %s after carol's revocation", got)
	}
	if got := h.Present(pA); len(got) != 1 {
		t.Fatalf("present after revocation %v", got)
	}
	// Not subscribed: no presence, no broadcast.
	if err := h.SetPresence(carol, pA, nil); !errors.Is(err, ErrNotSubscribed) {
		t.Fatalf("a revoked socket set presence: %v", err)
	}
}

// TestBroadcast: a broadcast reaches the project's other live subscribers
// (the sender too only with self), never a pending, unsubscribed or
// revoked one, and is kept nowhere.
func TestBroadcast(t *testing.T) {
	h := newHub(t, Config{QueueSize: 64, HistorySize: 10})
	alice, bob, other := h.NewClient(uAlice), h.NewClient(uBob), h.NewClient(uCarol)
	subscribe(t, h, alice, pA, nil)
	subscribe(t, h, bob, pA, nil)
	subscribe(t, h, other, pB, nil)
	for _, c := range []*Client{alice, bob, other} {
		ephemeralFrames(t, c)
	}
	if err := h.Broadcast(alice, pA, "typing", json.RawMessage(`{}`), false); err != nil {
		t.Fatal(err)
	}
	if err := h.Broadcast(alice, pA, "cursor", json.RawMessage(`{"x":1}`), true); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(ephemeralFrames(t, bob), " "); got != "broadcast:typing:1 broadcast:cursor:1" {
		t.Fatalf("bob got %s", got)
	}
	if got := strings.Join(ephemeralFrames(t, alice), " "); got != "broadcast:cursor:1" {
		t.Fatalf("alice got %s", got)
	}
	if got := ephemeralFrames(t, other); len(got) != 0 {
		t.Fatalf("another project's subscriber got %v", got)
	}
	if err := h.Broadcast(other, pA, "typing", json.RawMessage(`{}`), false); !errors.Is(err, ErrNotSubscribed) {
		t.Fatalf("a socket not subscribed to the project broadcast: %v", err)
	}
	if n := h.Retained(); n != 0 {
		t.Fatalf("broadcasts kept in history: %d", n)
	}
}

// TestPresenceAcrossReplicas: a user is present while any replica has it;
// what another replica says joins and leaves like local subscriptions, a
// replica gone (its snapshot empty) takes its users out, this replica's
// changes are announced, and remote broadcasts reach the live subscribers.
func TestPresenceAcrossReplicas(t *testing.T) {
	var announced []string
	h := newHub(t, Config{QueueSize: 64})
	h.Link(func(pid, uid string, p *Presence) {
		announced = append(announced, uid[:1]+map[bool]string{true: "+", false: "-"}[p != nil])
	}, nil)
	alice := h.NewClient(uAlice)
	subscribe(t, h, alice, pA, nil)
	if err := h.WatchPresence(alice, pA); err != nil {
		t.Fatal(err)
	}
	ephemeralFrames(t, alice)
	now := time.Now()

	h.RemotePresence("r2", pA, uBob, &Presence{OnlineAt: now, Updated: now})
	h.RemotePresence("r3", pA, uBob, &Presence{OnlineAt: now, Updated: now}) // bob on two other replicas
	bob := h.NewClient(uBob)
	subscribe(t, h, bob, pA, nil) // and here: still one user
	if got := strings.Join(ephemeralFrames(t, alice), " "); got != "diff:+2-" {
		t.Fatalf("alice got %s", got)
	}
	h.Remove(bob)
	h.RemotePresence("r2", pA, uBob, nil)
	if got := ephemeralFrames(t, alice); len(got) != 0 {
		t.Fatalf("bob left while r3 still has him: %v", got)
	}
	// r3 says bob's meta changed: a join with it.
	h.RemotePresence("r3", pA, uBob, &Presence{Meta: json.RawMessage(`{"typing":true}`), OnlineAt: now, Updated: now.Add(time.Second)})
	if got := strings.Join(ephemeralFrames(t, alice), " "); got != "diff:+2-" || string(h.Present(pA)[uBob]) != `{"typing":true}` {
		t.Fatalf("alice got %s, present %s", got, h.Present(pA))
	}
	// r3 is gone.
	h.RemoteSnapshot("r3", nil)
	if got := strings.Join(ephemeralFrames(t, alice), " "); got != "diff:+-2" {
		t.Fatalf("alice got %s when r3 went", got)
	}
	if got := strings.Join(announced, " "); got != "1+ 2+ 2-" {
		t.Fatalf("announced %s", got)
	}
	if got := h.LocalPresence(); len(got) != 1 || got[0].UserID != uAlice {
		t.Fatalf("local presence %+v", got)
	}

	h.RemoteBroadcast(pA, "typing", uCarol, json.RawMessage(`{}`))
	if got := strings.Join(ephemeralFrames(t, alice), " "); got != "broadcast:typing:3" {
		t.Fatalf("alice got %s", got)
	}
}
