package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/walcast/walcast/internal/api"
	"github.com/walcast/walcast/internal/auth"
	"github.com/walcast/walcast/internal/cluster"
	"github.com/walcast/walcast/internal/config"
	"github.com/walcast/walcast/internal/events"
	"github.com/walcast/walcast/internal/hub"
	"github.com/walcast/walcast/internal/metrics"
	"github.com/walcast/walcast/internal/notify"
	"github.com/walcast/walcast/internal/relay"
	"github.com/walcast/walcast/internal/wal"
)

// source is where changes come from: the WAL reader or the NOTIFY listener.
type source interface {
	Run(ctx context.Context) error
	Live() bool
	LastError() error
}

// pipeline is everything between the database and the sockets: the change
// source, the relay, the hub, and in cluster mode the bus.
type pipeline struct {
	cfg      config.Config
	log      *slog.Logger
	origin   string
	members  *auth.Memberships
	verifier *auth.Verifier
	hub      *hub.Hub
	relay    *relay.Relay
	bus      *cluster.Bus // nil: single node
	source   source
	reader   *wal.Reader // nil for source: notify
	monitor  *wal.Monitor
	pubWatch *wal.PublicationWatch // nil for source: notify
	// ephemeral carries broadcasts and presence between replicas (nil:
	// single node).
	ephemeral *cluster.Ephemeral
	// publisher serves the HTTP publish route; nil when it is off.
	publisher *api.Publisher
}

// publishOff says why the HTTP publish route is off.
func (p *pipeline) publishOff() string {
	if p.cfg.Source != "wal" {
		return "publishing needs source: wal (published events travel through the WAL)"
	}
	return "publishing over HTTP is off: set publish.token (WALCAST_PUBLISH_TOKEN)"
}

