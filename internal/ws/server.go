package ws

import (
	"context"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/walcast/walcast/internal/access"
	"github.com/walcast/walcast/internal/auth"
	"github.com/walcast/walcast/internal/clientaddr"
	"github.com/walcast/walcast/internal/httpjson"
	"github.com/walcast/walcast/internal/hub"
	"github.com/walcast/walcast/internal/metrics"
)

// Close codes beyond RFC 6455's.
const (
	CloseTokenExpired = websocket.StatusCode(4001)
	CloseSlowConsumer = websocket.StatusCode(4008)
)

// Config configures the socket protocol.
type Config struct {
	WriteTimeout time.Duration
	PingInterval time.Duration
	// ReadLimit is the largest client frame in bytes; larger ones close the
	// socket with 1009.
	ReadLimit int64
	// AllowedOrigins are host patterns (path.Match syntax) a browser's
	// Origin may have besides the server's own host.
	AllowedOrigins []string
	// FrameRate and FrameBurst limit client frames per socket.
	FrameRate  float64
	FrameBurst int
	// MaxConnections caps open sockets (503 past it); 0 means no cap.
	MaxConnections int64
	// ConnectRate and ConnectBurst limit new sockets per client address
	// (429 past it); 0 means no limit.
	ConnectRate  float64
	ConnectBurst int
	// WriteWorkers is how many goroutines write queued frames for all
	// sockets; 0 means one per CPU (GOMAXPROCS).
	WriteWorkers int
	// ForbiddenRate and ForbiddenBurst limit the subscribes one user may
	// have refused: past them a subscribe is answered rate_limited without
	// asking the database, so a flood of subscribes to others' projects
	// cannot starve members' lookups. 0 means no limit.
	ForbiddenRate  float64
	ForbiddenBurst int
	// EphemeralRate and EphemeralBurst limit the broadcast and presence
	// frames of one socket (rate_limited past them); MaxEphemeralBytes
	// bounds a broadcast's payload or a presence meta.
	EphemeralRate     float64
	EphemeralBurst    int
	MaxEphemeralBytes int
	// ClientIP is a request's client address (clientaddr.Resolver):
	// what the per-address connect limit counts.
	ClientIP func(*http.Request) string
	// Others, when set, counts the other long-lived connections that
	// share MaxConnections with the sockets (event streams).
	Others func() int64
}

// memberships answers whether a user may see a project, with the proof
// the hub judges the answer by (auth.Memberships).
type memberships interface {
	Lookup(ctx context.Context, projectID, userID string, fresh bool) (access.Proof, error)
}

// Server accepts sockets on /ws.
type Server struct {
	cfg      Config
	hub      *hub.Hub
	verifier *auth.Verifier
	members  memberships
	log      *slog.Logger
	metrics  *metrics.Metrics

	// clock measures token expiry (a test's clock in tests).
	clock clock

	ips *keyedLimiter
	// denials is the per-user budget of refused subscribes.
	denials *keyedLimiter
	// ephemeralUsers is the per-user budget of broadcast and presence
	// frames (besides each socket's): more sockets buy no more of it.
	ephemeralUsers *keyedLimiter
	nextID         atomic.Uint64
	// shuttingDown is cancelled when Shutdown begins.
	shuttingDown context.Context
	stopAll      context.CancelFunc
	// admit orders wg.Add against Shutdown's Wait: a socket is admitted
	// only before shutdown begins (a WaitGroup must not grow from zero
	// while it is being waited on).
	admit    sync.Mutex
	stopping bool
	// byUser are the open sockets of each user, and bans the users whose
	// new sockets are refused until then (Disconnect); guarded by admit.
	byUser map[string]map[*socket]struct{}
	bans   map[string]time.Time
	// kicks is when each user was last disconnected: a socket whose token
	// was checked before that and that is tracked after it is closed too.
	kicks map[string]time.Time
	wg    sync.WaitGroup
	conns atomic.Int64

	workers     []*writeWorker
	stopWorkers chan struct{}
	workersOnce sync.Once
}

