package hub

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/walcast/walcast/internal/access"
	"github.com/walcast/walcast/internal/events"
	"github.com/walcast/walcast/internal/metrics"
)

// Config bounds the hub.
type Config struct {
	// QueueSize is each client's send queue, in frames.
	QueueSize int
	// HistorySize and HistoryAge bound each project's retained events,
	// HistoryBytes what all of them hold together (0: no byte bound).
	HistorySize  int
	HistoryAge   time.Duration
	HistoryBytes int64
	// MaxSubscriptions caps the subscriptions of one client; 0 means no cap.
	MaxSubscriptions int
	// AccessWait bounds how long a subscribe or a REST check asks the
	// database again while its answer is older than an access change the
	// stream has brought; past it the check fails closed (ErrAccessUnsettled).
	AccessWait time.Duration
	// WALEnd, when set, reads the server's WAL end now: a resume ahead of
	// what the hub has is judged against it (judgeSince).
	WALEnd func(ctx context.Context) (uint64, error)
	// Origin names where positions come from (wal.Origin); it is sent
	// with subscribed and resync_required, and a resume that names
	// another one is answered resync_required (Foreign).
	Origin string
	// AccessKeep is how long an access change is remembered at least;
	// AccessMax bounds how many are (package access).
	AccessKeep time.Duration
	AccessMax  int
}

// Frame is one server-to-client frame, shared by every queue it is put on.
type Frame struct {
	Data []byte
	// Type is the frame's type, or events.TypePublished for every event
	// the application published: it labels walcast_events_sent_total.
	Type       string
	Position   events.Position
	CommitTime time.Time
	// revoke is kept for replay: frames of a revoking change are not
	// replayed to the users they revoked.
	revoke *events.Revocation
}

// Item is one entry of a client queue: one frame, or a batch of frames
// (a replay, or what was published while a subscription was checked) that
// takes one place in the queue however long it is, so resuming far back
// never overflows a client.
type Item struct {
	Frame *Frame
	Batch []*Frame
	// Replayed marks history sent on resume, whose commit→write latency is
	// not a delivery latency.
	Replayed bool
	// catchUp marks history the hub replays after a restart (see
	// catchingUp): it does not count against the queue bound.
	catchUp bool
	// weight is what the item counts against the queue bound.
	weight int64
}

// Errors of Subscribe.
var (
	ErrAlreadySubscribed = errors.New("already subscribed to this project")
	ErrNotSubscribed     = errors.New("not subscribed to this project")
	ErrTooManySubs       = errors.New("too many subscriptions on this socket")
	ErrClientClosed      = errors.New("client is closed")
	ErrNotReady          = errors.New("the WAL stream has not started yet")
)

type subState uint8

const (
	subPending subState = iota
	subActive
)

type subscription struct {
	client    *Client
	projectID string
	state     subState
	// watching: the client asked for presence frames of the project.
	watching bool
	// buf holds live frames published while the subscription is pending.
	buf []*Frame
	// from is the hub's position when the subscription was registered.
	from events.Position
	// skipThrough drops frames at or before the client's resume position,
	// or, for a client with none, before the stream's start: events the
	// hub publishes while it replays history the client does not need.
	skipThrough events.Position
}

type topic struct {
	subs    map[*Client]*subscription
	history []*Frame // ascending positions
	times   []time.Time
	// lost is the newest position evicted from history: a resume from
	// before it cannot be served.
	lost events.Position
	// present are the users with a live subscription here, by user id;
	// remote what other replicas say, by user id and replica.
	present map[string]*member
	remote  map[string]map[string]Presence
}

