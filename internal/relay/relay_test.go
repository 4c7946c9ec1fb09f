package relay

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/walcast/walcast/internal/access"
	"github.com/walcast/walcast/internal/events"
	"github.com/walcast/walcast/internal/metrics"
)

const (
	projectA = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
	userU    = "11111111-1111-4111-8111-111111111111"
)

type fakeHub struct {
	published [][]events.Event
	gaps      []uint64
}

func (h *fakeHub) Publish(evs []events.Event)     { h.published = append(h.published, slices.Clone(evs)) }
func (h *fakeHub) Gap(walPos uint64, _ time.Time) { h.gaps = append(h.gaps, walPos) }

type fakeBus struct {
	published [][]events.Event
	err       error
}

func (b *fakeBus) Publish(_ context.Context, evs []events.Event) error {
	b.published = append(b.published, slices.Clone(evs))
	return b.err
}

func newRelay(t *testing.T, hub Hub, bus Bus) (*Relay, *metrics.Metrics) {
	t.Helper()
	mapper, err := events.NewMapper(events.Options{Tables: events.DefaultTables(), Publication: "walcast", PublishPrefix: "walcast"})
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New(prometheus.NewRegistry())
	return New(mapper, hub, bus, slog.New(slog.NewTextHandler(io.Discard, nil)), m), m
}

func message(id string, project any) events.Change {
	return events.Change{Schema: "public", Table: "messages", Action: events.Insert,
		New: []events.Column{{Name: "id", Value: id}, {Name: "project_id", Value: project}, {Name: "content", Value: "hi"}}}
}

func types(evs []events.Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Type+"@"+ev.Position.String())
	}
	return out
}

// TestTake: a transaction's events reach the hub (single node) or the bus
// (cluster), in order and whole even though the relay reuses its buffer;
// an unmappable change fails closed and is counted; the bus's error stops
// the stream.
func TestTake(t *testing.T) {
	busErr := errors.New("no ack")
	for _, tc := range []struct {
		name     string
		bus      *fakeBus
		changes  []events.Change
		want     []string
		problems float64
		err      error
	}{
		{"single node", nil, []events.Change{message("m1", projectA)},
			[]string{"cache_invalidate@0000000000000100/00000000", "message_created@0000000000000100/00000001"}, 0, nil},
		{"cluster", &fakeBus{}, []events.Change{message("m1", projectA)},
			[]string{"cache_invalidate@0000000000000100/00000000", "message_created@0000000000000100/00000001"}, 0, nil},
		{"unmappable: every project resyncs", nil, []events.Change{{Schema: "public", Table: "messages", Action: events.Delete,
			Old: []events.Column{{Name: "id", Value: "m1"}}}},
			[]string{"resync_required@0000000000000100/00000000"}, 1, nil},
		{"the bus refuses", &fakeBus{err: busErr}, []events.Change{message("m1", projectA)},
			[]string{"cache_invalidate@0000000000000100/00000000", "message_created@0000000000000100/00000001"}, 0, busErr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hub := &fakeHub{}
			var bus Bus
			if tc.bus != nil {
				bus = tc.bus
			}
			r, m := newRelay(t, hub, bus)
			err := r.Take(context.Background(), &events.Txn{Xid: 7, CommitLSN: 0x100, EndLSN: 0x180, CommitTime: time.Now(), Changes: tc.changes})
			if !errors.Is(err, tc.err) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			got := hub.published
			if tc.bus != nil {
				if len(hub.published) != 0 {
					t.Fatalf("cluster mode published to the hub directly: %v", hub.published)
				}
				got = tc.bus.published
			}
			if len(got) != 1 || !slices.Equal(types(got[0]), tc.want) {
				t.Fatalf("published %v, want %v", got, tc.want)
			}
			if v := testutil.ToFloat64(m.MappingProblems); v != tc.problems {
				t.Fatalf("mapping problems %v, want %v", v, tc.problems)
			}
			// The next transaction reuses the buffer: what was published
			// stays as it was.
			_ = r.Take(context.Background(), &events.Txn{CommitLSN: 0x200, EndLSN: 0x280, CommitTime: time.Now(), Changes: []events.Change{message("m2", projectA)}})
			if !slices.Equal(types(got[0]), tc.want) {
				t.Fatalf("first transaction changed under the hub: %v", types(got[0]))
			}
		})
	}
}