// NewServer returns a Server.
func NewServer(cfg Config, h *hub.Hub, v *auth.Verifier, members memberships, log *slog.Logger, m *metrics.Metrics) *Server {
	// The values come from config, which defaults and validates them;
	// zero workers means one per CPU.
	if cfg.WriteWorkers <= 0 {
		cfg.WriteWorkers = runtime.GOMAXPROCS(0)
	}
	shuttingDown, stopAll := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, clock: realClock{}, hub: h, verifier: v, members: members, log: log, metrics: m,
		shuttingDown: shuttingDown, stopAll: stopAll, stopWorkers: make(chan struct{}),
		ips: newKeyedLimiter(cfg.ConnectRate, cfg.ConnectBurst), denials: newKeyedLimiter(cfg.ForbiddenRate, cfg.ForbiddenBurst),
		ephemeralUsers: newKeyedLimiter(cfg.EphemeralRate, cfg.EphemeralBurst)}
	for range cfg.WriteWorkers {
		s.workers = append(s.workers, newWriteWorker())
	}
	return s
}

// Run drives the write workers that move queued frames onto sockets,
// until Shutdown returns or ctx ends, and returns when they have stopped.
// Without it, a socket's frames wait for its own writer to wake.
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for _, w := range s.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(stop)
		}()
	}
	select {
	case <-s.stopWorkers:
	case <-ctx.Done():
	}
	close(stop)
	wg.Wait()
	return nil
}

// Connections returns the number of open sockets.
func (s *Server) Connections() int64 { return s.conns.Load() }

// tokenFromRequest takes the token from ?token= or Authorization: Bearer.
func tokenFromRequest(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if tok, ok := strings.CutPrefix(h, "Bearer "); ok {
			return strings.TrimSpace(tok)
		}
	}
	return r.URL.Query().Get("token")
}

// writeHTTPError writes the JSON error body REST and the upgrade share.
func writeHTTPError(w http.ResponseWriter, status int, code, message string) {
	httpjson.Error(w, status, code, message)
}