// Hub fans events out to subscribed clients.
type Hub struct {
	cfg     Config
	metrics *metrics.Metrics
	now     func() time.Time

	mu       sync.Mutex
	topics   map[string]*topic
	last     events.Position // newest published position, or the floor
	floor    events.Position // where the hub's knowledge starts
	floorSet bool
	ready    chan struct{}
	// lostFloor is the newest position evicted from a topic since removed.
	lostFloor events.Position
	retained  int
	// retainedBytes is the payload the histories hold.
	retainedBytes int64
	lastCommit    time.Time
	// ledger remembers recent access changes, recorded under mu as they
	// are published, so a subscription registered before one is revoked by
	// it and a lookup made after one is checked against it.
	ledger  *access.Ledger
	scratch []access.Transition // Ledger.Concerning's, under mu
	// suspended, when set, says why no subscription can be granted now
	// (a table that grants access is missing from the publication).
	suspended string
	// history is the newest position committed before the stream last
	// started: events up to it are history the hub is catching up with.
	history events.Position
	// downSince, when set, is when the stream went down, as subscribers
	// were told (stream_down); zero while it is up.
	downSince time.Time
	// gaps has a token when changes may have been lost since it was last
	// read (Gaps).
	gaps chan struct{}
	// walEndSeen is the newest WAL end read (walEnd), at walEndAt; a
	// mutex of its own, held across that read, so it never holds up mu.
	walEndMu   sync.Mutex
	walEndSeen uint64
	walEndAt   time.Time
	// dropping are clients found slow under mu, detached by unlock.
	dropping []*Client
	// onPresence and onBroadcast (Link) tell the other replicas.
	onPresence  func(projectID, userID string, p *Presence)
	onBroadcast func(projectID, event, from string, payload json.RawMessage)
	// gapAt is the newest position at which every project was told to
	// resync because changes may have been lost: a resume from at or
	// before it cannot be served seamlessly.
	gapAt events.Position
}

// New returns a Hub.
func New(cfg Config, m *metrics.Metrics) *Hub {
	return &Hub{cfg: cfg, metrics: m, now: time.Now, topics: make(map[string]*topic), ready: make(chan struct{}), gaps: make(chan struct{}, 1),
		ledger: access.NewLedger(cfg.AccessKeep, cfg.AccessMax)}
}

// SetFloor tells the hub where the stream starts: the slot's confirmed
// position. Every event published later sorts after the returned floor. Only
// the first call before any event counts; later streams continue the hub's
// own sequence.
func (h *Hub) SetFloor(confirmedLSN uint64) {
	h.mu.Lock()
	defer h.unlock()
	if h.floorSet {
		return
	}
	h.floorSet = true
	if confirmedLSN > 0 {
		// Events replayed from the slot have commit LSNs at or after the
		// confirmed position, so they all sort after this one.
		h.last = events.Position{LSN: confirmedLSN - 1, Index: ^uint32(0)}
	}
	h.floor = h.last
	close(h.ready)
}

// CatchUp tells the hub the server's WAL end when the stream (re)starts:
// events committed before it are history the hub replays (the hold-back
// window), not news. A subscription without a resume position taken while
// the hub catches up starts after that history.
func (h *Hub) CatchUp(walEnd uint64) {
	h.mu.Lock()
	defer h.unlock()
	if walEnd > 0 {
		h.history = events.Position{LSN: walEnd - 1, Index: ^uint32(0)}
	}
}

// Gap tells the hub that changes before walPos may never reach it (the
// slot was dropped and re-created, or moved past what this process had
// received): every project with subscribers or history is told to resync
// at a position just before walPos, and no resume from before it replays
// as if nothing had happened.
func (h *Hub) Gap(walPos uint64, commit time.Time) {
	h.mu.Lock()
	defer h.unlock()
	pos := h.last
	if walPos > 0 {
		if p := (events.Position{LSN: walPos - 1, Index: ^uint32(0)}); p.Compare(h.last) > 0 {
			pos = p
		}
	}
	h.resyncEverywhere(pos, commit)
}

// StreamDown tells every subscriber, once, that changes cannot be read
// since the given time (the replication stream has been down past a
// bound): their sockets stay open and will deliver, late, what the slot
// replays, or a resync_required. New subscriptions are told too.
func (h *Hub) StreamDown(since time.Time) {
	h.mu.Lock()
	defer h.unlock()
	if !h.downSince.IsZero() {
		return
	}
	h.downSince = since
	h.streamFrames(true)
}

