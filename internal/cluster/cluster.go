package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/walcast/walcast/internal/events"
	"github.com/walcast/walcast/internal/metrics"
)

// Config configures the bus.
type Config struct {
	URL           string
	Stream        string
	SubjectPrefix string
	// MaxAge and MaxMsgs bound the stream, and so resume history.
	MaxAge  time.Duration
	MaxMsgs int64
	// Duplicates is JetStream's deduplication window.
	Duplicates time.Duration
	// Origin names the WAL the events come from (wal.Origin). A stream
	// holding another origin's events (the database moved to another
	// cluster or timeline) is purged: its positions mean nothing here,
	// and the hub would take every new event for one it has.
	Origin string
}

// originKey is the stream metadata entry that names its events' origin.
const originKey = "walcast_origin"

// confirmedKey is the progress bucket's key for the slot's confirmed position.
const confirmedKey = "confirmed"

// Bus is one replica's connection to the stream.
type Bus struct {
	cfg Config
	nc  *nats.Conn
	js  jetstream.JetStream
	// progress holds how far the leader confirmed the slot (Confirming).
	progress jetstream.KeyValue
	log      *slog.Logger
	metrics  *metrics.Metrics
}

// Connect connects and creates or updates the stream.
func Connect(ctx context.Context, cfg Config, log *slog.Logger, m *metrics.Metrics) (*Bus, error) {
	nc, err := nats.Connect(cfg.URL, nats.Name("walcast"), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("connect to NATS %s: %w", cfg.URL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	purged := false
	if s, err := js.Stream(ctx, cfg.Stream); err == nil {
		info, err := s.Info(ctx)
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("read stream %s: %w", cfg.Stream, err)
		}
		if was := info.Config.Metadata[originKey]; was != cfg.Origin {
			// The recorded progress is the old database's too, even when
			// no event is left (a position of another cluster would stop
			// every leader as a WAL gone backwards).
			purged = true
			if info.State.Msgs > 0 {
				log.Error("the stream holds events of another database (another cluster, timeline or slot): purged; clients resuming from them are told to resync",
					"stream", cfg.Stream, "stream_origin", was, "origin", cfg.Origin, "events", info.State.Msgs)
				if err := s.Purge(ctx); err != nil {
					nc.Close()
					return nil, fmt.Errorf("purge stream %s: %w", cfg.Stream, err)
				}
			}
		}
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		nc.Close()
		return nil, fmt.Errorf("read stream %s: %w", cfg.Stream, err)
	}
	_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:       cfg.Stream,
		Subjects:   []string{cfg.SubjectPrefix + ".>"},
		Storage:    jetstream.FileStorage,
		MaxAge:     cfg.MaxAge,
		MaxMsgs:    cfg.MaxMsgs,
		Duplicates: cfg.Duplicates,
		Metadata:   map[string]string{originKey: cfg.Origin},
	})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("create stream %s: %w", cfg.Stream, err)
	}
	// The slot's progress lives beside the stream, and goes with it when
	// the origin changes.
	progress, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: cfg.Stream + "_progress", History: 1})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("create key-value bucket %s_progress: %w", cfg.Stream, err)
	}
	if purged {
		if err := progress.Purge(ctx, confirmedKey); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			nc.Close()
			return nil, fmt.Errorf("purge %s_progress: %w", cfg.Stream, err)
		}
	}
	return &Bus{cfg: cfg, nc: nc, js: js, progress: progress, log: log, metrics: m}, nil
}

// Connected reports whether the NATS connection is up.
func (b *Bus) Connected() bool { return b.nc.IsConnected() }

// Close disconnects.
func (b *Bus) Close() { b.nc.Close() }

// envelope is an event as it travels through the stream.
type envelope struct {
	Position   string          `json:"p"`
	ProjectID  string          `json:"pid,omitempty"`
	Type       string          `json:"t"`
	CommitTime int64           `json:"ct"`
	All        bool            `json:"all,omitempty"`
	Published  bool            `json:"pub,omitempty"`
	Xid        uint32          `json:"x,omitempty"`
	Grant      string          `json:"g,omitempty"`
	Revoke     *revocation     `json:"rv,omitempty"`
	Payload    json.RawMessage `json:"f,omitempty"`
}

type revocation struct {
	UserID       string `json:"u,omitempty"`
	Reason       string `json:"r"`
	At           string `json:"at"`
	Conservative bool   `json:"c,omitempty"`
}

func encode(ev *events.Event) ([]byte, error) {
	e := envelope{Position: ev.Position.String(), ProjectID: ev.ProjectID, Type: ev.Type, CommitTime: ev.CommitTime.UnixNano(), All: ev.AllProjects, Payload: ev.Payload,
		Xid: ev.Xid, Grant: ev.Grant, Published: ev.Published}
	if ev.Revoke != nil {
		e.Revoke = &revocation{UserID: ev.Revoke.UserID, Reason: ev.Revoke.Reason, At: ev.Revoke.At.String(), Conservative: ev.Revoke.Conservative}
	}
	return json.Marshal(e)
}

// ErrEnvelope marks a stream message that is not a walcast event.
var ErrEnvelope = errors.New("not a walcast event")

