package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walcast/walcast/internal/auth"
	"github.com/walcast/walcast/internal/events"
	"github.com/walcast/walcast/internal/metrics"
)

// Payload is what the legacy trigger sends.
type Payload struct {
	Type      string `json:"type"`
	Resource  string `json:"resource"`
	ID        string `json:"id"`
	Action    string `json:"action"`
	ProjectID string `json:"project_id"`
	Timestamp string `json:"timestamp"`
}

// Revoker takes access away where the database says it is gone.
type Revoker interface {
	// Recheck re-verifies every subscriber of projectID and revokes those
	// who are no longer members; all=true revokes everyone (project deleted).
	Recheck(ctx context.Context, projectID string, all bool)
}

// Listener reads the notification channel.
type Listener struct {
	url       string
	channel   string
	publish   func([]events.Event)
	revoker   Revoker
	members   string // resource name of the membership table
	project   string // resource name of the project table
	log       *slog.Logger
	metrics   *metrics.Metrics
	seq       uint64
	live      atomic.Bool
	lastErr   atomic.Value
	startSeq  uint64
	onStarted func(uint64)
}

// NewListener returns a Listener on channel. Positions start at the
// current time in microseconds, so they sort after any earlier run's, and
// onStart is told the first one (the hub's floor).
func NewListener(url, channel, membersResource, projectResource string, publish func([]events.Event), revoker Revoker, onStart func(uint64), log *slog.Logger, m *metrics.Metrics) *Listener {
	start := uint64(time.Now().UnixMicro())
	return &Listener{url: url, channel: channel, publish: publish, revoker: revoker, members: membersResource, project: projectResource,
		log: log, metrics: m, seq: start, startSeq: start, onStarted: onStart}
}

// Live reports whether the listener is connected.
func (l *Listener) Live() bool { return l.live.Load() }

// LastError is why the listener is down, if it is.
func (l *Listener) LastError() error {
	err, _ := l.lastErr.Load().(error)
	return err
}

// Run listens until ctx ends, reconnecting with backoff.
func (l *Listener) Run(ctx context.Context) error {
	if l.onStarted != nil {
		l.onStarted(l.startSeq)
	}
	backoff := 100 * time.Millisecond
	for {
		err := l.listen(ctx)
		l.live.Store(false)
		l.metrics.WALConnected.Set(0)
		if ctx.Err() != nil {
			return nil
		}
		l.lastErr.Store(err)
		l.metrics.WALReconnects.Inc()
		l.log.Error("notification listener lost; reconnecting", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff/2 + rand.N(backoff/2+1)):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func (l *Listener) listen(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, l.url)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{l.channel}.Sanitize()); err != nil {
		return fmt.Errorf("listen %s: %w", l.channel, err)
	}
	l.live.Store(true)
	l.metrics.WALConnected.Set(1)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		ev, perr := l.event(n.Payload)
		if perr != nil {
			l.metrics.MappingProblems.Inc()
			l.log.Warn("notification left out", "err", perr)
			continue
		}
		l.metrics.WALChanges.WithLabelValues(ev.table, ev.action).Inc()
		l.publish([]events.Event{ev.Event})
		switch {
		case ev.action == "DELETE" && ev.resource == l.project:
			l.revoker.Recheck(ctx, ev.ProjectID, true)
		case ev.action == "DELETE" && ev.resource == l.members:
			l.revoker.Recheck(ctx, ev.ProjectID, false)
		}
	}
}

type parsed struct {
	events.Event
	resource, action, table string
}

// ErrPayload marks a notification that is not a cache_invalidate payload.
var ErrPayload = errors.New("bad notification payload")

func (l *Listener) event(payload string) (parsed, error) {
	var p Payload
	if err := json.Unmarshal([]byte(payload), &p); err != nil {
		return parsed{}, fmt.Errorf("%w: not JSON", ErrPayload)
	}
	if !auth.IsUUID(p.ProjectID) || p.Resource == "" || (p.Action != "INSERT" && p.Action != "UPDATE" && p.Action != "DELETE") {
		return parsed{}, fmt.Errorf("%w: resource %q action %q", ErrPayload, p.Resource, p.Action)
	}
	ts, err := time.Parse(time.RFC3339Nano, p.Timestamp)
	if err != nil {
		ts = time.Now()
	}
	l.seq++
	pos := events.Position{LSN: l.seq}
	ev := events.Event{Position: pos, ProjectID: p.ProjectID, Type: events.TypeCacheInvalidate, CommitTime: ts,
		Payload: events.InvalidateFrame(p.Resource, p.ID, p.Action, p.ProjectID, ts, pos)}
	return parsed{Event: ev, resource: p.Resource, action: p.Action, table: p.Resource}, nil
}