// StreamUp ends StreamDown: every subscriber is told changes flow again.
func (h *Hub) StreamUp() {
	h.mu.Lock()
	defer h.unlock()
	if h.downSince.IsZero() {
		return
	}
	h.streamFrames(false)
	h.downSince = time.Time{}
}

func (h *Hub) streamFrames(down bool) {
	typ := events.TypeStreamUp
	if down {
		typ = events.TypeStreamDown
	}
	for pid, t := range h.topics {
		f := &Frame{Data: events.StreamFrame(pid, down, h.downSince), Type: typ} // shared: frames are read-only
		for c, s := range t.subs {
			if s.state == subActive {
				h.enqueue(c, Item{Frame: f})
			}
		}
	}
}

// ResyncAll tells every project to resync now: changes of a watched table
// may have been lost (it left the publication and came back) anywhere up
// to the server's present. While the hub catches up with history, that is
// past everything it had when the stream started: history still to come
// is covered by the resync (and dropped), and subscriptions that start
// after that history are told too.
func (h *Hub) ResyncAll(commit time.Time) {
	h.mu.Lock()
	defer h.unlock()
	pos := h.last
	if h.history.Compare(pos) > 0 {
		pos = h.history
	}
	h.resyncEverywhere(pos, commit)
}

func (h *Hub) resyncEverywhere(pos events.Position, commit time.Time) {
	h.last = pos
	if pos.Compare(h.gapAt) > 0 {
		h.gapAt = pos
	}
	now := h.now()
	for pid, t := range h.topics {
		f := &Frame{Data: events.ResyncFrame(pid, pos, h.cfg.Origin), Type: events.TypeResyncRequired, Position: pos, CommitTime: commit}
		h.append(t, f, now)
		h.fanout(t, f)
	}
	h.metrics.StreamGaps.Inc()
	select {
	case h.gaps <- struct{}{}:
	default: // a recheck is already due
	}
}

// Gaps signals, once per run of them, that changes may have been lost:
// membership removals among them, which no revocation will bring. Whoever
// reads it checks every subscription against the database (relay.Recheck).
func (h *Hub) Gaps() <-chan struct{} { return h.gaps }

// SubscribedProjects lists the projects that have subscribers.
func (h *Hub) SubscribedProjects() []string {
	h.mu.Lock()
	defer h.unlock()
	out := make([]string, 0, len(h.topics))
	for pid, t := range h.topics {
		if len(t.subs) > 0 {
			out = append(out, pid)
		}
	}
	return out
}

// SetFloorAt is SetFloor for a floor that is a position: the events the
// hub will be given are exactly those after pos (cluster mode, where the
// floor is the stream's oldest retained event).
func (h *Hub) SetFloorAt(pos events.Position) {
	h.mu.Lock()
	defer h.unlock()
	if h.floorSet {
		return
	}
	h.floorSet = true
	h.last, h.floor = pos, pos
	close(h.ready)
}

// Foreign reports whether a resume naming origin comes from another
// stream than this hub's: another cluster, timeline or slot, or, where the
// hub has no origin, any named one.
func (h *Hub) Foreign(origin string) bool {
	return origin != "" && origin != h.cfg.Origin
}

// Last returns the newest published position (or the floor).
func (h *Hub) Last() events.Position {
	h.mu.Lock()
	defer h.unlock()
	return h.last
}