// newPipeline checks the database, creates what is missing (publication,
// slot) and builds the pipeline. close releases what it holds.
func newPipeline(ctx context.Context, cfg config.Config, pool *pgxpool.Pool, log *slog.Logger, m *metrics.Metrics) (p *pipeline, err error) {
	if cfg.Source == "wal" {
		if err := prepareWAL(ctx, cfg, pool, log); err != nil {
			return nil, err
		}
	}
	p = &pipeline{cfg: cfg, log: log}
	m.Prime(sourceTables(cfg), eventTypes(cfg))
	if p.origin, err = streamOrigin(ctx, cfg); err != nil {
		return nil, err
	}
	mapper, err := events.NewMapper(events.Options{Tables: cfg.Events.Tables, BulkThreshold: cfg.Events.BulkThreshold,
		MaxTxnRows: cfg.Events.MaxTxnRows, MaxTxnBytes: cfg.Events.MaxTxnBytes, Publication: cfg.Replication.Publication,
		PublishPrefix: cfg.Publish.Prefix, MaxPublishBytes: cfg.Publish.MaxBytes, GapKey: events.GapKey([]byte(cfg.Auth.JWTSecret)),
		NumbersAsStrings: cfg.Events.NumbersAsStrings})
	if err != nil {
		return nil, err
	}
	vc := auth.VerifierConfig{Algorithm: cfg.Auth.JWTAlgorithm, Secret: []byte(cfg.Auth.JWTSecret), Leeway: cfg.Auth.Leeway,
		UserClaim: cfg.Auth.UserClaim, Issuer: cfg.Auth.Issuer, Audience: cfg.Auth.Audience}
	if cfg.Auth.JWKSURL != "" {
		// Fetched in the background until ctx (the process) ends.
		var warned atomic.Int64
		onErr := func(err error) {
			m.JWKSRefreshErrors.Inc()
			if now := time.Now().UnixNano(); now-warned.Load() > int64(time.Minute) {
				warned.Store(now)
				log.Warn("the identity provider's key set could not be fetched; the keys held go on verifying", "url", cfg.Auth.JWKSURL, "err", err)
			}
		}
		if vc.JWKS, err = auth.NewJWKS(ctx, auth.JWKSConfig{URL: cfg.Auth.JWKSURL, RefreshInterval: cfg.Auth.JWKSRefresh,
			UnknownKIDInterval: cfg.Auth.JWKSUnknownKID, HTTPTimeout: cfg.Auth.JWKSTimeout, OnRefreshError: onErr}); err != nil {
			return nil, err
		}
	}
	if p.verifier, err = auth.NewVerifierFor(vc); err != nil {
		return nil, err
	}
	mt := cfg.MembershipTable()
	p.members = auth.NewMemberships(pool, auth.MembershipConfig{
		Query: auth.MembershipQuery{Table: mt.QualifiedName(), ProjectIDColumn: mt.ProjectIDColumn, UserIDColumn: mt.UserIDColumn},
		TTL:   cfg.Auth.MembershipCacheTTL, MaxConcurrent: cfg.Auth.MembershipLookups,
	}, m)
	p.hub = hub.New(hub.Config{
		Origin: p.origin, WALEnd: func(ctx context.Context) (uint64, error) { return wal.WALEnd(ctx, pool) },
		QueueSize: cfg.Hub.QueueSize, HistorySize: cfg.Hub.HistorySize, HistoryAge: cfg.Hub.HistoryAge, HistoryBytes: cfg.Hub.HistoryBytes,
		MaxSubscriptions: cfg.Hub.MaxSubscriptionsPerSocket,
		AccessWait:       cfg.Auth.MembershipWait, AccessKeep: cfg.Auth.AccessMemory, AccessMax: cfg.Auth.AccessMemoryMax,
	}, m)

	var bus relay.Bus
	if cfg.Cluster.NATSURL != "" {
		if p.bus, err = cluster.Connect(ctx, cluster.Config{
			URL: cfg.Cluster.NATSURL, Stream: cfg.Cluster.Stream, SubjectPrefix: cfg.Cluster.SubjectPrefix,
			MaxAge: cfg.Cluster.MaxAge, MaxMsgs: cfg.Cluster.MaxMsgs, Duplicates: cfg.Cluster.Duplicates, Origin: p.origin,
		}, log, m); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				p.bus.Close()
			}
		}()
		bus = p.bus
		p.ephemeral = p.bus.NewEphemeral(cluster.EphemeralConfig{Subject: cfg.Cluster.EphemeralSubject,
			Interval: cfg.Cluster.PresenceInterval, Timeout: cfg.Cluster.PresenceTimeout}, p.hub, replicaName())
		p.hub.Link(p.ephemeral.OnPresence, p.ephemeral.OnBroadcast)
		if err := p.startCluster(ctx, pool); err != nil {
			return nil, err
		}
		log.Info("cluster mode", "nats", cfg.Cluster.NATSURL, "stream", cfg.Cluster.Stream)
	}
	p.relay = relay.New(mapper, p.hub, bus, log, m)

	p.monitor = wal.NewMonitor(pool, cfg.Replication.Slot, cfg.Replication.MonitorEvery, cfg.Replication.RetainedWALWarnBytes, log, m)
	if cfg.Source == "notify" {
		p.source = notify.NewListener(cfg.Database.URL, cfg.Notify.Channel, mt.Resource, cfg.ProjectTable().Resource,
			p.hub.Publish, relay.Recheck{Hub: p.hub, Members: p.members, Log: log}, p.hub.SetFloor, log, m)
		log.Warn("source: notify — cache_invalidate only, no resume across restarts; use source: wal where logical replication is allowed")
		return p, nil
	}
	if cfg.Publish.Token != "" {
		p.publisher = &api.Publisher{Token: cfg.Publish.Token, Prefix: cfg.Publish.Prefix, MaxBytes: cfg.Publish.MaxBytes,
			ConfirmTimeout: cfg.Publish.ConfirmTimeout, Check: mapper.CheckPublished, Expect: p.relay.Acks.Expect}
	}
	p.reader = wal.NewReader(p.readerConfig(mapper), mapper.Watches, p.relay.Take, p.onStart(), log, m)
	p.source = p.reader
	p.pubWatch = wal.NewPublicationWatch(pool, cfg.Replication.Publication, cfg.Replication.Slot, cfg.Events.Tables,
		cfg.Replication.PublicationCheck, events.GapKey([]byte(cfg.Auth.JWTSecret)), p.hub, p.reader.Restart, log, m)
	return p, nil
}

// sourceTables are the table labels of walcast_wal_changes_total: the
// WAL's table names, or the NOTIFY triggers' resources.
func sourceTables(cfg config.Config) []string {
	var out []string
	for _, t := range cfg.Events.Tables {
		if cfg.Source == "notify" {
			out = append(out, t.Resource)
		} else {
			out = append(out, t.Name)
		}
	}
	return out
}

