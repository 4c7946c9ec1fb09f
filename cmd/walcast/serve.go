package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // served only on http.debug_addr
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/walcast/walcast/internal/access"
	"github.com/walcast/walcast/internal/api"
	"github.com/walcast/walcast/internal/auth"
	"github.com/walcast/walcast/internal/cluster"
	"github.com/walcast/walcast/internal/config"
	"github.com/walcast/walcast/internal/demo"
	"github.com/walcast/walcast/internal/events"
	"github.com/walcast/walcast/internal/hub"
	"github.com/walcast/walcast/internal/metrics"
	"github.com/walcast/walcast/internal/notify"
	"github.com/walcast/walcast/internal/wal"
	"github.com/walcast/walcast/internal/ws"
)

func newPool(ctx context.Context, cfg config.Config) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(cfg.Database.URL)
	if err != nil {
		return nil, fmt.Errorf("config: database.url (WALCAST_DATABASE_URL) does not parse: %w", err)
	}
	pcfg.MaxConns = cfg.Database.MaxConns
	pcfg.ConnConfig.RuntimeParams["application_name"] = "walcast-pool"
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database unreachable: %w", err)
	}
	return pool, nil
}

// publisher is the sink between the WAL reader and the hub: it maps a
// transaction to events and publishes them; the hub applies their access
// changes (revocations, grants) as it fans them out.
type publisher struct {
	mapper  *events.Mapper
	hub     *hub.Hub
	log     *slog.Logger
	metrics *metrics.Metrics
	buf     []events.Event
	// bus, in cluster mode, takes the events instead of the hub: every
	// replica's hub is fed from the stream (deliver).
	bus *cluster.Bus
}

func (p *publisher) take(ctx context.Context, txn *events.Txn) error {
	evs, problems := p.mapper.Map(txn, p.buf[:0])
	for _, err := range problems {
		p.metrics.MappingProblems.Inc()
		p.log.Warn("change could not be mapped; failing closed", "err", err, "lsn", pglogrepl.LSN(txn.CommitLSN).String())
	}
	for i := range evs {
		if r := evs[i].Revoke; r != nil && r.Conservative && r.At == evs[i].Position {
			p.metrics.AccessFailClosed.WithLabelValues(metrics.FailClosedUnmappable).Inc()
			p.log.Error("access change could not be attributed: revoked every subscription it might concern",
				"project_id", evs[i].ProjectID, "all_projects", evs[i].AllProjects, "position", r.At.String())
		}
	}
	if p.bus != nil {
		err := p.bus.Publish(ctx, evs)
		clear(evs)
		p.buf = evs[:0]
		return err
	}
	p.hub.Publish(evs)
	// The hub keeps the payloads, not the slice: reuse it.
	clear(evs)
	p.buf = evs[:0]
	return nil
}