// Publish fans one committed transaction's events out, in order. It never
// blocks on a client.
func (h *Hub) Publish(evs []events.Event) {
	if len(evs) == 0 {
		return
	}
	now := h.now()
	h.mu.Lock()
	defer h.unlock()
	for i := 0; i < len(evs); {
		ev := &evs[i]
		if ev.Position.Compare(h.last) <= 0 {
			i++
			continue // already published (a replay of what the hub has)
		}
		if ev.AllProjects {
			h.last, h.lastCommit = ev.Position, ev.CommitTime
			if ev.Revoke != nil {
				h.recordAccess(ev, now)
				h.revokeEverywhere(ev.Revoke, ev.CommitTime, now)
				i++
				continue
			}
			// Changes may be lost here (a gap, an unmappable change):
			// no resume from before it replays across it, in any project.
			h.resyncEverywhere(ev.Position, ev.CommitTime)
			i++
			continue
		}
		// A run of consecutive events of one project without revocations
		// (typically a row's cache_invalidate and domain event) goes to each
		// subscriber as one queue item: one channel send and one wake-up.
		j := i + 1
		for j < len(evs) && evs[j].ProjectID == ev.ProjectID && evs[j].Revoke == nil && !evs[j].AllProjects && ev.Revoke == nil {
			j++
		}
		t := h.topic(ev.ProjectID)
		run := make([]*Frame, 0, j-i)
		for k := i; k < j; k++ {
			e := &evs[k]
			if e.Position.Compare(h.last) <= 0 {
				continue
			}
			f := &Frame{Data: e.Payload, Type: e.Type, Position: e.Position, CommitTime: e.CommitTime, revoke: e.Revoke}
			if e.Published {
				f.Type = events.TypePublished // the application's types are not metric labels
			}
			h.last, h.lastCommit = e.Position, e.CommitTime
			h.recordAccess(e, now)
			h.append(t, f, now)
			run = append(run, f)
		}
		if len(run) == 1 {
			h.fanout(t, run[0])
		} else if len(run) > 1 {
			h.fanoutRun(t, run)
		}
		i = j
	}
	h.metrics.HistoryEvents.Set(float64(h.retained))
}

// recordAccess notes in the ledger the access change ev makes, if any: a
// revocation where it takes effect, a grant.
func (h *Hub) recordAccess(ev *events.Event, now time.Time) {
	if r := ev.Revoke; r != nil && r.At == ev.Position {
		kind := access.Removed
		if r.Conservative {
			kind = access.Unknown
		}
		h.ledger.Record(ev.ProjectID, r.UserID, kind, ev.Xid, now)
	}
	if ev.Grant != "" {
		h.ledger.Record(ev.ProjectID, ev.Grant, access.Granted, ev.Xid, now)
	}
}

// revokeEverywhere ends every subscription at rev.At, and keeps a frame of
// it in every project's history so that no resume replays across it.
func (h *Hub) revokeEverywhere(rev *events.Revocation, commit, now time.Time) {
	f := &Frame{Type: events.TypeSubscriptionRevoked, Position: rev.At, CommitTime: commit, revoke: rev}
	for _, t := range h.topics {
		h.append(t, f, now)
		h.fanout(t, f)
	}
}

// catchingUp reports whether f was committed before the stream started:
// history the hub is replaying, not news.
func (h *Hub) catchingUp(f *Frame) bool {
	return !h.history.IsZero() && f.Position.Compare(h.history) <= 0
}

// fanoutRun delivers frames of one project, none of them revoking, as one
// item per subscriber.
func (h *Hub) fanoutRun(t *topic, run []*Frame) {
	hist := h.catchingUp(run[len(run)-1])
	for c, s := range t.subs {
		if s.state == subPending {
			h.hold(c, s, hist, run...)
			continue
		}
		if !s.skipThrough.IsZero() && run[0].Position.Compare(s.skipThrough) <= 0 {
			for _, f := range run {
				if f.Position.Compare(s.skipThrough) > 0 {
					h.enqueue(c, Item{Frame: f, Replayed: hist, catchUp: hist})
				}
			}
			continue
		}
		h.enqueue(c, Item{Batch: run, Replayed: hist, catchUp: hist})
	}
}

func (h *Hub) topic(pid string) *topic {
	t, ok := h.topics[pid]
	if !ok {
		t = &topic{subs: make(map[*Client]*subscription)}
		h.topics[pid] = t
		h.metrics.HubTopics.Set(float64(len(h.topics)))
	}
	return t
}

