package hub

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/access"
	"github.com/walcast/walcast/internal/events"
)

// removal is bob's membership of pA ended by transaction xid.
func removal(lsn uint64, xid uint32) []events.Event {
	inv, dom := ev(lsn, 0, pA, "cache_invalidate"), ev(lsn, 1, pA, "member_removed")
	rev := &events.Revocation{UserID: uBob, Reason: events.ReasonMemberRemoved, At: dom.Position}
	inv.Revoke, dom.Revoke = rev, rev
	inv.Xid, dom.Xid = xid, xid
	return []events.Event{inv, dom}
}

// grant is bob's membership of pA given by transaction xid.
func grant(lsn uint64, xid uint32) []events.Event {
	inv, dom := ev(lsn, 0, pA, "cache_invalidate"), ev(lsn, 1, pA, "member_added")
	inv.Xid, dom.Xid = xid, xid
	dom.Grant = uBob
	return []events.Event{inv, dom}
}

// answer is a lookup that says member and whose snapshot has the given
// transactions still running (streamed, not visible).
func answer(member bool, running ...uint64) Lookup {
	return func(context.Context, bool) (access.Proof, error) {
		return access.Proof{Member: member, Fresh: true, Snapshot: &access.Snapshot{Xmin: 50, Xmax: 100, InProgress: running}}, nil
	}
}

// TestSubscribeRacingAStreamedRemoval is the race of a subscribe with a
// removal the stream has brought but the database does not show yet (a
// synchronous standby holds the commit): the lookup still finds the row,
// and must not win.
func TestSubscribeRacingAStreamedRemoval(t *testing.T) {
	h := newHub(t, Config{QueueSize: 16, HistorySize: 10, AccessWait: time.Second})
	h.Publish(removal(0x300, 77))
	bob := h.NewClient(uBob)
	if _, err := h.Subscribe(context.Background(), bob, pA, nil, answer(true, 77)); !errors.Is(err, ErrForbidden) {
		t.Fatalf("err = %v, want ErrForbidden", err)
	}
	h.Publish([]events.Event{ev(0x400, 0, pA, "message_created")})
	if got := frames(bob); len(got) != 0 {
		t.Fatalf("bob got %v", got)
	}
	// Once visible the row is gone: still forbidden.
	if _, err := h.Subscribe(context.Background(), bob, pA, nil, answer(false)); !errors.Is(err, ErrForbidden) {
		t.Fatalf("after: %v", err)
	}
	// Someone else is unaffected.
	alice := h.NewClient("alice")
	if _, err := h.Subscribe(context.Background(), alice, pA, nil, answer(true, 77)); err != nil {
		t.Fatal(err)
	}
}

// TestSubscribeAfterRemovalAndReAdd: bob is removed, then added again; the
// database shows the new row before the stream brings it. Going live then
// would send bob the events between removal and re-add, so the subscribe
// waits for the grant to arrive, and fails closed if it does not.
func TestSubscribeAfterRemovalAndReAdd(t *testing.T) {
	h := newHub(t, Config{QueueSize: 16, HistorySize: 10, AccessWait: 50 * time.Millisecond})
	h.Publish(removal(0x300, 77))
	h.Publish([]events.Event{ev(0x350, 0, pA, "between")})
	bob := h.NewClient(uBob)
	if _, err := h.Subscribe(context.Background(), bob, pA, nil, answer(true)); !errors.Is(err, ErrAccessUnsettled) {
		t.Fatalf("err = %v, want ErrAccessUnsettled", err)
	}
	if got := frames(bob); len(got) != 0 {
		t.Fatalf("bob got %v", got)
	}
	h.Publish(grant(0x400, 78))
	res, err := h.Subscribe(context.Background(), bob, pA, nil, answer(true))
	if err != nil {
		t.Fatal(err)
	}
	if res.Position != (events.Position{LSN: 0x400, Index: 1}) {
		t.Fatalf("live from %s, before the grant", res.Position)
	}
	// And a resume from before the removal replays nothing of the gap.
	carol := h.NewClient(uBob)
	res, err = h.Subscribe(context.Background(), carol, pA, &events.Position{LSN: 0x200}, answer(true))
	if err != nil || !res.Resync {
		t.Fatalf("resume across the removal: %+v %v", res, err)
	}
}

