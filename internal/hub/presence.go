package hub

import (
	"encoding/json"
	"time"

	"github.com/walcast/walcast/internal/jsonx"
)

// Ephemeral frames: broadcast between a project's subscribers, and who is
// present in it. They are never written to the database, never kept in
// the history and carry no position; they reach only subscriptions that
// are live (subscribed sent, not revoked), so every rule of access holds
// for them as for events: a revoked or removed member leaves at once.
//
// In cluster mode other replicas' presence arrives through RemotePresence
// and RemoteSnapshot (package cluster), and this replica's changes leave
// through Link's callbacks: a user is present in a project while it has
// a live subscription on any replica.

// Frame types of the ephemeral frames.
const (
	TypeBroadcast     = "broadcast"
	TypePresenceState = "presence_state"
	TypePresenceDiff  = "presence_diff"
)

// Presence is what one user says about itself in one project, and since
// when it is online; Updated orders what two replicas say about the same
// user (the newest meta wins).
type Presence struct {
	Meta     json.RawMessage
	OnlineAt time.Time
	Updated  time.Time
}

// PresenceOf is one user's presence in one project.
type PresenceOf struct {
	ProjectID, UserID string
	Presence
}

// member is one user present in a project through this replica: its live
// subscriptions here, and what it said about itself.
type member struct {
	subs int
	Presence
}

// presenceEntry is a user as presence frames show it.
type presenceEntry struct {
	Meta     json.RawMessage `json:"meta"`
	OnlineAt string          `json:"online_at"`
}

func entryOf(p Presence) presenceEntry {
	meta := p.Meta
	if meta == nil {
		meta = json.RawMessage("{}")
	}
	return presenceEntry{Meta: meta, OnlineAt: p.OnlineAt.UTC().Format(time.RFC3339Nano)}
}

// view is a user's presence in t as this replica's watchers see it: from
// this replica's subscriptions and every other replica's, the earliest
// online_at and the newest meta.
func (t *topic) view(uid string) (Presence, bool) {
	var out Presence
	found := false
	merge := func(p Presence) {
		if !found || p.OnlineAt.Before(out.OnlineAt) {
			out.OnlineAt = p.OnlineAt
		}
		if !found || p.Updated.After(out.Updated) {
			out.Meta, out.Updated = p.Meta, p.Updated
		}
		found = true
	}
	if m := t.present[uid]; m != nil {
		merge(m.Presence)
	}
	for _, p := range t.remote[uid] {
		merge(p)
	}
	return out, found
}

// change applies mutate to t's presence of uid and tells the watchers
// (but except) what changed in the user's view: a join (new, or new
// meta) or a leave.
func (h *Hub) change(t *topic, projectID, uid string, except *Client, mutate func()) {
	before, was := t.view(uid)
	mutate()
	after, is := t.view(uid)
	switch {
	case is && (!was || string(before.Meta) != string(after.Meta) || !before.OnlineAt.Equal(after.OnlineAt)):
		h.presenceDiff(t, projectID, except, map[string]presenceEntry{uid: entryOf(after)}, nil)
	case was && !is:
		h.presenceDiff(t, projectID, except, nil, map[string]presenceEntry{uid: entryOf(before)})
	}
}

// announce tells the other replicas this replica's presence of uid in
// projectID changed (nil: gone from here).
func (h *Hub) announce(projectID, uid string, m *member) {
	if h.onPresence == nil {
		return
	}
	var p *Presence
	if m != nil {
		cp := m.Presence
		p = &cp
	}
	h.onPresence(projectID, uid, p)
}

// joined makes s's user present in t through this replica. Called once s
// is live.
func (h *Hub) joined(t *topic, s *subscription) {
	if t.present == nil {
		t.present = make(map[string]*member)
	}
	uid := s.client.userID
	if m := t.present[uid]; m != nil {
		m.subs++
		return
	}
	now := h.now()
	m := &member{subs: 1, Presence: Presence{OnlineAt: now, Updated: now}}
	if v, ok := t.view(uid); ok {
		// Present elsewhere: keep what it says there, as of when it said
		// it (a newer meta from elsewhere must still win).
		m.Meta, m.Updated = v.Meta, v.Updated
	}
	h.change(t, s.projectID, uid, s.client, func() { t.present[uid] = m })
	h.announce(s.projectID, uid, m)
}