func (h *Hub) append(t *topic, f *Frame, now time.Time) {
	if h.cfg.HistorySize == 0 {
		t.lost = f.Position
		return
	}
	if len(t.history) >= h.cfg.HistorySize {
		h.evictOldest(t)
	}
	t.history = append(t.history, f)
	t.times = append(t.times, now)
	h.retained++
	h.retainedBytes += int64(len(f.Data))
	// Past the byte bound the project that grows gives up its oldest
	// events first, then the others (a resume from before them resyncs).
	for h.cfg.HistoryBytes > 0 && h.retainedBytes > h.cfg.HistoryBytes && len(t.history) > 1 {
		h.evictOldest(t)
	}
	if h.cfg.HistoryBytes <= 0 || h.retainedBytes <= h.cfg.HistoryBytes {
		return
	}
	for _, o := range h.topics {
		for len(o.history) > 0 && h.retainedBytes > h.cfg.HistoryBytes && (o != t || len(o.history) > 1) {
			h.evictOldest(o)
		}
		if h.retainedBytes <= h.cfg.HistoryBytes {
			break
		}
	}
}

// evictOldest drops t's oldest retained event.
func (h *Hub) evictOldest(t *topic) {
	t.lost = t.history[0].Position
	h.retainedBytes -= int64(len(t.history[0].Data))
	t.history[0] = nil
	t.history = t.history[1:]
	t.times = t.times[1:]
	h.retained--
}

func (h *Hub) fanout(t *topic, f *Frame) {
	hist := h.catchingUp(f)
	for c, s := range t.subs {
		if f.revoke != nil && applies(f.revoke, c.userID) {
			if f.Position == f.revoke.At {
				h.revoke(s, f)
			}
			continue
		}
		if s.state == subPending {
			h.hold(c, s, hist, f)
			continue
		}
		if f.Position.Compare(s.skipThrough) <= 0 {
			continue
		}
		h.enqueue(c, Item{Frame: f, Replayed: hist, catchUp: hist})
	}
}

// hold keeps frames for a pending subscription until its check ends. Only
// what the client will be sent counts: not frames at or before its resume
// position (a replay after a restart). Past the client's queue bound it is
// slow, unless the hub is replaying history.
func (h *Hub) hold(c *Client, s *subscription, hist bool, frames ...*Frame) {
	for _, f := range frames {
		if f.Position.Compare(s.skipThrough) > 0 {
			s.buf = append(s.buf, f)
		}
	}
	if len(s.buf) > h.cfg.QueueSize && !hist {
		h.dropSlow(c)
	}
}

// revoke ends s at f's position with a subscription_revoked frame.
func (h *Hub) revoke(s *subscription, f *Frame) {
	if s.state == subPending {
		// Its check, when it ends, finds it detached and fails.
		h.detach(s)
		return
	}
	rf := &Frame{Data: events.RevokedFrame(s.projectID, f.revoke.Reason, f.Position), Type: events.TypeSubscriptionRevoked, Position: f.Position, CommitTime: f.CommitTime}
	h.detach(s)
	h.enqueue(s.client, Item{Frame: rf})
	h.metrics.Revocations.WithLabelValues(f.revoke.Reason).Inc()
}

// detach removes s from its topic and client.
func (h *Hub) detach(s *subscription) {
	if t, ok := h.topics[s.projectID]; ok {
		if cur, ok := t.subs[s.client]; ok && cur == s {
			delete(t.subs, s.client)
		}
	}
	if cur, ok := s.client.subs[s.projectID]; ok && cur == s {
		delete(s.client.subs, s.projectID)
		if s.state == subActive {
			h.metrics.Subscriptions.Dec()
			if t, ok := h.topics[s.projectID]; ok {
				h.left(t, s)
			}
		}
	}
}