// gap signals that changes before walPos may never be streamed: to this
// hub, or through the bus so that every replica's subscribers are told.
func (p *publisher) gap(ctx context.Context, walPos uint64) error {
	now := time.Now()
	if p.bus == nil {
		p.hub.Gap(walPos, now)
		return nil
	}
	ev := events.Event{Position: events.Position{LSN: walPos - 1, Index: ^uint32(0)}, AllProjects: true, Type: events.TypeResyncRequired, CommitTime: now}
	return p.bus.Publish(ctx, []events.Event{ev})
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

// deliver feeds one event from the cluster stream to this replica's hub.
func (p *publisher) deliver(ev events.Event) {
	p.hub.Publish([]events.Event{ev})
}

// restAccess decides REST requests on committed state: always a fresh
// lookup, judged by the hub against the access changes it has published.
type restAccess struct {
	hub     *hub.Hub
	members *auth.Memberships
}

func (a restAccess) Authorize(ctx context.Context, projectID, userID string) (bool, error) {
	return a.hub.Authorize(ctx, projectID, userID, func(ctx context.Context, _ bool) (access.Proof, error) {
		return a.members.Lookup(ctx, projectID, userID, true)
	})
}

// source is where changes come from: the WAL reader or the NOTIFY listener.
type source interface {
	Run(ctx context.Context) error
	Live() bool
	LastError() error
}

// recheck re-verifies a project's subscribers for the NOTIFY source, whose
// notifications do not say whose membership ended.
type recheck struct {
	hub     *hub.Hub
	members *auth.Memberships
	log     *slog.Logger
}

func (r recheck) Recheck(ctx context.Context, projectID string, all bool) {
	if all {
		r.hub.Revoke(projectID, "", events.ReasonProjectDeleted)
		return
	}
	for _, u := range r.hub.SubscriberIDs(projectID) {
		ok, err := r.members.IsMember(ctx, projectID, u)
		if err != nil {
			r.log.Error("membership recheck", "project_id", projectID, "err", err)
			continue
		}
		if !ok {
			r.hub.Revoke(projectID, u, events.ReasonMemberRemoved)
		}
	}
}

func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, rest, err := config.Load(args, getenv, stderr)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("serve: unexpected argument %q", rest[0])
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := newLogger(stdout, cfg.Log.Level)
	if cfg.MemoryLimit > 0 {
		debug.SetMemoryLimit(cfg.MemoryLimit)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg)

	pool, err := newPool(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()

	if cfg.Source == "wal" {
		if err := wal.CheckWALLevel(ctx, pool); err != nil {
			return err
		}
		if err := wal.CheckReplicaIdentity(ctx, pool, cfg.Events.Tables); err != nil {
			return err
		}
		if err := wal.EnsurePublication(ctx, pool, cfg.Replication.Publication, cfg.Events.Tables); err != nil {
			return err
		}
		created, err := wal.EnsureSlot(ctx, pool, cfg.Replication.Slot)
		if err != nil {
			return err
		}
		if created {
			log.Info("replication slot created", "slot", cfg.Replication.Slot)
		}
	}
	origin, err := streamOrigin(ctx, cfg)
	if err != nil {
		return err
	}

	mapper, err := events.NewMapper(events.Options{Tables: cfg.Events.Tables, BulkThreshold: cfg.Events.BulkThreshold, MaxTxnRows: cfg.Events.MaxTxnRows, MaxTxnBytes: cfg.Events.MaxTxnBytes,
		Publication: cfg.Replication.Publication})
	if err != nil {
		return err
	}
	verifier, err := auth.NewVerifier([]byte(cfg.Auth.JWTSecret), cfg.Auth.JWTAlgorithm, cfg.Auth.Leeway)
	if err != nil {
		return err
	}
	mt := cfg.MembershipTable()
	memberQuery := auth.MembershipQuery{Table: mt.QualifiedName(), ProjectIDColumn: mt.ProjectIDColumn, UserIDColumn: mt.UserIDColumn}
	members := auth.NewMemberships(pool, auth.MembershipConfig{
		Query: memberQuery,
		TTL:   cfg.Auth.MembershipCacheTTL, MaxConcurrent: cfg.Auth.MembershipLookups,
	}, m)
	h := hub.New(hub.Config{
		Origin: origin, WALEnd: func(ctx context.Context) (uint64, error) { return wal.WALEnd(ctx, pool) },
		QueueSize: cfg.Hub.QueueSize, HistorySize: cfg.Hub.HistorySize, HistoryAge: cfg.Hub.HistoryAge, HistoryBytes: cfg.Hub.HistoryBytes,
		MaxSubscriptions: cfg.Hub.MaxSubscriptionsPerSocket,
		AccessWait:       cfg.Auth.MembershipWait, AccessKeep: cfg.Auth.AccessMemory, AccessMax: cfg.Auth.AccessMemoryMax,
	}, m)
	pub := &publisher{mapper: mapper, hub: h, log: log, metrics: m}
	clustered := cfg.Cluster.NATSURL != ""
	onStart := func(confirmed, walEnd uint64) { h.SetFloor(confirmed); h.CatchUp(walEnd) }

	downNotice := cfg.Replication.DownNotice
	reconnectMax, standbyPoll := cfg.Replication.ReconnectMax, time.Duration(0)
	if clustered {
		bus, err := cluster.Connect(ctx, cluster.Config{
			URL: cfg.Cluster.NATSURL, Stream: cfg.Cluster.Stream, SubjectPrefix: cfg.Cluster.SubjectPrefix,
			MaxAge: cfg.Cluster.MaxAge, MaxMsgs: cfg.Cluster.MaxMsgs, Duplicates: cfg.Cluster.Duplicates, Origin: origin,
		}, log, m)
		if err != nil {
			return err
		}
		defer bus.Close()
		pub.bus = bus
		// In cluster mode the floor is the stream's.
		onStart = nil
		downNotice = 0 // a standby's reader is down by design
		reconnectMax, standbyPoll = cfg.Cluster.FailoverPoll, cfg.Cluster.FailoverPoll
		// History comes from the stream: the hub knows everything after
		// its oldest retained event, or, for an empty stream, after the
		// slot's confirmed position.
		floor, ok, err := bus.Floor(ctx)
		if err != nil {
			return fmt.Errorf("read stream %s: %w", cfg.Cluster.Stream, err)
		}
		if ok {
			h.SetFloorAt(floor)
		} else {
			var lsn string
			if err := pool.QueryRow(ctx, `SELECT coalesce(confirmed_flush_lsn, pg_current_wal_lsn())::text FROM pg_replication_slots WHERE slot_name = $1`, cfg.Replication.Slot).Scan(&lsn); err != nil {
				return fmt.Errorf("read slot %s: %w", cfg.Replication.Slot, err)
			}
			l, err := pglogrepl.ParseLSN(lsn)
			if err != nil {
				return err
			}
			h.SetFloor(uint64(l))
		}
		// What the database had committed when this replica started is
		// history (the stream replays it).
		end, err := wal.WALEnd(ctx, pool)
		if err != nil {
			return err
		}
		h.CatchUp(end)
		log.Info("cluster mode", "nats", cfg.Cluster.NATSURL, "stream", cfg.Cluster.Stream)
	}
	var progress wal.Progress
	if clustered {
		progress = pub.bus
	}
	var reader source
	var walReader *wal.Reader
	monitor := wal.NewMonitor(pool, cfg.Replication.Slot, cfg.Replication.MonitorEvery, cfg.Replication.RetainedWALWarnBytes, log, m)
	if cfg.Source == "notify" {
		reader = notify.NewListener(cfg.Database.URL, cfg.Notify.Channel, mt.Resource, cfg.ProjectTable().Resource,
			h.Publish, recheck{hub: h, members: members, log: log}, h.SetFloor, log, m)
		log.Warn("source: notify — cache_invalidate only, no resume across restarts; use source: wal where logical replication is allowed")
	} else {
		walReader = wal.NewReader(wal.Config{
			DatabaseURL: cfg.Database.URL, Slot: cfg.Replication.Slot, Publication: cfg.Replication.Publication,
			StatusInterval: cfg.Replication.StatusInterval, StandbyTimeout: cfg.Replication.StandbyTimeout,
			HoldBackAge: cfg.Replication.HoldBackAge, HoldBackBytes: uint64(cfg.Replication.HoldBackBytes),
			ReconnectMax: reconnectMax, StandbyPoll: standbyPoll, CheckRelation: mapper.CheckRelation, Retain: mapper.Retain, OnGap: pub.gap, Origin: origin,
			DownNotice: downNotice, OnDown: h.StreamDown, OnUp: h.StreamUp, Progress: progress,
		}, mapper.Watches, pub.take, onStart, log, m)
		reader = walReader
	}
	sockets := ws.NewServer(ws.Config{
		WriteTimeout: cfg.WS.WriteTimeout, PingInterval: cfg.WS.PingInterval, ReadLimit: cfg.WS.ReadLimit,
		AllowedOrigins: cfg.WS.AllowedOrigins, FrameRate: cfg.WS.FrameRate, FrameBurst: cfg.WS.FrameBurst,
		MaxConnections: cfg.WS.MaxConnections, ConnectRate: cfg.WS.ConnectRate, ConnectBurst: cfg.WS.ConnectBurst,
		WriteWorkers: cfg.WS.WriteWorkers, ForbiddenRate: cfg.WS.ForbiddenRate, ForbiddenBurst: cfg.WS.ForbiddenBurst,
	}, h, verifier, members, log, m)

	var pubWatch *wal.PublicationWatch
	if walReader != nil {
		leading := func() bool { return !clustered || walReader.Live() }
		pubWatch = wal.NewPublicationWatch(pool, cfg.Replication.Publication, cfg.Replication.Slot, cfg.Events.Tables, cfg.Replication.PublicationCheck, h, leading, log, m)
	}
	ready := func(ctx context.Context) error {
		if pubWatch != nil {
			if problems := pubWatch.Problems(); len(problems) > 0 {
				return errors.New(strings.Join(problems, "; "))
			}
		}
		if clustered {
			// A standby serves sockets from the stream: it is ready while
			// NATS and the database are.
			if !pub.bus.Connected() {
				return errors.New("NATS unreachable")
			}
		} else if !reader.Live() {
			if err := reader.LastError(); err != nil {
				return fmt.Errorf("replication stream down: %w", err)
			}
			return errors.New("replication stream not started")
		}
		if err := pool.Ping(ctx); err != nil {
			return fmt.Errorf("database unreachable: %w", err)
		}
		return nil
	}
	status := func(ctx context.Context) map[string]any {
		var st wal.SlotStats
		var serr error
		var confirmed, received uint64
		if walReader != nil {
			st, serr = monitor.Read(ctx)
			confirmed, received = walReader.ConfirmedLSN(), walReader.ReceivedLSN()
		}
		doc := map[string]any{
			"source":             cfg.Source,
			"slot":               cfg.Replication.Slot,
			"publication":        cfg.Replication.Publication,
			"wal_connected":      reader.Live(),
			"cluster":            clustered,
			"leader":             clustered && reader.Live(),
			"confirmed_lsn":      pglogrepl.LSN(confirmed).String(),
			"received_lsn":       pglogrepl.LSN(received).String(),
			"position":           h.Last().String(),
			"lag_bytes":          st.LagBytes,
			"retained_wal_bytes": st.RetainedWAL,
			"wal_status":         st.WALStatus,
			"safe_wal_size":      st.SafeWALSize,
			"connections":        sockets.Connections(),
			"subscriptions":      h.SubscriptionCount(),
			"history_events":     h.Retained(),
			"last_event_at":      nil,
			"pid":                os.Getpid(),
		}
		if serr != nil {
			doc["slot_error"] = "slot statistics unavailable"
			log.Warn("status: slot statistics", "err", serr)
		}
		if t := h.LastCommitTime(); !t.IsZero() {
			doc["last_event_at"] = t.UTC().Format(time.RFC3339Nano)
		}
		return doc
	}
	var demoRoutes func(chi.Router)
	if cfg.Demo.Enabled {
		log.Warn("demo mode is on: /demo/ issues tokens to anyone; never use it in production")
		demoRoutes = func(r chi.Router) {
			demo.Mount(r, demo.Deps{Pool: pool, Verifier: verifier, Members: members, Secret: []byte(cfg.Auth.JWTSecret), Algorithm: cfg.Auth.JWTAlgorithm})
		}
	}
	router := api.NewRouter(api.Deps{
		Demo: demoRoutes,
		Config: api.Config{MaxBodyBytes: cfg.API.MaxBodyBytes, MaxMessageChars: cfg.API.MaxMessageChars, StatusToken: cfg.API.StatusToken,
			MemberCondition: auth.MemberCondition(memberQuery, 1, 2)},
		Pool: pool, Verifier: verifier, Access: restAccess{hub: h, members: members}, WS: sockets, Gatherer: reg,
		Ready: ready, Status: status, Log: log, Metrics: m,
	})

	ln, err := net.Listen("tcp", cfg.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.HTTP.Addr, err)
	}
	srv := api.NewServer(router, api.ServerLimits{
		ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout, ReadTimeout: cfg.HTTP.ReadTimeout,
		WriteTimeout: cfg.HTTP.WriteTimeout, IdleTimeout: cfg.HTTP.IdleTimeout, MaxConnections: cfg.HTTP.MaxConnections,
	}, slog.NewLogLogger(log.Handler(), slog.LevelWarn), m)
	log.Info("walcast listening", "addr", ln.Addr().String(), "slot", cfg.Replication.Slot, "publication", cfg.Replication.Publication)

	if cfg.HTTP.DebugAddr != "" {
		dbg := &http.Server{Addr: cfg.HTTP.DebugAddr, Handler: http.DefaultServeMux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = dbg.ListenAndServe() }()
		defer dbg.Close()
		log.Info("pprof listening", "addr", cfg.HTTP.DebugAddr)
	}

	readerCtx, stopReader := context.WithCancel(context.WithoutCancel(ctx))
	defer stopReader()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return reader.Run(readerCtx) })
	if clustered {
		g.Go(func() error { return pub.bus.Run(gctx, pub.deliver) })
		g.Go(func() error {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				leader := 0.0
				if reader.Live() {
					leader = 1
				}
				m.ClusterLeader.Set(leader)
				select {
				case <-gctx.Done():
					return nil
				case <-t.C:
				}
			}
		})
	}
	g.Go(func() error { return h.Run(gctx) })
	if walReader != nil {
		g.Go(func() error { return monitor.Run(gctx) })
		g.Go(func() error { return pubWatch.Run(gctx) })
	}
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		// Stop accepting, close sockets with 1001, then stop the reader
		// (which sends a last status update), then the pool (deferred).
		log.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), cfg.HTTP.ShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("http shutdown", "err", err)
		}
		if err := sockets.Shutdown(sctx); err != nil {
			log.Warn("socket shutdown", "err", err)
		}
		stopReader()
		return nil
	})
	err = g.Wait()
	log.Info("stopped")
	return err
}