// TestCachedAnswerOlderThanAChangeIsAskedAgain: a cached "member" whose
// snapshot predates a removal is not used; the fresh answer decides.
func TestCachedAnswerOlderThanAChangeIsAskedAgain(t *testing.T) {
	h := newHub(t, Config{QueueSize: 16, HistorySize: 10, AccessWait: time.Second})
	h.Publish(removal(0x300, 77))
	var asked []bool
	lookup := func(_ context.Context, fresh bool) (access.Proof, error) {
		asked = append(asked, fresh)
		if !fresh {
			return access.Proof{Member: true, Snapshot: &access.Snapshot{Xmin: 50, Xmax: 60}}, nil
		}
		return access.Proof{Fresh: true, Snapshot: &access.Snapshot{Xmin: 90, Xmax: 100}}, nil
	}
	if _, err := h.Subscribe(context.Background(), h.NewClient(uBob), pA, nil, lookup); !errors.Is(err, ErrForbidden) {
		t.Fatalf("err = %v", err)
	}
	if fmt.Sprint(asked) != "[false true]" {
		t.Fatalf("lookups %v, want a cached then a fresh one", asked)
	}
}

// TestRevokeEverything: a TRUNCATE of the membership table (or a change
// walcast cannot attribute) revokes every subscription of every project at
// its position, and no resume replays across it.
func TestRevokeEverything(t *testing.T) {
	h := newHub(t, Config{QueueSize: 16, HistorySize: 10, AccessWait: time.Second})
	a, b := h.NewClient("alice"), h.NewClient(uBob)
	subscribe(t, h, a, pA, nil)
	subscribe(t, h, a, pB, nil)
	subscribe(t, h, b, pB, nil)
	h.Publish([]events.Event{ev(0x200, 0, pA, "before")})
	all := events.Event{Position: events.Position{LSN: 0x300}, AllProjects: true, Xid: 90, Type: events.TypeSubscriptionRevoked,
		Revoke: &events.Revocation{Reason: events.ReasonMemberRemoved, At: events.Position{LSN: 0x300}, Conservative: true}}
	h.Publish([]events.Event{all})
	h.Publish([]events.Event{ev(0x400, 0, pA, "after"), ev(0x400, 1, pB, "after")})
	got := frames(a)
	if len(got) != 5 || got[3] != "subscription_revoked@"+pos(0x300, 0) || got[4] != "subscription_revoked@"+pos(0x300, 0) {
		t.Fatalf("alice got %v", got)
	}
	if got := frames(b); fmt.Sprint(got[1:]) != "[subscription_revoked@"+pos(0x300, 0)+"]" {
		t.Fatalf("bob got %v", got)
	}
	// Not visible yet: asked again, then refused.
	if _, err := h.Subscribe(context.Background(), b, pB, nil, answer(true, 90)); !errors.Is(err, ErrAccessUnsettled) {
		t.Fatalf("before visible: %v", err)
	}
	// Visible, and bob still a member (it was a conservative revocation).
	res, err := h.Subscribe(context.Background(), b, pB, &events.Position{LSN: 0x200}, answer(true))
	if err != nil || !res.Resync {
		t.Fatalf("after: %+v %v", res, err)
	}
}

// TestAuthorizeReadsCommittedState: REST is decided by a fresh lookup
// judged against the stream: a streamed removal not yet visible is final,
// a visible re-add is enough.
func TestAuthorizeReadsCommittedState(t *testing.T) {
	h := newHub(t, Config{QueueSize: 16, AccessWait: 50 * time.Millisecond})
	ok, err := h.Authorize(context.Background(), pA, uBob, answer(true))
	if err != nil || !ok {
		t.Fatalf("member: %v %v", ok, err)
	}
	h.Publish(removal(0x300, 77))
	if ok, err := h.Authorize(context.Background(), pA, uBob, answer(true, 77)); err != nil || ok {
		t.Fatalf("removal streamed, not visible: %v %v", ok, err)
	}
	if ok, err := h.Authorize(context.Background(), pA, uBob, answer(false)); err != nil || ok {
		t.Fatalf("removal visible: %v %v", ok, err)
	}
	if ok, err := h.Authorize(context.Background(), pA, uBob, answer(true)); err != nil || !ok {
		t.Fatalf("re-added, visible: %v %v", ok, err)
	}
	h.Publish(grant(0x400, 80))
	if _, err := h.Authorize(context.Background(), pA, uBob, answer(true, 80)); !errors.Is(err, ErrAccessUnsettled) {
		t.Fatalf("grant streamed, not visible: %v", err)
	}
}

// TestSuspend: while access changes cannot be followed, every
// subscription is revoked and none is granted.
func TestSuspend(t *testing.T) {
	h := newHub(t, Config{QueueSize: 16, AccessWait: time.Second})
	a := h.NewClient("alice")
	subscribe(t, h, a, pA, nil)
	h.Suspend("publication lacks project_members")
	if got := frames(a); len(got) != 2 || got[1] != "subscription_revoked@"+pos(0xFF, ^uint32(0)) {
		t.Fatalf("got %v", got)
	}
	if _, err := h.Subscribe(context.Background(), a, pA, nil, allow); !errors.Is(err, ErrAccessSuspended) {
		t.Fatalf("suspended: %v", err)
	}
	h.Resume()
	subscribe(t, h, a, pA, nil)
}
