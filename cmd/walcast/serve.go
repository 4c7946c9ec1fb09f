package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // served only on http.debug_addr
	"runtime/debug"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/walcast/walcast/internal/api"
	"github.com/walcast/walcast/internal/auth"
	"github.com/walcast/walcast/internal/clientaddr"
	"github.com/walcast/walcast/internal/config"
	"github.com/walcast/walcast/internal/demo"
	"github.com/walcast/walcast/internal/metrics"
	"github.com/walcast/walcast/internal/relay"
	"github.com/walcast/walcast/internal/sse"
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

// serve runs walcast until ctx ends: the pipeline (pipeline.go), the
// socket server and the HTTP routes, each goroutine owned by one errgroup.
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

	// Everything that can fail without the database fails before the
	// pipeline creates anything in it: a start refused later (the port in
	// use) must not leave a new slot making the primary keep WAL.
	ln, err := net.Listen("tcp", cfg.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.HTTP.Addr, err)
	}
	defer ln.Close()
	var dbgLn net.Listener
	if cfg.HTTP.DebugAddr != "" {
		if dbgLn, err = net.Listen("tcp", cfg.HTTP.DebugAddr); err != nil {
			return fmt.Errorf("pprof: listen on %s: %w", cfg.HTTP.DebugAddr, err)
		}
		defer dbgLn.Close()
	}

	pool, err := newPool(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	p, err := newPipeline(ctx, cfg, pool, log, m)
	if err != nil {
		return err
	}
	defer p.close()

	clients, err := clientaddr.New(cfg.HTTP.TrustedProxies, cfg.HTTP.ClientAddressHeader)
	if err != nil {
		return err
	}
	var streams *sse.Server // set below, before the listener serves
	sockets := ws.NewServer(ws.Config{
		ClientIP: clients.ClientIP, Others: func() int64 { return streams.Open() },
		WriteTimeout: cfg.WS.WriteTimeout, PingInterval: cfg.WS.PingInterval, ReadLimit: cfg.WS.ReadLimit,
		AllowedOrigins: cfg.WS.AllowedOrigins, FrameRate: cfg.WS.FrameRate, FrameBurst: cfg.WS.FrameBurst,
		MaxConnections: cfg.WS.MaxConnections, ConnectRate: cfg.WS.ConnectRate, ConnectBurst: cfg.WS.ConnectBurst,
		WriteWorkers: cfg.WS.WriteWorkers, ForbiddenRate: cfg.WS.ForbiddenRate, ForbiddenBurst: cfg.WS.ForbiddenBurst,
		EphemeralRate: cfg.WS.EphemeralRate, EphemeralBurst: cfg.WS.EphemeralBurst, MaxEphemeralBytes: cfg.WS.EphemeralMaxBytes,
	}, p.hub, p.verifier, p.members, log, m)
	streams = sse.NewServer(sse.Config{MaxProjects: cfg.Hub.MaxSubscriptionsPerSocket, MaxStreamsPerUser: cfg.WS.SSEStreamsPerUser,
		MaxStreams: cfg.WS.MaxConnections, Others: sockets.Connections, OnStream: api.Streaming,
		ForbiddenRate: cfg.WS.ForbiddenRate, ForbiddenBurst: cfg.WS.ForbiddenBurst, ConnectRate: cfg.WS.ConnectRate, ConnectBurst: cfg.WS.ConnectBurst,
		ClientIP:  clients.ClientIP,
		KeepAlive: cfg.WS.PingInterval, WriteTimeout: cfg.WS.WriteTimeout}, p.hub, p.verifier, p.members, log, m)
	var demoRoutes func(chi.Router)
	if cfg.Demo.Enabled {
		log.Warn("demo mode is on: /demo/ issues tokens to anyone; never use it in production")
		demoRoutes = func(r chi.Router) {
			demo.Mount(r, demo.Deps{Pool: pool, Verifier: p.verifier, Members: p.members, Secret: []byte(cfg.Auth.JWTSecret), Algorithm: cfg.Auth.JWTAlgorithm})
		}
	}
	mt := cfg.MembershipTable()
	router := api.NewRouter(api.Deps{
		Demo: demoRoutes,
		Config: api.Config{MaxBodyBytes: cfg.API.MaxBodyBytes, MaxMessageChars: cfg.API.MaxMessageChars, StatusToken: cfg.API.StatusToken, AdminToken: cfg.API.AdminToken,
			MemberCondition: auth.MemberCondition(auth.MembershipQuery{Table: mt.QualifiedName(), ProjectIDColumn: mt.ProjectIDColumn, UserIDColumn: mt.UserIDColumn}, 1, 2)},
		Pool: pool, Verifier: p.verifier, Access: relay.RESTAccess{Hub: p.hub, Members: p.members}, WS: sockets, SocketPaths: cfg.WS.Paths, SSE: streams, Gatherer: reg,
		Ready:  func(ctx context.Context) error { return p.ready(ctx, pool) },
		Status: func(ctx context.Context) api.Status { return p.status(ctx, sockets.Connections(), log) },
		Log:    log, Metrics: m, ClientIP: clients.ClientIP,
		Publisher: p.publisher, PublishOff: p.publishOff(),
		Disconnect: func(userID string, banFor time.Duration) int {
			if p.ephemeral != nil {
				p.ephemeral.OnDisconnect(userID, banFor)
			}
			return sockets.Disconnect(userID, banFor)
		},
	})
	srv := api.NewServer(router, api.ServerLimits{
		ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout, ReadTimeout: cfg.HTTP.ReadTimeout,
		WriteTimeout: cfg.HTTP.WriteTimeout, IdleTimeout: cfg.HTTP.IdleTimeout, MaxConnections: cfg.HTTP.MaxConnections,
	}, slog.NewLogLogger(log.Handler(), slog.LevelWarn), m)
	// The server's shutdown waits for its handlers, event streams among
	// them: they end as it begins.
	srv.RegisterOnShutdown(streams.Stop)
	log.Info("walcast listening", "addr", ln.Addr().String(), "slot", cfg.Replication.Slot, "publication", cfg.Replication.Publication, "origin", p.origin)

	// The source stops last: after the sockets are closed it sends a last
	// status update.
	sourceCtx, stopSource := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSource()
	g, gctx := errgroup.WithContext(ctx)
	if p.ephemeral != nil {
		p.ephemeral.Kick = sockets.Disconnect
	}
	p.run(gctx, sourceCtx, g)
	// The write workers serve the sockets until Shutdown has closed them.
	g.Go(func() error { return sockets.Run(sourceCtx) })
	serveHTTP(g, srv, ln)
	if cfg.HTTP.DebugAddr != "" {
		dbg := &http.Server{Addr: cfg.HTTP.DebugAddr, Handler: http.DefaultServeMux, ReadHeaderTimeout: 10 * time.Second}
		log.Info("pprof listening", "addr", cfg.HTTP.DebugAddr)
		g.Go(func() error {
			if err := dbg.Serve(dbgLn); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("pprof on %s: %w", cfg.HTTP.DebugAddr, err)
			}
			return nil
		})
		g.Go(func() error { <-gctx.Done(); return dbg.Close() })
	}
	g.Go(func() error {
		<-gctx.Done()
		// Stop accepting, close sockets with 1001, then stop the source,
		// then the pool (deferred).
		log.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), cfg.HTTP.ShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("http shutdown", "err", err)
		}
		if err := sockets.Shutdown(sctx); err != nil {
			log.Warn("socket shutdown", "err", err)
		}
		if err := streams.Shutdown(sctx); err != nil {
			log.Warn("event stream shutdown", "err", err)
		}
		stopSource()
		return nil
	})
	err = g.Wait()
	log.Info("stopped")
	return err
}

// serveHTTP serves the routes on ln in g until the server is shut down.
func serveHTTP(g *errgroup.Group, srv *http.Server, ln net.Listener) {
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
}
