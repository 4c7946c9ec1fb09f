package hub

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/walcast/walcast/internal/access"
	"github.com/walcast/walcast/internal/events"
	"github.com/walcast/walcast/internal/metrics"
)

const (
	pA   = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
	pB   = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
	uBob = "22222222-2222-4222-8222-222222222222"
)

func newHub(t *testing.T, cfg Config) *Hub {
	t.Helper()
	h := New(cfg, metrics.New(prometheus.NewRegistry()))
	h.SetFloor(0x100)
	return h
}

func ev(lsn uint64, idx uint32, project, typ string) events.Event {
	p := events.Position{LSN: lsn, Index: idx}
	return events.Event{Position: p, ProjectID: project, Type: typ, CommitTime: time.Now(),
		Payload: []byte(fmt.Sprintf(`{"type":%q,"project_id":%q,"position":%q}`, typ, project, p))}
}

func allow(context.Context, bool) (access.Proof, error) {
	return access.Proof{Member: true, Fresh: true}, nil
}

func deny(context.Context, bool) (access.Proof, error) { return access.Proof{Fresh: true}, nil }

func subscribe(t *testing.T, h *Hub, c *Client, project string, since *events.Position) Subscription {
	t.Helper()
	s, err := h.Subscribe(context.Background(), c, project, since, allow)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	return s
}

// frames drains what is queued for c, as "type@position".
func frames(c *Client) []string {
	var out []string
	for _, it := range c.Take(nil) {
		c.Written(it)
		if it.Frame != nil {
			out = append(out, it.Frame.Type+"@"+it.Frame.Position.String())
		}
		for _, f := range it.Batch {
			out = append(out, f.Type+"@"+f.Position.String())
		}
	}
	return out
}

func pos(lsn uint64, idx uint32) string { return events.Position{LSN: lsn, Index: idx}.String() }

