package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/walcast/walcast/internal/auth"
	"github.com/walcast/walcast/internal/hub"
	"github.com/walcast/walcast/internal/jsonx"
	"github.com/walcast/walcast/internal/metrics"
)

// EphemeralHub is what the replicas' ephemeral traffic reaches: this
// replica's hub.
type EphemeralHub interface {
	RemoteBroadcast(projectID, event, from string, payload json.RawMessage)
	RemotePresence(replica, projectID, userID string, p *hub.Presence)
	RemoteSnapshot(replica string, all []hub.PresenceOf)
	LocalPresence() []hub.PresenceOf
}

// EphemeralConfig configures the replicas' ephemeral traffic.
type EphemeralConfig struct {
	// Subject is the NATS core subject (never the stream's: nothing of it
	// is stored).
	Subject string
	// Interval is how often each replica sends all of its presence; a
	// replica not heard from for Timeout is gone, and its users leave.
	Interval, Timeout time.Duration
}

// Ephemeral carries broadcasts and presence between replicas over NATS
// core subjects: each replica sends its broadcasts and presence changes
// as they happen and all of its presence every Interval (which is also how
// the others know it is alive), and applies what the others send.
type Ephemeral struct {
	cfg     EphemeralConfig
	nc      *nats.Conn
	hub     EphemeralHub
	replica string
	out     chan ephemeralMsg
	log     *slog.Logger
	metrics *metrics.Metrics
	now     func() time.Time
	// Kick, when set before Run, closes this replica's sockets of a user
	// another replica's operator disconnected (ws.Server.Disconnect).
	Kick func(userID string, banFor time.Duration) int
	// Owned by Run's goroutine: the snapshot sequence, the parts of the
	// others' snapshots, when a failed send was last logged.
	seq     uint64
	pending map[string]*snapshotParts
	warned  time.Time
}

// ephemeralMsg is one message between replicas: a broadcast (B: its
// fields, never a frame: the receiving hub builds the frame itself), a
// presence change (P; Presence nil: gone), or a part of all of a
// replica's presence (S: part Part of Parts of snapshot Seq).
type ephemeralMsg struct {
	Kind      string           `json:"k"`
	Replica   string           `json:"r"`
	ProjectID string           `json:"p,omitempty"`
	UserID    string           `json:"u,omitempty"`
	Presence  *wirePresence    `json:"pr,omitempty"`
	Event     string           `json:"e,omitempty"`
	Payload   json.RawMessage  `json:"d,omitempty"`
	All       []wirePresenceOf `json:"all,omitempty"`
	Seq       uint64           `json:"seq,omitempty"`
	BanFor    time.Duration    `json:"ban,omitempty"`
	Part      int              `json:"part,omitempty"`
	Parts     int              `json:"parts,omitempty"`
	// Bye marks the last message of a replica that shuts down.
	Bye bool `json:"bye,omitempty"`
}

type wirePresence struct {
	Meta     json.RawMessage `json:"m,omitempty"`
	OnlineAt int64           `json:"o"`
	Updated  int64           `json:"t"`
}

type wirePresenceOf struct {
	ProjectID string       `json:"p"`
	UserID    string       `json:"u"`
	Presence  wirePresence `json:"pr"`
}

func toWire(p hub.Presence) wirePresence {
	return wirePresence{Meta: p.Meta, OnlineAt: p.OnlineAt.UnixNano(), Updated: p.Updated.UnixNano()}
}

func (w wirePresence) presence() hub.Presence {
	return hub.Presence{Meta: w.Meta, OnlineAt: time.Unix(0, w.OnlineAt).UTC(), Updated: time.Unix(0, w.Updated).UTC()}
}

// ephemeralQueue bounds what waits to be sent; past it changes are
// dropped (counted), and the next snapshot puts presence right.
const ephemeralQueue = 4096