// TestGap: a gap reaches this hub at the reader's position on a single
// node; in cluster mode it travels through the bus as a resync of every
// project just before that position, so every replica is told.
func TestGap(t *testing.T) {
	hub := &fakeHub{}
	r, _ := newRelay(t, hub, nil)
	if err := r.Gap(context.Background(), 0x900); err != nil || !slices.Equal(hub.gaps, []uint64{0x900}) {
		t.Fatalf("single node: err %v, gaps %v", err, hub.gaps)
	}
	bus := &fakeBus{}
	r, _ = newRelay(t, &fakeHub{}, bus)
	if err := r.Gap(context.Background(), 0x900); err != nil {
		t.Fatal(err)
	}
	if len(bus.published) != 1 || len(bus.published[0]) != 1 {
		t.Fatalf("bus got %v", bus.published)
	}
	ev := bus.published[0][0]
	if !ev.AllProjects || ev.Type != events.TypeResyncRequired || ev.Position != (events.Position{LSN: 0x8FF, Index: ^uint32(0)}) {
		t.Fatalf("gap event %+v", ev)
	}
	bus.err = errors.New("down")
	if err := r.Gap(context.Background(), 0xA00); err == nil {
		t.Fatal("a gap the bus did not take was reported signalled")
	}
}

type fakeSubscribers struct {
	ids     []string
	revoked []string
}

func (s *fakeSubscribers) SubscriberIDs(string) []string { return s.ids }
func (s *fakeSubscribers) Revoke(projectID, userID, reason string) {
	s.revoked = append(s.revoked, userID+"/"+reason)
}

type fakeMembers map[string]bool

func (f fakeMembers) Lookup(_ context.Context, _, user string, _ bool) (access.Proof, error) {
	return access.Proof{Member: f[user], Fresh: true}, nil
}

func (f fakeMembers) IsMember(_ context.Context, _, user string) (bool, error) {
	if user == "broken" {
		return false, errors.New("database away")
	}
	return f[user], nil
}

// TestRecheck: the NOTIFY source's recheck revokes exactly the users who
// are no longer members, everyone when the project is gone, and nobody on
// an error (logged; the next notification asks again).
func TestRecheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		all  bool
		want []string
	}{
		{"members left", false, []string{"gone/member_removed"}},
		{"project deleted", true, []string{"/project_deleted"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			subs := &fakeSubscribers{ids: []string{"stays", "gone", "broken"}}
			Recheck{Hub: subs, Members: fakeMembers{"stays": true}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}.Recheck(context.Background(), projectA, tc.all)
			if !slices.Equal(subs.revoked, tc.want) {
				t.Fatalf("revoked %v, want %v", subs.revoked, tc.want)
			}
		})
	}
}

type fakeStream struct {
	pos events.Position
	ok  bool
	err error
}

func (s fakeStream) Floor(context.Context) (events.Position, bool, error) { return s.pos, s.ok, s.err }