func TestFanoutToSubscribersOnly(t *testing.T) {
	h := newHub(t, Config{QueueSize: 16, HistorySize: 10})
	a, b, other := h.NewClient("a"), h.NewClient("b"), h.NewClient("c")
	subscribe(t, h, a, pA, nil)
	subscribe(t, h, b, pA, nil)
	subscribe(t, h, other, pB, nil)
	h.Publish([]events.Event{ev(0x200, 0, pA, "cache_invalidate"), ev(0x200, 1, pA, "message_created")})
	want := []string{"subscribed@" + pos(0xFF, ^uint32(0)), "cache_invalidate@" + pos(0x200, 0), "message_created@" + pos(0x200, 1)}
	for _, c := range []*Client{a, b} {
		if got := frames(c); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if got := frames(other); len(got) != 1 {
		t.Fatalf("other project's client got %v", got)
	}
	// Same bytes to every queue: marshaled once.
}

func TestPublishSkipsWhatItHas(t *testing.T) {
	h := newHub(t, Config{QueueSize: 16, HistorySize: 10})
	c := h.NewClient("a")
	subscribe(t, h, c, pA, nil)
	frames(c)
	h.Publish([]events.Event{ev(0x200, 0, pA, "x")})
	h.Publish([]events.Event{ev(0x200, 0, pA, "x"), ev(0x50, 0, pA, "old")})
	if got := frames(c); len(got) != 1 {
		t.Fatalf("replayed events delivered twice: %v", got)
	}
}

func TestSlowConsumerIsDroppedWithoutBlocking(t *testing.T) {
	h := newHub(t, Config{QueueSize: 4, HistorySize: 100})
	slow, fast := h.NewClient("s"), h.NewClient("f")
	subscribe(t, h, slow, pA, nil)
	subscribe(t, h, fast, pA, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 50; i++ {
			h.Publish([]events.Event{ev(0x200+uint64(i), 0, pA, "e")})
			frames(fast) // the fast client keeps up
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Publish blocked on a full queue")
	}
	select {
	case <-slow.Slow():
	default:
		t.Fatal("slow client not marked slow")
	}
	if n := h.SubscriptionCount(); n != 1 {
		t.Fatalf("subscriptions = %d, want only the fast client's", n)
	}
	if _, err := h.Subscribe(context.Background(), slow, pB, nil, allow); !errors.Is(err, ErrClientClosed) {
		t.Fatalf("dropped client subscribe: %v", err)
	}
}

func TestRevocationAtItsPosition(t *testing.T) {
	h := newHub(t, Config{QueueSize: 16, HistorySize: 10})
	bob, alice := h.NewClient(uBob), h.NewClient("alice")
	bob2 := h.NewClient(uBob) // a second socket of the same user
	for _, c := range []*Client{bob, alice, bob2} {
		subscribe(t, h, c, pA, nil)
		frames(c)
	}
	rev := &events.Revocation{UserID: uBob, Reason: events.ReasonMemberRemoved, At: events.Position{LSN: 0x300, Index: 1}}
	e0, e1 := ev(0x300, 0, pA, "cache_invalidate"), ev(0x300, 1, pA, "member_removed")
	e0.Revoke, e1.Revoke = rev, rev
	h.Publish([]events.Event{e0, e1, ev(0x300, 2, pA, "message_created")})
	for _, c := range []*Client{bob, bob2} {
		if got := frames(c); fmt.Sprint(got) != fmt.Sprint([]string{"subscription_revoked@" + pos(0x300, 1)}) {
			t.Fatalf("bob got %v", got)
		}
	}
	if got := frames(alice); len(got) != 3 {
		t.Fatalf("alice got %v", got)
	}
	h.Publish([]events.Event{ev(0x400, 0, pA, "later")})
	if got := frames(bob); len(got) != 0 {
		t.Fatalf("bob after revocation got %v", got)
	}

	// Project deletion revokes everyone.
	del := ev(0x500, 0, pA, "cache_invalidate")
	del.Revoke = &events.Revocation{Reason: events.ReasonProjectDeleted, At: del.Position}
	h.Publish([]events.Event{del})
	if got := frames(alice); fmt.Sprint(got) != fmt.Sprint([]string{"later@" + pos(0x400, 0), "subscription_revoked@" + pos(0x500, 0)}) {
		t.Fatalf("alice got %v", got)
	}
}

func TestRevocationWhileSubscribing(t *testing.T) {
	h := newHub(t, Config{QueueSize: 16, HistorySize: 10})
	bob := h.NewClient(uBob)
	lookups := 0
	_, err := h.Subscribe(context.Background(), bob, pA, nil, func(context.Context, bool) (access.Proof, error) {
		// The membership check says yes, but the removal arrives
		// meanwhile, streamed before its transaction (77) is visible.
		lookups++
		e := ev(0x300, 0, pA, "member_removed")
		e.Xid = 77
		e.Revoke = &events.Revocation{UserID: uBob, Reason: events.ReasonMemberRemoved, At: e.Position}
		h.Publish([]events.Event{e})
		return access.Proof{Member: true, Fresh: true, Snapshot: &access.Snapshot{Xmin: 70, Xmax: 80, InProgress: []uint64{77}}}, nil
	})
	if lookups != 2 {
		t.Fatalf("%d lookups: a change during the lookup must start it over", lookups)
	}
	if !errors.Is(err, ErrForbidden) {
		t.Fatalf("err = %v, want ErrForbidden", err)
	}
	if got := frames(bob); len(got) != 0 {
		t.Fatalf("bob got %v", got)
	}
}

func TestEventsDuringSubscribeAreHeldInOrder(t *testing.T) {
	h := newHub(t, Config{QueueSize: 16, HistorySize: 10})
	c := h.NewClient("a")
	_, err := h.Subscribe(context.Background(), c, pA, nil, func(ctx context.Context, fresh bool) (access.Proof, error) {
		h.Publish([]events.Event{ev(0x300, 0, pA, "during")})
		return allow(ctx, fresh)
	})
	if err != nil {
		t.Fatal(err)
	}
	h.Publish([]events.Event{ev(0x400, 0, pA, "after")})
	want := []string{"during@" + pos(0x300, 0), "subscribed@" + pos(0x300, 0), "after@" + pos(0x400, 0)}
	if got := frames(c); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestResume(t *testing.T) {
	h := newHub(t, Config{QueueSize: 64, HistorySize: 3})
	for i := uint64(1); i <= 5; i++ {
		h.Publish([]events.Event{ev(0x200+i, 0, pA, fmt.Sprint("e", i)), ev(0x200+i, 1, pB, "other")})
	}
	at := func(i uint64) *events.Position { return &events.Position{LSN: 0x200 + i} }
	last := pos(0x205, 1)
	cases := []struct {
		name  string
		since *events.Position
		want  []string
	}{
		{"inside history", at(3), []string{"e4@" + pos(0x204, 0), "e5@" + pos(0x205, 0), "subscribed@" + last}},
		{"at the newest", at(5), []string{"subscribed@" + last}},
		{"evicted", at(1), []string{"resync_required@" + last, "subscribed@" + last}},
		{"before the floor", &events.Position{LSN: 0x10}, []string{"resync_required@" + last, "subscribed@" + last}},
		{"ahead of the hub", &events.Position{LSN: 0x900}, []string{"subscribed@" + pos(0x900, 0)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := h.NewClient("a")
			subscribe(t, h, c, pA, tc.since)
			if got := frames(c); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			h.Remove(c)
		})
	}

	// A client ahead of the hub (back before walcast's replay) skips what
	// it has seen when the replay arrives.
	c := h.NewClient("a")
	subscribe(t, h, c, pA, &events.Position{LSN: 0x207})
	frames(c)
	h.Publish([]events.Event{ev(0x206, 0, pA, "seen"), ev(0x207, 0, pA, "seen too"), ev(0x208, 0, pA, "new")})
	if got := frames(c); fmt.Sprint(got) != fmt.Sprint([]string{"new@" + pos(0x208, 0)}) {
		t.Fatalf("got %v", got)
	}
}

func TestHistoryAge(t *testing.T) {
	h := newHub(t, Config{QueueSize: 16, HistorySize: 100, HistoryAge: time.Minute})
	now := time.Now()
	h.now = func() time.Time { return now }
	h.Publish([]events.Event{ev(0x200, 0, pA, "old")})
	now = now.Add(2 * time.Minute)
	h.Publish([]events.Event{ev(0x300, 0, pA, "new")})
	h.Sweep()
	if h.Retained() != 1 {
		t.Fatalf("retained %d", h.Retained())
	}
	c := h.NewClient("a")
	subscribe(t, h, c, pA, &events.Position{LSN: 0x100})
	if got := frames(c); got[0] != "resync_required@"+pos(0x300, 0) {
		t.Fatalf("got %v", got)
	}
}

func TestSubscribeLimitsAndUnsubscribe(t *testing.T) {
	h := newHub(t, Config{QueueSize: 16, MaxSubscriptions: 1})
	c := h.NewClient("a")
	subscribe(t, h, c, pA, nil)
	if _, err := h.Subscribe(context.Background(), c, pA, nil, allow); !errors.Is(err, ErrAlreadySubscribed) {
		t.Fatalf("twice: %v", err)
	}
	if _, err := h.Subscribe(context.Background(), c, pB, nil, allow); !errors.Is(err, ErrTooManySubs) {
		t.Fatalf("over cap: %v", err)
	}
	if err := h.Unsubscribe(c, pA, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := h.Unsubscribe(c, pA, []byte(`{}`)); !errors.Is(err, ErrNotSubscribed) {
		t.Fatalf("unsubscribe twice: %v", err)
	}
	h.Publish([]events.Event{ev(0x200, 0, pA, "x")})
	if got := frames(c); fmt.Sprint(got) != fmt.Sprint([]string{"subscribed@" + pos(0xFF, ^uint32(0)), "unsubscribed@" + pos(0, 0)}) {
		t.Fatalf("got %v", got)
	}
	if _, err := h.Subscribe(context.Background(), c, pB, nil, deny); !errors.Is(err, ErrForbidden) {
		t.Fatalf("forbidden: %v", err)
	}
	if h.SubscriptionCount() != 0 {
		t.Fatal("subscriptions left")
	}
}

func TestSubscribeWaitsForTheFloor(t *testing.T) {
	h := New(Config{QueueSize: 4}, metrics.New(prometheus.NewRegistry()))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := h.Subscribe(ctx, h.NewClient("a"), pA, nil, allow); !errors.Is(err, ErrNotReady) {
		t.Fatalf("err = %v", err)
	}
}

func TestLongReplayDoesNotOverflowTheQueue(t *testing.T) {
	h := newHub(t, Config{QueueSize: 4, HistorySize: 100})
	for i := uint64(1); i <= 50; i++ {
		h.Publish([]events.Event{ev(0x200+i, 0, pA, "e")})
	}
	c := h.NewClient("a")
	res := subscribe(t, h, c, pA, &events.Position{LSN: 0x200})
	if res.Replayed != 50 || res.Resync {
		t.Fatalf("replayed %d, resync %v", res.Replayed, res.Resync)
	}
	select {
	case <-c.Slow():
		t.Fatal("a 50-event replay overflowed a 4-frame queue")
	default:
	}
	if got := frames(c); len(got) != 51 {
		t.Fatalf("got %d frames", len(got))
	}
}

// A transaction's events travel as one item but count frame by frame.
func TestRunCountsEachFrameAgainstTheBound(t *testing.T) {
	h := newHub(t, Config{QueueSize: 4, HistorySize: 100})
	c := h.NewClient("a")
	subscribe(t, h, c, pA, nil)
	var run []events.Event
	for i := uint32(0); i < 6; i++ {
		run = append(run, ev(0x200, i, pA, "e"))
	}
	h.Publish(run)
	select {
	case <-c.Slow():
	default:
		t.Fatal("6 queued frames did not overflow a 4-frame bound")
	}
	ok := h.NewClient("b")
	subscribe(t, h, ok, pA, nil)
	frames(ok)
	h.Publish(run[:0])
	h.Publish([]events.Event{ev(0x300, 0, pA, "x"), ev(0x300, 1, pA, "y")})
	if got := frames(ok); len(got) != 2 {
		t.Fatalf("got %v", got)
	}
}

// TestPendingSubscriptionHoldsOnlyWhatItWillSend: while a resuming
// client's subscription is checked, the hub may be replaying its own
// history (after a restart); frames at or before the client's since are
// never sent to it, so they must not count against its queue.
func TestPendingSubscriptionHoldsOnlyWhatItWillSend(t *testing.T) {
	h := newHub(t, Config{QueueSize: 4, HistorySize: 100})
	c := h.NewClient("a")
	since := events.Position{LSN: 0x900}
	_, err := h.Subscribe(context.Background(), c, pA, &since, func(ctx context.Context, fresh bool) (access.Proof, error) {
		for i := uint64(0); i < 20; i++ { // the replay: all at or before since
			h.Publish([]events.Event{ev(0x200+i, 0, pA, "old")})
		}
		h.Publish([]events.Event{ev(0x901, 0, pA, "new")})
		return allow(ctx, fresh)
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := frames(c); fmt.Sprint(got) != fmt.Sprint([]string{"new@" + pos(0x901, 0), "subscribed@" + pos(0x901, 0)}) {
		t.Fatalf("got %v", got)
	}
}

// TestSubscribeWithoutSinceWhileCatchingUp: a client with no resume
// position that subscribes while the hub replays history (events committed
// before the stream started) goes live after that history: it never gets
// old events as if they were new.
func TestSubscribeWithoutSinceWhileCatchingUp(t *testing.T) {
	h := newHub(t, Config{QueueSize: 16, HistorySize: 100})
	h.CatchUp(0x500)
	c := h.NewClient("a")
	res := subscribe(t, h, c, pA, nil)
	if res.Position != (events.Position{LSN: 0x4FF, Index: ^uint32(0)}) {
		t.Fatalf("live from %s", res.Position)
	}
	h.Publish([]events.Event{ev(0x300, 0, pA, "history")})
	h.Publish([]events.Event{ev(0x500, 0, pA, "news")})
	if got := frames(c); fmt.Sprint(got) != fmt.Sprint([]string{"subscribed@" + pos(0x4FF, ^uint32(0)), "news@" + pos(0x500, 0)}) {
		t.Fatalf("got %v", got)
	}
}

// TestForgedOrForeignSinceResyncs: a resume position ahead of everything
// the server had when the stream started and everything published since
// (forged, or from another cluster) is answered resync_required, never
// taken for "not replayed yet" (which would mute the client).
func TestForgedOrForeignSinceResyncs(t *testing.T) {
	h := newHub(t, Config{QueueSize: 16, HistorySize: 10})
	h.CatchUp(0x500)
	h.Publish([]events.Event{ev(0x600, 0, pA, "live")})
	c := h.NewClient("a")
	future := events.Position{LSN: 0x9_0000_0000}
	res := subscribe(t, h, c, pA, &future)
	if !res.Resync {
		t.Fatalf("future since: %+v", res)
	}
	h.Publish([]events.Event{ev(0x700, 0, pA, "next")})
	if got := frames(c); fmt.Sprint(got) != fmt.Sprint([]string{"resync_required@" + pos(0x600, 0), "subscribed@" + pos(0x600, 0), "next@" + pos(0x700, 0)}) {
		t.Fatalf("got %v", got)
	}
	// Ahead of the hub and of the stream's start, within the server's
	// WAL now (a replica whose stream lags another's): not given yet.
	reads := 0
	w := New(Config{QueueSize: 16, HistorySize: 10, WALEnd: func(context.Context) (uint64, error) { reads++; return 0x8000, nil }}, metrics.New(prometheus.NewRegistry()))
	fixed := time.Now()
	w.now = func() time.Time { return fixed } // every resume below within walEndEvery
	w.SetFloor(0x100)
	w.CatchUp(0x500)
	lagging := events.Position{LSN: 0x7000}
	if res := subscribe(t, w, w.NewClient("l"), pA, &lagging); res.Resync || res.Position != lagging {
		t.Fatalf("since within the WAL: %+v", res)
	}
	if res := subscribe(t, w, w.NewClient("f"), pA, &future); !res.Resync {
		t.Fatalf("since beyond the WAL: %+v", res)
	}
	for i := range 50 { // a client forging positions costs no query each
		subscribe(t, w, w.NewClient(fmt.Sprint("g", i)), pA, &future)
	}
	if reads != 1 {
		t.Fatalf("the WAL end was read %d times for 52 resumes ahead of the hub", reads)
	}
	// Within what the server had, ahead of the hub: not replayed yet.
	d := h.NewClient("d")
	h2 := newHub(t, Config{QueueSize: 16, HistorySize: 10})
	h2.CatchUp(0x500)
	within := events.Position{LSN: 0x400}
	if res := subscribe(t, h2, d, pA, &within); res.Resync || res.Position != within {
		t.Fatalf("since within the stream's history: %+v", res)
	}
}

// TestGapResyncsEveryProject: when changes may have been lost (the slot
// was re-created or moved), every project is told to resync, and a resume
// from before the gap is answered resync_required.
func TestGapResyncsEveryProject(t *testing.T) {
	h := newHub(t, Config{QueueSize: 16, HistorySize: 10})
	a, b := h.NewClient("a"), h.NewClient("b")
	subscribe(t, h, a, pA, nil)
	subscribe(t, h, b, pB, nil)
	h.Publish([]events.Event{ev(0x200, 0, pA, "before")})
	h.Gap(0x900, time.Now())
	gap := pos(0x8FF, ^uint32(0))
	if got := frames(a); fmt.Sprint(got[1:]) != fmt.Sprint([]string{"before@" + pos(0x200, 0), "resync_required@" + gap}) {
		t.Fatalf("a got %v", got)
	}
	if got := frames(b); fmt.Sprint(got[1:]) != fmt.Sprint([]string{"resync_required@" + gap}) {
		t.Fatalf("b got %v", got)
	}
	before := events.Position{LSN: 0x200}
	if res := subscribe(t, h, h.NewClient("c"), pA, &before); !res.Resync {
		t.Fatalf("resume across the gap: %+v", res)
	}
	h.ResyncAll(time.Now())
	at := events.Position{LSN: 0x8FF, Index: ^uint32(0)}
	if res := subscribe(t, h, h.NewClient("e"), pB, &at); !res.Resync {
		t.Fatalf("resume at the resync position of a table back in the publication: %+v", res)
	}
}

// TestStreamDownAndUp: subscribers are told once when the stream has been
// down past its notice and once when it is back; a subscription made
// meanwhile is told after its subscribed frame.
func TestStreamDownAndUp(t *testing.T) {
	h := newHub(t, Config{QueueSize: 16})
	a := h.NewClient("a")
	subscribe(t, h, a, pA, nil)
	since := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	h.StreamDown(since)
	h.StreamDown(since.Add(time.Minute)) // told once
	b := h.NewClient("b")
	subscribe(t, h, b, pA, nil)
	h.StreamUp()
	h.StreamUp()
	for name, c := range map[string]*Client{"a": a, "b": b} {
		var types []string
		for _, it := range c.Take(nil) {
			c.Written(it)
			types = append(types, it.Frame.Type)
			if it.Frame.Type == "stream_down" && !strings.Contains(string(it.Frame.Data), `"since":"2026-11-27T12:00:00.000000Z"`) {
				t.Fatalf("%s: %s", name, it.Frame.Data)
			}
		}
		if fmt.Sprint(types) != "[subscribed stream_down stream_up]" {
			t.Fatalf("%s got %v", name, types)
		}
	}
}

// TestCatchUpIsNotCountedAsSlow: after a restart the hub replays history
// committed before its stream started; a resumed client receives it live
// and is never closed as slow for it, however much there is.
func TestCatchUpIsNotCountedAsSlow(t *testing.T) {
	h := newHub(t, Config{QueueSize: 8, HistorySize: 100})
	h.CatchUp(0x10000)
	c := h.NewClient("a")
	since := events.Position{LSN: 0x200}
	subscribe(t, h, c, pA, &since)
	for i := uint64(1); i <= 50; i++ { // the replay: news to this client
		h.Publish([]events.Event{ev(0x200+i, 0, pA, "replayed"), ev(0x200+i, 1, pA, "replayed")})
	}
	if c.IsSlow() {
		t.Fatal("closed as slow while the hub caught up")
	}
	if got := frames(c); len(got) != 101 {
		t.Fatalf("%d frames", len(got))
	}
	for i := uint64(1); i <= 5; i++ { // live again: the bound applies
		h.Publish([]events.Event{ev(0x20000+i, 0, pA, "live"), ev(0x20000+i, 1, pA, "live")})
	}
	if !c.IsSlow() {
		t.Fatal("a client that does not read live events is slow")
	}
}

// TestHistoryIsBoundedInBytes: wide events cannot make the histories hold
// more than history_bytes; the oldest go first, and a resume from before
// them resyncs.
func TestHistoryIsBoundedInBytes(t *testing.T) {
	h := newHub(t, Config{QueueSize: 16, HistorySize: 1000, HistoryBytes: 100 << 10})
	wide := strings.Repeat("x", 10<<10)
	for i := uint64(1); i <= 100; i++ { // 1 MB over two projects
		p := pA
		if i%2 == 0 {
			p = pB
		}
		e := ev(0x200+i, 0, p, "wide")
		e.Payload = []byte(wide)
		h.Publish([]events.Event{e})
		if h.retainedBytes > 100<<10 {
			t.Fatalf("histories hold %d bytes", h.retainedBytes)
		}
	}
	if h.Retained() < 5 {
		t.Fatalf("only %d events retained", h.Retained())
	}
	early := events.Position{LSN: 0x201}
	if res := subscribe(t, h, h.NewClient("a"), pA, &early); !res.Resync {
		t.Fatal("a resume from before the evicted events did not resync")
	}
}

// TestOriginTravelsAndForeignResumesResync: subscribed and
// resync_required name the hub's origin; a resume whose origin is another
// (another cluster, timeline or slot) is answered resync_required even
// when its position lies inside the retained history, while one with the
// hub's own origin replays.
func TestOriginTravelsAndForeignResumesResync(t *testing.T) {
	h := New(Config{QueueSize: 16, HistorySize: 10, Origin: "7300000000000000001.1.walcast"}, metrics.New(prometheus.NewRegistry()))
	h.SetFloor(0x100)
	h.Publish([]events.Event{ev(0x200, 0, pA, "one"), ev(0x300, 0, pA, "two")})
	inside := events.Position{LSN: 0x200}
	for _, tc := range []struct {
		origin string
		want   []string
	}{
		{"7300000000000000001.1.walcast", []string{"two@" + pos(0x300, 0), "subscribed@" + pos(0x300, 0)}},
		{"", []string{"two@" + pos(0x300, 0), "subscribed@" + pos(0x300, 0)}}, // a client that does not say
		{"7300000000000000002.1.walcast", []string{"resync_required@" + pos(0x300, 0), "subscribed@" + pos(0x300, 0)}},
		{"7300000000000000001.2.walcast", []string{"resync_required@" + pos(0x300, 0), "subscribed@" + pos(0x300, 0)}},
	} {
		c := h.NewClient("a")
		since := inside
		if h.Foreign(tc.origin) {
			since = events.Position{}
		}
		subscribe(t, h, c, pA, &since)
		var got []string
		for _, it := range c.Take(nil) {
			c.Written(it)
			fs := it.Batch
			if it.Frame != nil {
				fs = append(fs, it.Frame)
			}
			for _, f := range fs {
				got = append(got, f.Type+"@"+f.Position.String())
				if (f.Type == "subscribed" || f.Type == events.TypeResyncRequired) && !strings.Contains(string(f.Data), `"origin":"7300000000000000001.1.walcast"`) {
					t.Fatalf("%s without the origin: %s", f.Type, f.Data)
				}
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("origin %q: got %v, want %v", tc.origin, got, tc.want)
		}
		h.Remove(c)
	}
	// A zero position never replays, even on a hub whose floor is zero.
	z := New(Config{QueueSize: 16, HistorySize: 10}, metrics.New(prometheus.NewRegistry()))
	z.SetFloor(0)
	if res := subscribe(t, z, z.NewClient("a"), pA, &events.Position{}); !res.Resync {
		t.Fatalf("zero since on an empty hub: %+v", res)
	}
}

// TestUnmappableChangeIsAGapForEveryProject: a resync of every project
// published in the stream (a change that could not be mapped) is a gap
// like a dropped slot: a resume from before it is answered
// resync_required also in a project that had no subscribers or history
// when it passed.
func TestUnmappableChangeIsAGapForEveryProject(t *testing.T) {
	h := newHub(t, Config{QueueSize: 16, HistorySize: 10})
	h.Publish([]events.Event{ev(0x200, 0, pA, "before")})
	h.Publish([]events.Event{{Position: events.Position{LSN: 0x300}, AllProjects: true, Type: events.TypeResyncRequired, CommitTime: time.Now()}})
	before := events.Position{LSN: 0x200}
	if res := subscribe(t, h, h.NewClient("b"), pB, &before); !res.Resync {
		t.Fatalf("resume of a quiet project across the unmappable change: %+v", res)
	}
}