// ServeHTTP upgrades an authenticated request and runs the socket.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.shuttingDown.Err() != nil {
		writeHTTPError(w, http.StatusServiceUnavailable, CodeInternal, "server is shutting down")
		return
	}
	if !s.ips.allow(clientaddr.LimitKey(s.cfg.ClientIP(r)), time.Now()) {
		s.metrics.WSRejected.WithLabelValues("ip_rate").Inc()
		w.Header().Set("Retry-After", "1")
		writeHTTPError(w, http.StatusTooManyRequests, CodeRateLimited, "too many new connections from this address; retry later")
		return
	}
	claims, err := s.verifier.Verify(tokenFromRequest(r))
	if err != nil {
		s.metrics.WSRejected.WithLabelValues("unauthorized").Inc()
		writeHTTPError(w, http.StatusUnauthorized, CodeUnauthorized, err.Error())
		return
	}
	s.admit.Lock()
	banned := s.banned(claims.UserID)
	checkedAt := s.clock.Now()
	s.admit.Unlock()
	if banned {
		s.metrics.WSRejected.WithLabelValues("unauthorized").Inc()
		writeHTTPError(w, http.StatusForbidden, CodeForbidden, "this user was disconnected by the operator")
		return
	}
	others := int64(0)
	if s.cfg.Others != nil {
		others = s.cfg.Others()
	}
	if n := s.conns.Add(1); s.cfg.MaxConnections > 0 && n+others > s.cfg.MaxConnections {
		s.conns.Add(-1)
		s.metrics.WSRejected.WithLabelValues("connection_cap").Inc()
		w.Header().Set("Retry-After", "5")
		writeHTTPError(w, http.StatusServiceUnavailable, CodeInternal, "connection limit reached; retry later")
		return
	}
	// The client's byte budget follows its frame budget: frames of up to
	// the read limit at the frame rate.
	cw := &corkingWriter{ResponseWriter: w, timeout: s.cfg.WriteTimeout,
		readRate: s.cfg.FrameRate * float64(s.cfg.ReadLimit), readBurst: s.cfg.FrameBurst * int(s.cfg.ReadLimit)}
	// Pings count against the socket's frame budget like its other
	// frames: past it they are not answered. The callbacks run on the
	// socket's read goroutine, which starts after sc is set, or on the
	// close handshake of a socket refused at shutdown, before it is.
	var sc *socket
	conn, err := websocket.Accept(cw, r, &websocket.AcceptOptions{
		OriginPatterns: s.cfg.AllowedOrigins,
		OnPingReceived: func(context.Context, []byte) bool {
			if sc != nil && sc.closing.Load() {
				return false // read through to the client's close frame
			}
			if sc == nil || sc.allowFrame() {
				return true
			}
			s.metrics.PingsDropped.Inc()
			return false
		},
		// Pongs are frames too: unsolicited ones count like any other.
		OnPongReceived: func(context.Context, []byte) {
			if sc != nil {
				sc.pongAt.Store(monoNow())
				sc.allowFrame()
			}
		},
	})
	if err != nil {
		// Accept has answered the request (403 for a foreign origin).
		s.conns.Add(-1)
		s.metrics.WSRejected.WithLabelValues("handshake").Inc()
		s.log.Debug("websocket handshake refused", "err", err)
		return
	}
	if cw.conn == nil || cw.refill() != nil {
		s.conns.Add(-1)
		_ = conn.CloseNow()
		return
	}
	s.admit.Lock()
	if s.stopping {
		s.admit.Unlock()
		s.conns.Add(-1)
		_ = conn.Close(websocket.StatusGoingAway, "server shutting down")
		return
	}
	if s.banned(claims.UserID) {
		// Disconnected while this socket was being upgraded.
		s.admit.Unlock()
		s.conns.Add(-1)
		_ = conn.Close(CloseDisconnected, "disconnected by the operator")
		return
	}
	s.wg.Add(1)
	s.admit.Unlock()
	s.metrics.WSConnections.Inc()
	sc = &socket{
		srv:       s,
		conn:      conn,
		cork:      cw.conn,
		reader:    cw.reader,
		sent:      make(map[string]prometheus.Counter),
		client:    s.hub.NewClient(claims.UserID),
		id:        s.nextID.Add(1),
		limiter:   rate.NewLimiter(rate.Limit(s.cfg.FrameRate), s.cfg.FrameBurst),
		ephemeral: rate.NewLimiter(rate.Limit(s.cfg.EphemeralRate), s.cfg.EphemeralBurst),
	}
	// Control frames the library could not write at once are this
	// socket's goroutine's to write.
	cw.conn.onBacklog = sc.client.Wake
	cw.conn.onFlood = func() { sc.signal(sigFlood) }
	sc.expires.Store(claims.ExpiresAt.UnixNano())
	sc.worker = s.workers[sc.id%uint64(len(s.workers))]
	sc.client.OnQueued(func() { sc.worker.schedule(sc) })
	sc.client.OnWake(sc.startWriter)
	// Not the request's context: its values (the router's, the
	// middleware's, the HTTP connection's) would live as long as the
	// socket, a kilobyte and more per socket, and nothing here reads them.
	sc.ctx, sc.cancel = context.WithCancel(context.Background())
	sc.log = s.log.With("conn_id", sc.id, "user_id", claims.UserID, "client", s.cfg.ClientIP(r))
	// The socket runs on a goroutine of its own and the handler returns:
	// the HTTP server's goroutine has grown a deep stack serving the
	// request, and at ten thousand sockets those stacks are most of the
	// memory. Shutdown waits for sockets through s.wg.
	s.admit.Lock()
	s.track(sc)
	at, ok := s.kicks[claims.UserID]
	kicked := ok && !at.Before(checkedAt)
	stopping := s.stopping
	s.admit.Unlock()
	if kicked {
		sc.signal(sigKick)
	}
	if stopping {
		sc.signal(sigShutdown) // Shutdown began after this socket's admission
	}
	go func() {
		defer s.wg.Done()
		defer s.conns.Add(-1)
		defer s.metrics.WSConnections.Dec()
		defer s.untrack(sc)
		sc.run()
	}()
}

// Shutdown closes every socket with 1001 and waits for them, or for ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	s.admit.Lock()
	s.stopping = true
	var socks []*socket
	for _, m := range s.byUser {
		for sc := range m {
			socks = append(socks, sc)
		}
	}
	s.admit.Unlock()
	s.stopAll()
	// A socket tracked after the list was taken saw stopping (ServeHTTP).
	for _, sc := range socks {
		sc.signal(sigShutdown)
	}
	defer s.workersOnce.Do(func() { close(s.stopWorkers) })
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