// enqueue puts one item on c's queue, or marks c slow when the frames
// queued and not yet written would pass the bound. A replay counts as one:
// its length is bounded by the history, not by how fast the client reads.
func (h *Hub) enqueue(c *Client, it Item) {
	if c.dropped {
		return
	}
	it.weight = 1
	if it.catchUp {
		// History the hub replays after a (re)start, committed before
		// the stream began: a resuming client is never closed as slow
		// for it. What it holds is bounded by the hold-back window the
		// slot replays, and the frames are shared.
		it.weight = 0
	}
	if !it.Replayed && len(it.Batch) > 1 {
		it.weight = int64(len(it.Batch))
	}
	if c.queued.Load()+it.weight > int64(h.cfg.QueueSize) {
		h.dropSlow(c)
		return
	}
	c.queued.Add(it.weight)
	c.push(it)
}

// dropSlow detaches every subscription of c and tells its socket to close
// with 4008. c never receives another frame.
func (h *Hub) dropSlow(c *Client) {
	if c.dropped {
		return
	}
	c.dropped = true // nothing more is queued for it from now on
	h.dropping = append(h.dropping, c)
	h.metrics.SlowConsumerCloses.Inc()
	close(c.slow)
	c.Wake()
}

// unlock ends a critical section of mu. Clients found slow during it
// leave their subscriptions (and presence) here, once the operation that
// found them has told everyone what it had to: a detach in the middle of
// a fan-out would send some watchers a user's leave before the join that
// caused it, and pull state from under the operation.
func (h *Hub) unlock() {
	for len(h.dropping) > 0 {
		c := h.dropping[len(h.dropping)-1]
		h.dropping = h.dropping[:len(h.dropping)-1]
		for _, s := range c.subs {
			h.detach(s)
		}
	}
	h.mu.Unlock()
}

// Sweep drops history older than the configured age.
func (h *Hub) Sweep() {
	h.mu.Lock()
	defer h.unlock()
	cutoff := h.now().Add(-h.cfg.HistoryAge)
	if h.cfg.HistoryAge <= 0 {
		cutoff = time.Time{}
	}
	for pid, t := range h.topics {
		n := 0
		for n < len(t.times) && t.times[n].Before(cutoff) {
			n++
		}
		if n > 0 {
			t.lost = t.history[n-1].Position
			for _, f := range t.history[:n] {
				h.retainedBytes -= int64(len(f.Data))
			}
			clear(t.history[:n])
			t.history = t.history[n:]
			t.times = t.times[n:]
			h.retained -= n
		}
		if len(t.history) == 0 && len(t.subs) == 0 && len(t.remote) == 0 {
			if t.lost.Compare(h.lostFloor) > 0 {
				h.lostFloor = t.lost
			}
			delete(h.topics, pid)
		}
	}
	h.ledger.Prune(h.now())
	h.metrics.AccessLedger.Set(float64(h.ledger.Len()))
	h.metrics.HistoryEvents.Set(float64(h.retained))
	h.metrics.HubTopics.Set(float64(len(h.topics)))
}

// Run sweeps expired history until ctx ends.
func (h *Hub) Run(ctx context.Context) error {
	every := h.cfg.HistoryAge / 10
	if every <= 0 || every > 10*time.Second {
		every = 10 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			h.Sweep()
		}
	}
}

// SubscriptionCount returns the live subscriptions over all clients.
func (h *Hub) SubscriptionCount() int {
	h.mu.Lock()
	defer h.unlock()
	n := 0
	for _, t := range h.topics {
		for _, s := range t.subs {
			if s.state == subActive {
				n++
			}
		}
	}
	return n
}

// Retained returns the number of events kept for resume.
func (h *Hub) Retained() int {
	h.mu.Lock()
	defer h.unlock()
	return h.retained
}

// LastCommitTime is the commit time of the newest published event.
func (h *Hub) LastCommitTime() time.Time {
	h.mu.Lock()
	defer h.unlock()
	return h.lastCommit
}