// NewEphemeral returns the link of this replica (named replica) to the
// others, over b's connection. Give its OnPresence and OnBroadcast to
// the hub (hub.Link), then Run it.
func (b *Bus) NewEphemeral(cfg EphemeralConfig, h EphemeralHub, replica string) *Ephemeral {
	return &Ephemeral{cfg: cfg, nc: b.nc, hub: h, replica: replica, out: make(chan ephemeralMsg, ephemeralQueue),
		log: b.log, metrics: b.metrics, now: time.Now, pending: map[string]*snapshotParts{}}
}

// OnPresence queues this replica's presence change for the others; it
// never blocks (the hub calls it under its lock).
func (e *Ephemeral) OnPresence(projectID, userID string, p *hub.Presence) {
	m := ephemeralMsg{Kind: "P", Replica: e.replica, ProjectID: projectID, UserID: userID}
	if p != nil {
		w := toWire(*p)
		m.Presence = &w
	}
	e.queue(m)
}

// OnDisconnect tells the other replicas to close userID's sockets (and
// ban it for banFor).
func (e *Ephemeral) OnDisconnect(userID string, banFor time.Duration) {
	e.queue(ephemeralMsg{Kind: "K", Replica: e.replica, UserID: userID, BanFor: banFor})
}

// OnBroadcast queues a broadcast for the others' subscribers.
func (e *Ephemeral) OnBroadcast(projectID, event, from string, payload json.RawMessage) {
	e.queue(ephemeralMsg{Kind: "B", Replica: e.replica, ProjectID: projectID, Event: event, UserID: from, Payload: payload})
}

func (e *Ephemeral) queue(m ephemeralMsg) {
	select {
	case e.out <- m:
	default:
		e.metrics.EphemeralDropped.Inc()
	}
}

// Run sends and receives until ctx ends.
func (e *Ephemeral) Run(ctx context.Context) error {
	in := make(chan *nats.Msg, ephemeralQueue)
	sub, err := e.nc.ChanSubscribe(e.cfg.Subject, in)
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", e.cfg.Subject, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	tick := time.NewTicker(e.cfg.Interval)
	defer tick.Stop()
	seen := map[string]time.Time{} // other replicas, last heard
	e.snapshot()
	for {
		select {
		case <-ctx.Done():
			// Gone: the others take this replica's users out now rather
			// than after the timeout.
			e.publish(ephemeralMsg{Kind: "S", Replica: e.replica, Bye: true})
			_ = e.nc.Flush()
			return nil
		case m := <-e.out:
			e.publish(m)
		case msg := <-in:
			e.receive(msg.Data, seen)
		case <-tick.C:
			e.snapshot()
			for r, at := range seen {
				if e.now().Sub(at) > e.cfg.Timeout {
					delete(seen, r)
					e.log.Warn("replica not heard from: its users leave presence", "replica", r, "silent_for", e.now().Sub(at).Round(time.Millisecond).String())
					e.hub.RemoteSnapshot(r, nil)
				}
			}
		}
	}
}

// snapshot sends all of this replica's presence, in parts that each fit
// well within NATS's max_payload (a deployment's presence grows with its
// users; one message too large would never be sent, and the others would
// take this replica for dead).
func (e *Ephemeral) snapshot() {
	all := e.hub.LocalPresence()
	limit := int(e.nc.MaxPayload() / 2)
	if limit <= 0 {
		limit = 256 << 10
	}
	e.seq++
	var parts [][]wirePresenceOf
	var cur []wirePresenceOf
	size := 0
	for _, p := range all {
		w := wirePresenceOf{ProjectID: p.ProjectID, UserID: p.UserID, Presence: toWire(p.Presence)}
		n := 160 + len(w.Presence.Meta)
		if len(cur) > 0 && size+n > limit {
			parts, cur, size = append(parts, cur), nil, 0
		}
		cur, size = append(cur, w), size+n
	}
	parts = append(parts, cur)
	for i, part := range parts {
		e.publish(ephemeralMsg{Kind: "S", Replica: e.replica, Seq: e.seq, Part: i, Parts: len(parts), All: part})
	}
}

