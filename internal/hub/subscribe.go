package hub

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/walcast/walcast/internal/access"
	"github.com/walcast/walcast/internal/events"
)

// Applies reports whether the revocation takes access from userID.
func applies(r *events.Revocation, userID string) bool {
	return r.UserID == "" || r.UserID == userID
}

// Subscription describes an accepted subscription.
type Subscription struct {
	// Position is the subscribed frame's position: every event of the
	// project after it reaches the client.
	Position events.Position
	// Resync is set when the resume position could not be served.
	Resync bool
	// Replayed counts history events sent before the subscribed frame.
	Replayed int
}

// Lookup asks whether the user may see the project. fresh asks it to
// bypass any cache: the hub found a cached answer older than an access
// change it has seen.
type Lookup func(ctx context.Context, fresh bool) (access.Proof, error)

// Subscribe subscribes c to projectID. lookup runs without the hub's lock
// (it may ask the database); events published meanwhile are held and
// delivered after it succeeds. Its answer is judged against the access
// changes the hub has published (access.Decide): an answer older than one
// of them is asked again, for up to Config.AccessWait, and an access change
// published while it ran starts the check over. With since set, retained
// events after since are sent first, or a resync_required when since is
// older than what is retained. A zero since is a resume that cannot be
// served (its origin is another stream's, Foreign): resync_required. The
// frames sent are: replayed events or resync_required, the events
// published while the subscription was checked, then subscribed.
func (h *Hub) Subscribe(ctx context.Context, c *Client, projectID string, since *events.Position, lookup Lookup) (Subscription, error) {
	select {
	case <-h.ready:
	case <-ctx.Done():
		return Subscription{}, fmt.Errorf("%w: %w", ErrNotReady, ctx.Err())
	}
	if since != nil {
		since = h.judgeSince(ctx, since)
	}
	deadline := h.now().Add(h.cfg.AccessWait)
	fresh := false
	for attempt := 0; ; attempt++ {
		res, verdict, err := h.trySubscribe(ctx, c, projectID, since, lookup, fresh)
		if verdict != access.Retry {
			return res, err
		}
		fresh = true
		if err := h.retryAfter(ctx, attempt, deadline); err != nil {
			return Subscription{}, err
		}
	}
}

// walEndEvery bounds how often a resume ahead of the hub asks the server.
const walEndEvery = 100 * time.Millisecond

// judgeSince returns since, or a zero position (answered resync_required)
// when since is ahead of everything this hub had when its stream started
// and of everything published since, and, where Config.WALEnd can say,
// ahead of the server's WAL too: forged, or of another cluster. A since
// within the server's WAL is one this hub has not been given yet (a
// replica whose stream lags another's): served when it arrives.
func (h *Hub) judgeSince(ctx context.Context, since *events.Position) *events.Position {
	h.mu.Lock()
	ahead := !h.history.IsZero() && since.Compare(h.last) > 0 && since.Compare(h.history) > 0
	h.unlock()
	if !ahead {
		return since
	}
	if h.cfg.WALEnd != nil && since.LSN < h.walEnd(ctx) {
		return since
	}
	return &events.Position{}
}

// walEnd is the server's WAL end as Config.WALEnd reads it, asked at most
// every walEndEvery: a client may send any since, and each must not cost
// a query on the pool that membership lookups and REST share. The WAL end
// only grows, so an older reading errs towards resync_required.
func (h *Hub) walEnd(ctx context.Context) uint64 {
	h.walEndMu.Lock()
	defer h.walEndMu.Unlock()
	if now := h.now(); now.Sub(h.walEndAt) >= walEndEvery {
		if end, err := h.cfg.WALEnd(ctx); err == nil {
			h.walEndSeen = max(h.walEndSeen, end)
		}
		h.walEndAt = now
	}
	return h.walEndSeen
}