// left ends s's part in its user's presence in t; past its last live
// subscription here, the user leaves unless another replica has it.
func (h *Hub) left(t *topic, s *subscription) {
	uid := s.client.userID
	m := t.present[uid]
	if m == nil {
		return
	}
	if m.subs--; m.subs > 0 {
		return
	}
	h.change(t, s.projectID, uid, nil, func() { delete(t.present, uid) })
	h.announce(s.projectID, uid, nil)
}

// watch makes s receive presence from now on: the project's
// presence_state, then every presence_diff.
func (h *Hub) watch(t *topic, s *subscription) {
	if s.watching {
		return
	}
	s.watching = true
	users := make(map[string]presenceEntry, len(t.present)+len(t.remote))
	for uid := range t.present {
		p, _ := t.view(uid)
		users[uid] = entryOf(p)
	}
	for uid := range t.remote {
		p, _ := t.view(uid)
		users[uid] = entryOf(p)
	}
	b, _ := jsonx.Marshal(struct {
		Type      string                   `json:"type"`
		ProjectID string                   `json:"project_id"`
		Users     map[string]presenceEntry `json:"users"`
	}{TypePresenceState, s.projectID, users})
	h.enqueue(s.client, Item{Frame: &Frame{Data: b, Type: TypePresenceState}})
}

// WatchPresence makes c's live subscription to projectID receive
// presence: presence_state now (unless it already watches), then every
// presence_diff.
func (h *Hub) WatchPresence(c *Client, projectID string) error {
	h.mu.Lock()
	defer h.unlock()
	t, s, err := h.live(c, projectID)
	if err != nil {
		return err
	}
	h.watch(t, s)
	return nil
}

// presenceDiff sends joins and leaves to every live subscriber of t that
// watches presence, but except.
func (h *Hub) presenceDiff(t *topic, projectID string, except *Client, joins, leaves map[string]presenceEntry) {
	if joins == nil {
		joins = map[string]presenceEntry{}
	}
	if leaves == nil {
		leaves = map[string]presenceEntry{}
	}
	b, _ := jsonx.Marshal(struct {
		Type      string                   `json:"type"`
		ProjectID string                   `json:"project_id"`
		Joins     map[string]presenceEntry `json:"joins"`
		Leaves    map[string]presenceEntry `json:"leaves"`
	}{TypePresenceDiff, projectID, joins, leaves})
	f := &Frame{Data: b, Type: TypePresenceDiff}
	for c, s := range t.subs {
		if s.state == subActive && s.watching && c != except {
			h.enqueue(c, Item{Frame: f})
		}
	}
}

// ephemeral queues f for every live subscriber of t but except.
func (h *Hub) ephemeral(t *topic, except *Client, f *Frame) {
	for c, s := range t.subs {
		if s.state == subActive && c != except {
			h.enqueue(c, Item{Frame: f})
		}
	}
}

// live returns c's live subscription to projectID and its topic.
func (h *Hub) live(c *Client, projectID string) (*topic, *subscription, error) {
	s := c.subs[projectID]
	if s == nil || s.state != subActive {
		return nil, nil, ErrNotSubscribed
	}
	return h.topics[projectID], s, nil
}

// SetPresence replaces what c's user says about itself in projectID (its
// meta, a JSON object), makes c's subscription watch presence, and tells
// every subscriber watching it, c included, with a presence_diff that
// joins the user with the new meta.
func (h *Hub) SetPresence(c *Client, projectID string, meta json.RawMessage) error {
	h.mu.Lock()
	defer h.unlock()
	t, s, err := h.live(c, projectID)
	if err != nil {
		return err
	}
	h.watch(t, s)
	m := t.present[c.userID]
	h.change(t, projectID, c.userID, nil, func() { m.Meta, m.Updated = meta, h.now() })
	h.announce(projectID, c.userID, m)
	return nil
}

// Broadcast sends an ephemeral event from c's user to the live
// subscribers of projectID (c itself only when self is set) and, through
// Link's callback, to the other replicas'.
func (h *Hub) Broadcast(c *Client, projectID, event string, payload json.RawMessage, self bool) error {
	h.mu.Lock()
	defer h.unlock()
	t, _, err := h.live(c, projectID)
	if err != nil {
		return err
	}
	except := c
	if self {
		except = nil
	}
	h.ephemeral(t, except, broadcastFrame(projectID, event, c.userID, payload))
	if h.onBroadcast != nil {
		h.onBroadcast(projectID, event, c.userID, payload)
	}
	return nil
}