func (e *Ephemeral) publish(m ephemeralMsg) {
	b, err := jsonx.Marshal(m)
	if err == nil {
		err = e.nc.Publish(e.cfg.Subject, b)
	}
	if err != nil {
		e.metrics.EphemeralDropped.Inc()
		if now := e.now(); now.Sub(e.warned) > time.Minute {
			e.warned = now
			e.log.Warn("broadcast or presence not sent to the other replicas", "kind", m.Kind, "bytes", len(b), "err", err)
		}
	}
}

// snapshotParts gathers the parts of one replica's snapshot.
type snapshotParts struct {
	seq   uint64
	parts map[int][]wirePresenceOf
}

// receive applies another replica's message; its own come back too and
// are ignored. Only well-formed messages are applied: the hub builds
// every frame itself, and ids must be UUIDs (anyone who can publish on the
// subject can still claim any user: NATS must be as private as the
// database, see docs/scaling.md).
func (e *Ephemeral) receive(data []byte, seen map[string]time.Time) {
	var m ephemeralMsg
	if err := json.Unmarshal(data, &m); err != nil || m.Replica == "" {
		e.log.Warn("undecodable ephemeral message", "err", err)
		return
	}
	if m.Replica == e.replica {
		return
	}
	seen[m.Replica] = e.now()
	switch m.Kind {
	case "K":
		if auth.IsUUID(m.UserID) && m.BanFor >= 0 && e.Kick != nil {
			n := e.Kick(strings.ToLower(m.UserID), m.BanFor)
			e.log.Info("user disconnected by the operator on another replica", "user_id", m.UserID, "from_replica", m.Replica, "sockets", n)
		}
	case "B":
		if auth.IsUUID(m.ProjectID) && auth.IsUUID(m.UserID) && hub.ValidEvent(m.Event) && jsonx.IsObject(m.Payload) {
			e.hub.RemoteBroadcast(strings.ToLower(m.ProjectID), m.Event, strings.ToLower(m.UserID), m.Payload)
		}
	case "P":
		if !auth.IsUUID(m.ProjectID) || !auth.IsUUID(m.UserID) {
			return
		}
		var p *hub.Presence
		if m.Presence != nil {
			if m.Presence.Meta != nil && !jsonx.IsObject(m.Presence.Meta) {
				return
			}
			pr := m.Presence.presence()
			p = &pr
		}
		e.hub.RemotePresence(m.Replica, strings.ToLower(m.ProjectID), strings.ToLower(m.UserID), p)
	case "S":
		if m.Bye {
			delete(seen, m.Replica)
			delete(e.pending, m.Replica)
			e.hub.RemoteSnapshot(m.Replica, nil)
			return
		}
		ps := e.pending[m.Replica]
		if ps == nil || ps.seq != m.Seq {
			if ps != nil && m.Seq < ps.seq {
				return // a part of an older snapshot
			}
			ps = &snapshotParts{seq: m.Seq, parts: map[int][]wirePresenceOf{}}
			e.pending[m.Replica] = ps
		}
		if m.Parts < 1 || m.Part < 0 || m.Part >= m.Parts || m.Parts > 1<<16 {
			return
		}
		ps.parts[m.Part] = m.All
		if len(ps.parts) < m.Parts {
			return
		}
		delete(e.pending, m.Replica)
		var all []hub.PresenceOf
		for i := range m.Parts {
			for _, w := range ps.parts[i] {
				if auth.IsUUID(w.ProjectID) && auth.IsUUID(w.UserID) && (w.Presence.Meta == nil || jsonx.IsObject(w.Presence.Meta)) {
					all = append(all, hub.PresenceOf{ProjectID: strings.ToLower(w.ProjectID), UserID: strings.ToLower(w.UserID), Presence: w.Presence.presence()})
				}
			}
		}
		if all == nil {
			all = []hub.PresenceOf{}
		}
		e.hub.RemoteSnapshot(m.Replica, all)
	}
}