// retryAfter counts a stale answer and waits before asking again: at once
// the first time (a cached answer is replaced by a fresh one), then from
// 2 ms up to 100 ms (a commit becomes visible within a few milliseconds
// unless a synchronous standby holds it). Past deadline it fails closed.
func (h *Hub) retryAfter(ctx context.Context, attempt int, deadline time.Time) error {
	h.metrics.StaleLookups.Inc()
	if attempt == 0 {
		return nil
	}
	if !h.now().Before(deadline) {
		return ErrAccessUnsettled
	}
	t := time.NewTimer(min(time.Millisecond<<min(attempt, 7), 100*time.Millisecond))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// trySubscribe registers a pending subscription, looks the user up and
// decides; on Retry nothing is left registered.
func (h *Hub) trySubscribe(ctx context.Context, c *Client, projectID string, since *events.Position, lookup Lookup, fresh bool) (Subscription, access.Verdict, error) {
	h.mu.Lock()
	switch {
	case c.dropped:
		h.unlock()
		return Subscription{}, access.Deny, ErrClientClosed
	case c.subs[projectID] != nil:
		h.unlock()
		return Subscription{}, access.Deny, ErrAlreadySubscribed
	case h.cfg.MaxSubscriptions > 0 && len(c.subs) >= h.cfg.MaxSubscriptions:
		h.unlock()
		return Subscription{}, access.Deny, ErrTooManySubs
	case h.suspended != "":
		reason := h.suspended
		h.unlock()
		return Subscription{}, access.Deny, fmt.Errorf("%w: %s", ErrAccessSuspended, reason)
	}
	s := &subscription{client: c, projectID: projectID, state: subPending, from: h.last}
	switch {
	case since != nil:
		s.skipThrough = *since
	case h.history.Compare(h.last) > 0:
		s.skipThrough = h.history
	}
	c.subs[projectID] = s
	h.topic(projectID).subs[c] = s
	// Every access change from here on either reaches s (a revocation
	// ends it while pending) or shows in the ledger below.
	before := h.ledger.Newest(projectID, c.userID).Seq
	after := h.ledger.Seq()
	h.unlock()

	proof, err := lookup(ctx, fresh)
	if proof.Fresh {
		proof.After = after
	}

	h.mu.Lock()
	defer h.unlock()
	if err != nil || c.dropped || h.suspended != "" {
		h.detach(s)
		switch {
		case err != nil:
		case c.dropped:
			err = ErrClientClosed
		default:
			err = fmt.Errorf("%w: %s", ErrAccessSuspended, h.suspended)
		}
		return Subscription{}, access.Deny, err
	}
	h.ledger.Observe(proof.Snapshot)
	if h.ledger.Newest(projectID, c.userID).Seq != before {
		// Access changed while the lookup ran: judge a new lookup
		// against the change, from a new registration.
		h.detach(s)
		return Subscription{}, access.Retry, nil
	}
	h.scratch = h.ledger.Concerning(projectID, c.userID, h.scratch[:0])
	switch v := access.Decide(h.scratch, proof, access.ForSubscribe); v {
	case access.Deny:
		h.detach(s)
		return Subscription{}, v, ErrForbidden
	case access.Retry:
		h.detach(s)
		return Subscription{}, v, nil
	}

	res := Subscription{Position: h.last}
	if since != nil && (since.IsZero() || since.Compare(s.from) < 0 || (!h.gapAt.IsZero() && since.Compare(h.gapAt) <= 0)) {
		// History covers (since, s.from]; s.buf covers what came after.
		res = h.replay(c, projectID, *since, s.from, res)
	}
	// s.buf holds only frames past the resume position (skipThrough).
	if len(s.buf) > 0 {
		hist := h.catchingUp(s.buf[len(s.buf)-1])
		h.enqueue(c, Item{Batch: s.buf, Replayed: hist, catchUp: hist})
	}
	s.buf = nil
	if s.skipThrough.Compare(h.last) > 0 {
		// The hub is replaying history the client has seen (it came
		// back before walcast's replay of the slot) or does not need (it
		// resumes from nothing): it goes live after it.
		res.Position = s.skipThrough
	}
	h.enqueue(c, Item{Frame: &Frame{Data: events.SubscribedFrame(projectID, res.Position, h.cfg.Origin), Type: events.TypeSubscribed, Position: res.Position}})
	if !h.downSince.IsZero() {
		h.enqueue(c, Item{Frame: &Frame{Data: events.StreamFrame(projectID, true, h.downSince), Type: events.TypeStreamDown}})
	}
	if c.dropped {
		h.detach(s)
		return Subscription{}, access.Deny, ErrClientClosed
	}
	s.state = subActive
	h.metrics.Subscriptions.Inc()
	h.joined(h.topics[projectID], s)
	return res, access.Allow, nil
}

// Authorize decides a request that reads or writes committed state (the
// REST routes): lookup must be fresh, and its answer is judged against the
// access changes the hub has published like a subscription's, except that
// a grant the database shows is enough (the request reads the database,
// not the stream).
func (h *Hub) Authorize(ctx context.Context, projectID, userID string, lookup Lookup) (bool, error) {
	deadline := h.now().Add(h.cfg.AccessWait)
	for attempt := 0; ; attempt++ {
		h.mu.Lock()
		after := h.ledger.Seq()
		h.unlock()
		proof, err := lookup(ctx, true)
		if err != nil {
			return false, err
		}
		proof.Fresh, proof.After = true, after
		h.mu.Lock()
		h.ledger.Observe(proof.Snapshot)
		h.scratch = h.ledger.Concerning(projectID, userID, h.scratch[:0])
		v := access.Decide(h.scratch, proof, access.ForRead)
		h.unlock()
		if v != access.Retry {
			return v == access.Allow, nil
		}
		if err := h.retryAfter(ctx, attempt, deadline); err != nil {
			return false, err
		}
	}
}

// Suspend refuses every new subscription, with reason, until Resume:
// walcast cannot see access changes (a table that grants access left the
// publication). It revokes every subscription now, fail-closed.
func (h *Hub) Suspend(reason string) {
	h.mu.Lock()
	defer h.unlock()
	if h.suspended != "" {
		h.suspended = reason
		return
	}
	h.suspended = reason
	h.ledger.Record("", "", access.Unknown, 0, h.now())
	rev := &events.Revocation{Reason: events.ReasonMemberRemoved, At: h.last, Conservative: true}
	f := &Frame{Type: events.TypeSubscriptionRevoked, Position: h.last, revoke: rev}
	for _, t := range h.topics {
		for c, s := range t.subs {
			if applies(rev, c.userID) {
				h.revoke(s, f)
			}
		}
	}
}

// Resume ends Suspend.
func (h *Hub) Resume() {
	h.mu.Lock()
	defer h.unlock()
	h.suspended = ""
}

// ErrForbidden is returned when the user may not see the project.
var ErrForbidden = errors.New("not a member of this project")

// ErrAccessUnsettled is returned when every membership answer within
// Config.AccessWait was older than an access change already streamed.
var ErrAccessUnsettled = access.ErrUnsettled

// ErrAccessSuspended is returned while Suspend is in force.
var ErrAccessSuspended = errors.New("access changes cannot be followed")

// replay sends the retained events of projectID in (since, through], or a
// resync_required at through when they cannot all be served.
func (h *Hub) replay(c *Client, projectID string, since, through events.Position, res Subscription) Subscription {
	t := h.topic(projectID)
	gap := since.IsZero() || since.Compare(h.floor) < 0 || since.Compare(t.lost) < 0 || since.Compare(h.lostFloor) < 0 ||
		(!h.gapAt.IsZero() && since.Compare(h.gapAt) <= 0)
	var frames []*Frame
	for _, f := range t.history {
		if gap || f.Position.Compare(through) > 0 {
			break
		}
		if f.Position.Compare(since) <= 0 {
			continue
		}
		if f.revoke != nil && applies(f.revoke, c.userID) {
			// The user lost access in the replayed range and has it again
			// now: what happened in between is not theirs to see.
			gap = true
			break
		}
		frames = append(frames, f)
	}
	if gap {
		// At through, not at the newest position: what was published
		// after through (held while the subscription was checked) follows
		// it and must sort after it.
		h.enqueue(c, Item{Frame: &Frame{Data: events.ResyncFrame(projectID, through, h.cfg.Origin), Type: events.TypeResyncRequired, Position: through}})
		h.metrics.ResyncsSent.Inc()
		res.Resync = true
		return res
	}
	if len(frames) > 0 {
		h.enqueue(c, Item{Batch: frames, Replayed: true})
	}
	res.Replayed = len(frames)
	return res
}

// Unsubscribe ends c's subscription to projectID and queues the
// unsubscribed frame after every event already queued.
func (h *Hub) Unsubscribe(c *Client, projectID string, frame []byte) error {
	h.mu.Lock()
	defer h.unlock()
	s := c.subs[projectID]
	if s == nil || s.state != subActive {
		return ErrNotSubscribed
	}
	h.detach(s)
	h.enqueue(c, Item{Frame: &Frame{Data: frame, Type: "unsubscribed"}})
	return nil
}

// SubscriberIDs lists the distinct users subscribed to projectID.
func (h *Hub) SubscriberIDs(projectID string) []string {
	h.mu.Lock()
	defer h.unlock()
	t, ok := h.topics[projectID]
	if !ok {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	for c := range t.subs {
		if !seen[c.userID] {
			seen[c.userID] = true
			out = append(out, c.userID)
		}
	}
	return out
}

// Revoke ends userID's subscriptions to projectID (everyone's when userID is
// empty) now, with a subscription_revoked frame at the newest position. The
// NOTIFY source uses it; the WAL source revokes through events instead.
func (h *Hub) Revoke(projectID, userID, reason string) {
	h.mu.Lock()
	defer h.unlock()
	// NOTIFY tells of a change only once it is visible: no transaction id.
	h.ledger.Record(projectID, userID, access.Removed, 0, h.now())
	t, ok := h.topics[projectID]
	if !ok {
		return
	}
	rev := &events.Revocation{UserID: userID, Reason: reason, At: h.last}
	f := &Frame{Type: events.TypeSubscriptionRevoked, Position: h.last, revoke: rev}
	for c, s := range t.subs {
		if applies(rev, c.userID) {
			h.revoke(s, f)
		}
	}
}