// eventTypes are the frame types a socket can be sent.
func eventTypes(cfg config.Config) []string {
	types := []string{events.TypeCacheInvalidate, events.TypeResyncRequired, events.TypeSubscriptionRevoked,
		events.TypeSubscribed, "unsubscribed", events.TypeError, "pong", "token_refreshed", events.TypeStreamDown, events.TypeStreamUp,
		events.TypePublished, hub.TypeBroadcast, hub.TypePresenceState, hub.TypePresenceDiff}
	for _, t := range cfg.Events.Tables {
		for _, e := range []string{t.OnInsert, t.OnUpdate, t.OnDelete} {
			if e != "" && !slices.Contains(types, e) {
				types = append(types, e)
			}
		}
	}
	return types
}

// prepareWAL checks what logical replication needs and creates the
// publication and the slot when they are missing.
func prepareWAL(ctx context.Context, cfg config.Config, pool *pgxpool.Pool, log *slog.Logger) error {
	// Every problem at once (walcast check lists them the same way), not
	// one per restart.
	findings, err := wal.Doctor(ctx, pool, cfg.Replication.Publication, cfg.Replication.Slot, cfg.Events.Tables)
	if err != nil {
		return err
	}
	if err := wal.Errors(findings); err != nil {
		return err
	}
	for _, f := range findings {
		if f.Fix != "" {
			log.Warn(f.What, "fix", f.Fix)
		}
	}
	if err := wal.EnsurePublication(ctx, pool, cfg.Replication.Publication, cfg.Events.Tables); err != nil {
		return err
	}
	created, err := wal.EnsureSlot(ctx, pool, cfg.Replication.Slot)
	if created {
		log.Info("replication slot created", "slot", cfg.Replication.Slot)
	}
	return err
}

// streamOrigin names where this process's positions come from: the
// cluster, timeline and slot of the WAL; for the NOTIFY source, which
// cannot resume across restarts, the process itself.
func streamOrigin(ctx context.Context, cfg config.Config) (string, error) {
	if cfg.Source == "notify" {
		return "notify." + rand.Text(), nil
	}
	ictx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return wal.Identify(ictx, cfg.Database.URL, cfg.Replication.Slot)
}

// startCluster sets where this replica's hub starts: the stream's history
// (relay.ClusterFloor), and what the database had committed by now is
// history too (the stream replays it).
func (p *pipeline) startCluster(ctx context.Context, pool *pgxpool.Pool) error {
	floor, err := relay.ClusterFloor(ctx, p.bus, func(ctx context.Context) (uint64, error) {
		return wal.SlotConfirmed(ctx, pool, p.cfg.Replication.Slot)
	})
	if err != nil {
		return fmt.Errorf("read stream %s: %w", p.cfg.Cluster.Stream, err)
	}
	p.hub.SetFloorAt(floor)
	end, err := wal.WALEnd(ctx, pool)
	if err != nil {
		return err
	}
	p.hub.CatchUp(end)
	return nil
}

func (p *pipeline) readerConfig(mapper *events.Mapper) wal.Config {
	cfg := p.cfg
	c := wal.Config{
		DatabaseURL: cfg.Database.URL, Slot: cfg.Replication.Slot, Publication: cfg.Replication.Publication,
		StatusInterval: cfg.Replication.StatusInterval, StandbyTimeout: cfg.Replication.StandbyTimeout,
		HoldBackAge: cfg.Replication.HoldBackAge, HoldBackBytes: uint64(cfg.Replication.HoldBackBytes),
		ReconnectMin: cfg.Replication.ReconnectMin, ReconnectMax: cfg.Replication.ReconnectMax, CheckRelation: mapper.CheckRelation, Retain: mapper.Retain,
		PublishPrefix: cfg.Publish.Prefix,
		OnGap:         p.relay.Gap, Origin: p.origin, Tables: cfg.Events.Tables,
		DownNotice: cfg.Replication.DownNotice, OnDown: p.hub.StreamDown, OnUp: p.hub.StreamUp,
	}
	if p.bus != nil {
		// A standby's reader is down by design; it polls for the slot, and
		// the leader records its progress where the next one finds it.
		c.DownNotice = 0
		c.ReconnectMax, c.StandbyPoll = cfg.Cluster.FailoverPoll, cfg.Cluster.FailoverPoll
		c.Progress = p.bus
	}
	return c
}