// TestClusterFloor: the stream's floor when it holds events, else the
// slot's confirmed position, else nothing.
func TestClusterFloor(t *testing.T) {
	slot := func(lsn uint64, err error) func(context.Context) (uint64, error) {
		return func(context.Context) (uint64, error) { return lsn, err }
	}
	streamed := events.Position{LSN: 0x500, Index: 2}
	for _, tc := range []struct {
		name    string
		stream  fakeStream
		slot    func(context.Context) (uint64, error)
		want    events.Position
		wantErr bool
	}{
		{"stream holds events", fakeStream{pos: streamed, ok: true}, slot(0x900, nil), streamed, false},
		{"empty stream", fakeStream{}, slot(0x900, nil), events.Position{LSN: 0x8FF, Index: ^uint32(0)}, false},
		{"empty stream, new slot", fakeStream{}, slot(0, nil), events.Position{}, false},
		{"stream unreadable", fakeStream{err: errors.New("nats")}, slot(0x900, nil), events.Position{}, true},
		{"slot unreadable", fakeStream{}, slot(0, errors.New("pg")), events.Position{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ClusterFloor(context.Background(), tc.stream, tc.slot)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("got %v, %v; want %v (error %v)", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// TestRecheckAfterGaps: each gap signal rechecks every project with
// subscribers; the users no longer members are revoked.
func TestRecheckAfterGaps(t *testing.T) {
	subs := &signalledSubscribers{fakeSubscribers: fakeSubscribers{ids: []string{"stays", "gone"}}, revoked: make(chan string, 4)}
	gaps := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	r := Recheck{Hub: subs, Members: fakeMembers{"stays": true}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	go func() { done <- r.AfterGaps(ctx, gaps, func() []string { return []string{projectA} }) }()
	gaps <- struct{}{}
	if got := <-subs.revoked; got != "gone/member_removed" {
		t.Fatalf("revoked %v", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(subs.revoked) != 0 {
		t.Fatalf("revoked more: %v", <-subs.revoked)
	}
}

type signalledSubscribers struct {
	fakeSubscribers
	revoked chan string
}

func (s *signalledSubscribers) Revoke(projectID, userID, reason string) {
	s.revoked <- userID + "/" + reason
}

// TestPublishedEvents: a published event reaches the hub, is counted and
// answers the wait of its transaction (single node, and through the
// cluster stream's Deliver); a refused one reaches nobody, is counted by
// reason, and the transaction's other events are delivered.
func TestPublishedEvents(t *testing.T) {
	const project = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
	hub := &fakeHub{}
	r, m := newRelay(t, hub, nil)
	pos, cancel := r.Acks.Expect(42)
	defer cancel()
	other, cancelOther := r.Acks.Expect(43)
	defer cancelOther()
	body := []byte(`{"project_id":"` + project + `","type":"sprint_started","data":{}}`)
	if err := r.Take(context.Background(), &events.Txn{Xid: 42, CommitLSN: 0x100, Changes: []events.Change{
		message("m1", project),
		{Action: events.Message, Prefix: "walcast", Content: body},
		{Action: events.Message, Prefix: "walcast", Content: []byte(`{"project_id":"` + project + `","type":"subscribed"}`)},
	}}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(types(hub.published[0]), " "); got != "cache_invalidate@0000000000000100/00000000 message_created@0000000000000100/00000001 sprint_started@0000000000000100/00000002" {
		t.Fatalf("published %s", got)
	}
	select {
	case p := <-pos:
		if p != (events.Position{LSN: 0x100, Index: 2}) {
			t.Fatalf("answered %s", p)
		}
	default:
		t.Fatal("the wait of transaction 42 was not answered")
	}
	select {
	case p := <-other:
		t.Fatalf("transaction 43 answered with %s", p)
	default:
	}
	if testutil.ToFloat64(m.PublishedEvents) != 1 || testutil.ToFloat64(m.PublishedRefused.WithLabelValues("reserved_type")) != 1 || testutil.ToFloat64(m.MappingProblems) != 0 {
		t.Fatalf("published %v, refused %v, mapping problems %v", testutil.ToFloat64(m.PublishedEvents),
			testutil.ToFloat64(m.PublishedRefused.WithLabelValues("reserved_type")), testutil.ToFloat64(m.MappingProblems))
	}

	r.Deliver(events.Event{Position: events.Position{LSN: 0x200}, ProjectID: project, Type: "x", Xid: 43, Published: true})
	if p := <-other; p != (events.Position{LSN: 0x200}) {
		t.Fatalf("answered %s through the stream", p)
	}
}