func decode(b []byte) (events.Event, error) {
	var e envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return events.Event{}, fmt.Errorf("%w: %v", ErrEnvelope, err)
	}
	pos, err := events.ParsePosition(e.Position)
	if err != nil {
		return events.Event{}, fmt.Errorf("%w: %v", ErrEnvelope, err)
	}
	ev := events.Event{Position: pos, ProjectID: e.ProjectID, Type: e.Type, CommitTime: time.Unix(0, e.CommitTime).UTC(), AllProjects: e.All,
		Xid: e.Xid, Grant: e.Grant, Published: e.Published}
	if len(e.Payload) > 0 {
		ev.Payload = []byte(e.Payload)
	}
	if e.Revoke != nil {
		at, err := events.ParsePosition(e.Revoke.At)
		if err != nil {
			return events.Event{}, fmt.Errorf("%w: %v", ErrEnvelope, err)
		}
		ev.Revoke = &events.Revocation{UserID: e.Revoke.UserID, Reason: e.Revoke.Reason, At: at, Conservative: e.Revoke.Conservative}
	}
	if !ev.AllProjects && (ev.ProjectID == "" || len(ev.Payload) == 0) {
		return events.Event{}, fmt.Errorf("%w: no project or payload", ErrEnvelope)
	}
	return ev, nil
}

func (b *Bus) subject(ev *events.Event) string {
	if ev.AllProjects {
		return b.cfg.SubjectPrefix + ".all"
	}
	return b.cfg.SubjectPrefix + "." + ev.ProjectID
}

// Publish stores a transaction's events in the stream and returns once
// JetStream has acknowledged every one of them.
func (b *Bus) Publish(ctx context.Context, evs []events.Event) error {
	if len(evs) == 0 {
		return nil
	}
	start := time.Now()
	futures := make([]jetstream.PubAckFuture, 0, len(evs))
	for i := range evs {
		data, err := encode(&evs[i])
		if err != nil {
			return err
		}
		f, err := b.js.PublishMsgAsync(&nats.Msg{Subject: b.subject(&evs[i]), Data: data}, jetstream.WithMsgID(evs[i].Position.String()))
		if err != nil {
			b.metrics.ClusterPublishErrors.Inc()
			return fmt.Errorf("publish %s: %w", evs[i].Position, err)
		}
		futures = append(futures, f)
	}
	// One deadline for the whole transaction, not a timer per event.
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.metrics.ClusterPublishErrors.Inc()
			return fmt.Errorf("publish: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout.C:
			b.metrics.ClusterPublishErrors.Inc()
			return errors.New("publish: no acknowledgement from JetStream within 10s")
		}
	}
	b.metrics.ClusterPublishSeconds.Observe(time.Since(start).Seconds())
	return nil
}

// Floor returns the position just before the oldest event the stream
// retains, and whether it retains any.
func (b *Bus) Floor(ctx context.Context) (events.Position, bool, error) {
	s, err := b.js.Stream(ctx, b.cfg.Stream)
	if err != nil {
		return events.Position{}, false, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return events.Position{}, false, err
	}
	if info.State.Msgs == 0 {
		return events.Position{}, false, nil
	}
	msg, err := s.GetMsg(ctx, info.State.FirstSeq)
	if err != nil {
		return events.Position{}, false, err
	}
	ev, err := decode(msg.Data)
	if err != nil {
		return events.Position{}, false, err
	}
	p := ev.Position
	if p.Index > 0 {
		p.Index--
	} else {
		p = events.Position{LSN: p.LSN - 1, Index: ^uint32(0)}
	}
	return p, true, nil
}

// Confirming records, before the leader confirms the slot to pos, that it
// does: a replica taking the slot over later finds it at or before what
// was recorded, or knows that someone else moved it (Confirmed).
func (b *Bus) Confirming(ctx context.Context, pos uint64) error {
	_, err := b.progress.Put(ctx, confirmedKey, strconv.AppendUint(nil, pos, 10))
	return err
}

// Confirmed returns the newest position a leader recorded with Confirming
// (0: none yet).
func (b *Bus) Confirmed(ctx context.Context) (uint64, error) {
	e, err := b.progress.Get(ctx, confirmedKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(string(e.Value()), 10, 64)
}

// Run consumes the stream from its beginning, in order, calling deliver
// for each event, until ctx ends. It re-creates its consumer when NATS
// drops it; deliver must skip what it has (the hub skips positions it has
// published).
func (b *Bus) Run(ctx context.Context, deliver func(events.Event)) error {
	for {
		err := b.consume(ctx, deliver)
		if ctx.Err() != nil {
			return nil
		}
		b.log.Error("stream consumer ended; restarting", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (b *Bus) consume(ctx context.Context, deliver func(events.Event)) error {
	cons, err := b.js.OrderedConsumer(ctx, b.cfg.Stream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return err
	}
	defer it.Stop()
	// Next blocks until a message or Stop; the registration ends with
	// this consumer, so a restart leaves nothing behind.
	defer context.AfterFunc(ctx, it.Stop)()
	for {
		msg, err := it.Next()
		if err != nil {
			return err
		}
		ev, err := decode(msg.Data())
		if err != nil {
			b.log.Warn("stream message left out", "subject", msg.Subject(), "err", err)
			continue
		}
		if md, err := msg.Metadata(); err == nil {
			b.metrics.ClusterConsumerLag.Set(float64(md.NumPending))
		}
		deliver(ev)
	}
}