// broadcastFrame builds a broadcast frame: here, never taken from another
// replica as bytes, so its type and fields are always walcast's.
func broadcastFrame(projectID, event, from string, payload json.RawMessage) *Frame {
	b, _ := jsonx.Marshal(struct {
		Type      string          `json:"type"`
		ProjectID string          `json:"project_id"`
		Event     string          `json:"event"`
		From      string          `json:"from"`
		Payload   json.RawMessage `json:"payload"`
	}{TypeBroadcast, projectID, event, from, payload})
	return &Frame{Data: b, Type: TypeBroadcast}
}

// RemoteBroadcast delivers a broadcast another replica's subscriber sent
// to this replica's live subscribers of projectID.
func (h *Hub) RemoteBroadcast(projectID, event, from string, payload json.RawMessage) {
	h.mu.Lock()
	defer h.unlock()
	if t, ok := h.topics[projectID]; ok {
		h.ephemeral(t, nil, broadcastFrame(projectID, event, from, payload))
	}
}

// RemotePresence records what replica says of uid in projectID (nil:
// the user is gone from there).
func (h *Hub) RemotePresence(replica, projectID, uid string, p *Presence) {
	h.mu.Lock()
	defer h.unlock()
	h.remote(replica, projectID, uid, p)
}

func (h *Hub) remote(replica, projectID, uid string, p *Presence) {
	t, ok := h.topics[projectID]
	if !ok {
		if p == nil {
			return
		}
		t = h.topic(projectID)
	}
	h.change(t, projectID, uid, nil, func() {
		if p == nil {
			delete(t.remote[uid], replica)
			if len(t.remote[uid]) == 0 {
				delete(t.remote, uid)
			}
			return
		}
		if t.remote == nil {
			t.remote = make(map[string]map[string]Presence)
		}
		if t.remote[uid] == nil {
			t.remote[uid] = make(map[string]Presence)
		}
		t.remote[uid][replica] = *p
		if m := t.present[uid]; m != nil && p.Updated.After(m.Updated) {
			// The user said something newer on another replica: this
			// replica's copy follows, so it does not come back when
			// that replica's sockets go.
			m.Meta, m.Updated = p.Meta, p.Updated
		}
	})
}

// RemoteSnapshot replaces everything replica says (all of its presence;
// nil when it is gone): what it no longer lists leaves.
func (h *Hub) RemoteSnapshot(replica string, all []PresenceOf) {
	h.mu.Lock()
	defer h.unlock()
	listed := make(map[[2]string]bool, len(all))
	for _, p := range all {
		listed[[2]string{p.ProjectID, p.UserID}] = true
		h.remote(replica, p.ProjectID, p.UserID, &p.Presence)
	}
	for pid, t := range h.topics {
		for uid, by := range t.remote {
			if _, ok := by[replica]; ok && !listed[[2]string{pid, uid}] {
				h.remote(replica, pid, uid, nil)
			}
		}
	}
}

// LocalPresence is this replica's presence, for the other replicas.
func (h *Hub) LocalPresence() []PresenceOf {
	h.mu.Lock()
	defer h.unlock()
	var out []PresenceOf
	for pid, t := range h.topics {
		for uid, m := range t.present {
			out = append(out, PresenceOf{ProjectID: pid, UserID: uid, Presence: m.Presence})
		}
	}
	return out
}

// Present lists the users present in projectID with their meta.
func (h *Hub) Present(projectID string) map[string]json.RawMessage {
	h.mu.Lock()
	defer h.unlock()
	out := map[string]json.RawMessage{}
	if t, ok := h.topics[projectID]; ok {
		for _, ids := range []map[string]bool{keys(t.present), keys(t.remote)} {
			for uid := range ids {
				p, _ := t.view(uid)
				out[uid] = entryOf(p).Meta
			}
		}
	}
	return out
}

func keys[V any](m map[string]V) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

// Link makes the hub tell the other replicas of this replica's presence
// changes (p nil: the user is gone from here) and broadcasts. The
// callbacks run under the hub's lock: they must only hand the change on.
func (h *Hub) Link(onPresence func(projectID, userID string, p *Presence), onBroadcast func(projectID, event, from string, payload json.RawMessage)) {
	h.mu.Lock()
	defer h.unlock()
	h.onPresence, h.onBroadcast = onPresence, onBroadcast
}

// ValidEvent reports whether s may name a broadcast's event: 1 to 64
// letters, digits, '_', '-', '.' or ':', starting with a letter.
func ValidEvent(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if i == 0 && !letter || !letter && !(c >= '0' && c <= '9') && c != '_' && c != '-' && c != '.' && c != ':' {
			return false
		}
	}
	return true
}
