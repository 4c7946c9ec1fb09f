package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/walcast/walcast/internal/hub"
	"github.com/walcast/walcast/internal/metrics"
)

// EphemeralHub is what the replicas' ephemeral traffic reaches: this
// replica's hub.
type EphemeralHub interface {
	RemoteBroadcast(projectID string, frame []byte)
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
}

// ephemeralMsg is one message between replicas: a broadcast frame (B), a
// presence change (P; Presence nil: gone), or all of a replica's presence (S).
type ephemeralMsg struct {
	Kind      string           `json:"k"`
	Replica   string           `json:"r"`
	ProjectID string           `json:"p,omitempty"`
	UserID    string           `json:"u,omitempty"`
	Presence  *wirePresence    `json:"pr,omitempty"`
	Frame     json.RawMessage  `json:"f,omitempty"`
	All       []wirePresenceOf `json:"all,omitempty"`
	// Bye marks the last snapshot of a replica that shuts down.
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
		log: b.log, metrics: b.metrics, now: time.Now}
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

// OnBroadcast queues a broadcast frame for the others' subscribers.
func (e *Ephemeral) OnBroadcast(projectID string, frame []byte) {
	e.queue(ephemeralMsg{Kind: "B", Replica: e.replica, ProjectID: projectID, Frame: frame})
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

func (e *Ephemeral) snapshot() {
	all := e.hub.LocalPresence()
	m := ephemeralMsg{Kind: "S", Replica: e.replica, All: make([]wirePresenceOf, 0, len(all))}
	for _, p := range all {
		m.All = append(m.All, wirePresenceOf{ProjectID: p.ProjectID, UserID: p.UserID, Presence: toWire(p.Presence)})
	}
	e.publish(m)
}

func (e *Ephemeral) publish(m ephemeralMsg) {
	b, err := json.Marshal(m)
	if err == nil {
		err = e.nc.Publish(e.cfg.Subject, b)
	}
	if err != nil {
		e.metrics.EphemeralDropped.Inc()
		e.log.Debug("ephemeral message not sent", "kind", m.Kind, "err", err)
	}
}

// receive applies another replica's message; its own come back too and
// are ignored.
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
	case "B":
		if json.Valid(m.Frame) {
			e.hub.RemoteBroadcast(m.ProjectID, m.Frame)
		}
	case "P":
		var p *hub.Presence
		if m.Presence != nil {
			pr := m.Presence.presence()
			p = &pr
		}
		e.hub.RemotePresence(m.Replica, m.ProjectID, m.UserID, p)
	case "S":
		all := make([]hub.PresenceOf, 0, len(m.All))
		for _, w := range m.All {
			all = append(all, hub.PresenceOf{ProjectID: w.ProjectID, UserID: w.UserID, Presence: w.Presence.presence()})
		}
		e.hub.RemoteSnapshot(m.Replica, all)
		if m.Bye {
			delete(seen, m.Replica)
		}
	}
}
