package relay

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/walcast/walcast/internal/events"
	"github.com/walcast/walcast/internal/metrics"
)

// Hub is what the relay publishes to: this process's fan-out.
type Hub interface {
	Publish(evs []events.Event)
	Gap(walPos uint64, at time.Time)
}

// Bus is the cluster stream: what is published there reaches every
// replica's hub (Deliver).
type Bus interface {
	Publish(ctx context.Context, evs []events.Event) error
}

// Relay maps committed transactions to events and publishes them.
type Relay struct {
	mapper  *events.Mapper
	hub     Hub
	bus     Bus // nil: single node
	log     *slog.Logger
	metrics *metrics.Metrics
	now     func() time.Time
	buf     []events.Event
	// Acks tells publishers where their events reached this replica's hub.
	Acks *Acks
}

// New returns a Relay publishing to hub or, when bus is a non-nil
// interface, through bus (whose consumer calls Deliver).
func New(mapper *events.Mapper, hub Hub, bus Bus, log *slog.Logger, m *metrics.Metrics) *Relay {
	return &Relay{mapper: mapper, hub: hub, bus: bus, log: log, metrics: m, now: time.Now, Acks: NewAcks()}
}

// Take maps one committed transaction and publishes its events (a
// wal.Sink). A change that cannot be mapped fails closed in the mapper; it
// is logged and counted here. An error (the bus did not take the events)
// stops the stream, which streams the transaction again.
func (r *Relay) Take(ctx context.Context, txn *events.Txn) error {
	evs, problems := r.mapper.Map(txn, r.buf[:0])
	for _, err := range problems {
		var refused *events.PublishRefused
		if errors.As(err, &refused) {
			// The application's message, not walcast's stream: skipped
			// (the stream and the slot go on), logged and counted.
			r.metrics.PublishedRefused.WithLabelValues(refused.Reason).Inc()
			r.log.Warn("published event refused", "reason", refused.Reason, "err", refused.Err, "lsn", pglogrepl.LSN(txn.CommitLSN).String(), "xid", txn.Xid)
			continue
		}
		r.metrics.MappingProblems.Inc()
		r.log.Warn("change could not be mapped; failing closed", "err", err, "lsn", pglogrepl.LSN(txn.CommitLSN).String())
	}
	for i := range evs {
		if rv := evs[i].Revoke; rv != nil && rv.Conservative && rv.At == evs[i].Position {
			r.metrics.AccessFailClosed.WithLabelValues(metrics.FailClosedUnmappable).Inc()
			r.log.Error("access change could not be attributed: revoked every subscription it might concern",
				"project_id", evs[i].ProjectID, "all_projects", evs[i].AllProjects, "position", rv.At.String())
		}
	}
	var err error
	if r.bus != nil {
		err = r.bus.Publish(ctx, evs)
	} else {
		r.hub.Publish(evs)
		r.Acks.seen(evs)
	}
	if err == nil {
		for i := range evs {
			if evs[i].Published {
				r.metrics.PublishedEvents.Inc()
			}
		}
	}
	// The hub and the bus keep the payloads, not the slice: reuse it.
	clear(evs)
	r.buf = evs[:0]
	return err
}

// Gap signals that changes before walPos may never be streamed (the slot
// was dropped, re-created or moved): to the hub, or through the bus so
// that every replica's subscribers are told. Streaming goes on only once
// it returned nil.
func (r *Relay) Gap(ctx context.Context, walPos uint64) error {
	now := r.now()
	if r.bus == nil {
		r.hub.Gap(walPos, now)
		return nil
	}
	ev := events.Event{Position: events.Position{LSN: walPos - 1, Index: ^uint32(0)}, AllProjects: true, Type: events.TypeResyncRequired, CommitTime: now}
	return r.bus.Publish(ctx, []events.Event{ev})
}

// Deliver feeds one event from the cluster stream to this replica's hub.
func (r *Relay) Deliver(ev events.Event) {
	evs := []events.Event{ev}
	r.hub.Publish(evs)
	r.Acks.seen(evs)
}

// streamFloor is where the cluster stream's history starts.
type streamFloor interface {
	Floor(ctx context.Context) (events.Position, bool, error)
}

// ClusterFloor is where a replica's hub starts in cluster mode: just
// before the stream's oldest event (the hub is given everything after
// it), or, for an empty stream, just before the slot's confirmed position.
func ClusterFloor(ctx context.Context, stream streamFloor, slotConfirmed func(context.Context) (uint64, error)) (events.Position, error) {
	pos, ok, err := stream.Floor(ctx)
	if err != nil || ok {
		return pos, err
	}
	lsn, err := slotConfirmed(ctx)
	if err != nil || lsn == 0 {
		return events.Position{}, err
	}
	return events.Position{LSN: lsn - 1, Index: ^uint32(0)}, nil
}