// onStart is told the slot's confirmed position and the WAL end each time
// the stream starts; in cluster mode the stream's floor is the bus's.
func (p *pipeline) onStart() func(confirmed, walEnd uint64) {
	if p.bus != nil {
		return nil
	}
	return func(confirmed, walEnd uint64) { p.hub.SetFloor(confirmed); p.hub.CatchUp(walEnd) }
}

// run starts the pipeline's goroutines in g: the source on its own
// context (stopped after the sockets are closed), the rest on g's.
func (p *pipeline) run(ctx, sourceCtx context.Context, g *errgroup.Group) {
	g.Go(func() error { return p.source.Run(sourceCtx) })
	if p.bus != nil {
		g.Go(func() error { return p.bus.Run(ctx, p.relay.Deliver) })
		// Stops with the source, after the sockets closed: their users'
		// leaves reach the other replicas.
		g.Go(func() error { return p.ephemeral.Run(sourceCtx) })
	}
	g.Go(func() error { return p.hub.Run(ctx) })
	g.Go(func() error {
		return relay.Recheck{Hub: p.hub, Members: p.members, Log: p.log}.AfterGaps(ctx, p.hub.Gaps(), p.hub.SubscribedProjects)
	})
	if p.reader != nil {
		g.Go(func() error { return p.monitor.Run(ctx) })
		g.Go(func() error { return p.pubWatch.Run(ctx) })
	}
}

func (p *pipeline) close() {
	if p.bus != nil {
		p.bus.Close()
	}
}

// ready is /readyz's check: the stream (or, for a cluster standby, NATS)
// and the database are reachable, and the publication streams everything.
func (p *pipeline) ready(ctx context.Context, pool *pgxpool.Pool) error {
	if err := p.verifier.Ready(ctx); err != nil {
		return err
	}
	if p.pubWatch != nil {
		if problems := p.pubWatch.Problems(); len(problems) > 0 {
			return errors.New(strings.Join(problems, "; "))
		}
	}
	if p.bus != nil {
		// A standby serves sockets from the stream: it is ready while
		// NATS and the database are.
		if !p.bus.Connected() {
			return errors.New("NATS unreachable")
		}
	} else if !p.source.Live() {
		if err := p.source.LastError(); err != nil {
			return fmt.Errorf("replication stream down: %w", err)
		}
		return errors.New("replication stream not started")
	}
	if err := pool.Ping(ctx); err != nil {
		return fmt.Errorf("database unreachable: %w", err)
	}
	return nil
}

// status is the /api/v1/status document.
func (p *pipeline) status(ctx context.Context, connections int64, log *slog.Logger) api.Status {
	st := api.Status{
		Source: p.cfg.Source, Slot: p.cfg.Replication.Slot, Publication: p.cfg.Replication.Publication, Origin: p.origin,
		WALConnected: p.source.Live(), Cluster: p.bus != nil, Leader: p.bus != nil && p.source.Live(),
		ConfirmedLSN: pglogrepl.LSN(0).String(), ReceivedLSN: pglogrepl.LSN(0).String(),
		Position: p.hub.Last().String(), Connections: connections,
		Subscriptions: p.hub.SubscriptionCount(), HistoryEvents: p.hub.Retained(), PID: os.Getpid(),
	}
	if p.reader != nil {
		st.ConfirmedLSN = pglogrepl.LSN(p.reader.ConfirmedLSN()).String()
		st.ReceivedLSN = pglogrepl.LSN(p.reader.ReceivedLSN()).String()
		slot, err := p.monitor.Read(ctx)
		if err != nil {
			st.SlotError = "slot statistics unavailable"
			log.Warn("status: slot statistics", "err", err)
		}
		st.LagBytes, st.RetainedWALBytes, st.WALStatus, st.SafeWALSize = slot.LagBytes, slot.RetainedWAL, slot.WALStatus, slot.SafeWALSize
	}
	if t := p.hub.LastCommitTime(); !t.IsZero() {
		at := t.UTC().Format(time.RFC3339Nano)
		st.LastEventAt = &at
	}
	return st
}

// replicaName names this process among the replicas: host, pid and a
// random part (a restarted process is another replica).
func replicaName() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%x", host, os.Getpid(), b)
}
