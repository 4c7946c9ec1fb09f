package hub

import (
	"encoding/json"
	"time"
)

// Ephemeral frames: broadcast between a project's subscribers, and who is
// present in it. They are never written to the database, never kept in
// the history and carry no position; they reach only subscriptions that
// are live (subscribed sent, not revoked), so every rule of access holds
// for them as for events: a revoked or removed member leaves at once.

// Frame types of the ephemeral frames.
const (
	TypeBroadcast     = "broadcast"
	TypePresenceState = "presence_state"
	TypePresenceDiff  = "presence_diff"
)

// member is one user present in a project: the user's live subscriptions
// to it (on this replica), and what the user last said about itself.
type member struct {
	subs     int
	meta     json.RawMessage
	onlineAt time.Time
}

// presenceEntry is a member as presence frames show it.
type presenceEntry struct {
	Meta     json.RawMessage `json:"meta"`
	OnlineAt string          `json:"online_at"`
}

func (m *member) entry() presenceEntry {
	meta := m.meta
	if meta == nil {
		meta = json.RawMessage("{}")
	}
	return presenceEntry{Meta: meta, OnlineAt: m.onlineAt.UTC().Format(time.RFC3339Nano)}
}

// joined makes s's user present in t and tells the subscribers watching
// presence if the user was not. Called once s is live.
func (h *Hub) joined(t *topic, s *subscription) {
	if t.present == nil {
		t.present = make(map[string]*member)
	}
	uid := s.client.userID
	m := t.present[uid]
	if m == nil {
		m = &member{onlineAt: h.now()}
		t.present[uid] = m
		h.presenceDiff(t, s.projectID, s.client, map[string]presenceEntry{uid: m.entry()}, nil)
	}
	m.subs++
}

// watch makes s receive presence from now on: the project's
// presence_state, then every presence_diff.
func (h *Hub) watch(t *topic, s *subscription) {
	if s.watching {
		return
	}
	s.watching = true
	users := make(map[string]presenceEntry, len(t.present))
	for id, p := range t.present {
		users[id] = p.entry()
	}
	b, _ := json.Marshal(struct {
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
	defer h.mu.Unlock()
	t, s, err := h.live(c, projectID)
	if err != nil {
		return err
	}
	h.watch(t, s)
	return nil
}

// left ends s's part in its user's presence in t; when it was the user's
// last live subscription there, the others are told the user left.
func (h *Hub) left(t *topic, s *subscription) {
	uid := s.client.userID
	m := t.present[uid]
	if m == nil {
		return
	}
	if m.subs--; m.subs > 0 {
		return
	}
	delete(t.present, uid)
	h.presenceDiff(t, s.projectID, nil, nil, map[string]presenceEntry{uid: m.entry()})
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
	b, _ := json.Marshal(struct {
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
	defer h.mu.Unlock()
	t, s, err := h.live(c, projectID)
	if err != nil {
		return err
	}
	h.watch(t, s)
	m := t.present[c.userID]
	m.meta = meta
	h.presenceDiff(t, projectID, nil, map[string]presenceEntry{c.userID: m.entry()}, nil)
	return nil
}

// Broadcast sends an ephemeral event from c's user to the live
// subscribers of projectID: c itself only when self is set.
func (h *Hub) Broadcast(c *Client, projectID, event string, payload json.RawMessage, self bool) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	t, _, err := h.live(c, projectID)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(struct {
		Type      string          `json:"type"`
		ProjectID string          `json:"project_id"`
		Event     string          `json:"event"`
		From      string          `json:"from"`
		Payload   json.RawMessage `json:"payload"`
	}{TypeBroadcast, projectID, event, c.userID, payload})
	except := c
	if self {
		except = nil
	}
	h.ephemeral(t, except, &Frame{Data: b, Type: TypeBroadcast})
	return nil
}

// Present lists the users present in projectID with their meta (tests and
// the status document).
func (h *Hub) Present(projectID string) map[string]json.RawMessage {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]json.RawMessage{}
	if t, ok := h.topics[projectID]; ok {
		for id, m := range t.present {
			out[id] = m.entry().Meta
		}
	}
	return out
}
