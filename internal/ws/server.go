package ws

import (
	"context"
	"errors"
	"log/slog"
	"net"
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
	"github.com/walcast/walcast/internal/events"
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

	ips *keyedLimiter
	// denials is the per-user budget of refused subscribes.
	denials *keyedLimiter
	nextID  atomic.Uint64
	// shuttingDown is cancelled when Shutdown begins.
	shuttingDown context.Context
	stopAll      context.CancelFunc
	// admit orders wg.Add against Shutdown's Wait: a socket is admitted
	// only before shutdown begins (a WaitGroup must not grow from zero
	// while it is being waited on).
	admit    sync.Mutex
	stopping bool
	wg       sync.WaitGroup
	conns    atomic.Int64

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
	s := &Server{cfg: cfg, hub: h, verifier: v, members: members, log: log, metrics: m,
		shuttingDown: shuttingDown, stopAll: stopAll, stopWorkers: make(chan struct{}),
		ips: newKeyedLimiter(cfg.ConnectRate, cfg.ConnectBurst), denials: newKeyedLimiter(cfg.ForbiddenRate, cfg.ForbiddenBurst)}
	for range cfg.WriteWorkers {
		s.workers = append(s.workers, newWriteWorker())
	}
	return s
}

// Run drives the write workers that move queued frames onto sockets,
// until Shutdown has closed every socket or ctx ends, and returns when
// they have stopped. Sockets are served only while it runs.
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
	if !s.ips.allow(clientIP(r), time.Now()) {
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
	if n := s.conns.Add(1); s.cfg.MaxConnections > 0 && n > s.cfg.MaxConnections {
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
	// frames: past it they are not answered. The callback runs on the
	// socket's read goroutine, which starts after sc is set.
	var sc *socket
	conn, err := websocket.Accept(cw, r, &websocket.AcceptOptions{
		OriginPatterns: s.cfg.AllowedOrigins,
		OnPingReceived: func(context.Context, []byte) bool {
			if sc.allowFrame() {
				return true
			}
			s.metrics.PingsDropped.Inc()
			return false
		},
		// Pongs are frames too: unsolicited ones count like any other.
		OnPongReceived: func(context.Context, []byte) { sc.allowFrame() },
	})
	if err != nil {
		// Accept has answered the request (403 for a foreign origin).
		s.conns.Add(-1)
		s.metrics.WSRejected.WithLabelValues("handshake").Inc()
		s.log.Debug("websocket handshake refused", "err", err)
		return
	}
	if cw.conn == nil {
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
	s.wg.Add(1)
	s.admit.Unlock()
	s.metrics.WSConnections.Inc()
	sc = &socket{
		srv:     s,
		conn:    conn,
		cork:    cw.conn,
		sent:    make(map[string]prometheus.Counter),
		client:  s.hub.NewClient(claims.UserID),
		id:      s.nextID.Add(1),
		limiter: rate.NewLimiter(rate.Limit(s.cfg.FrameRate), s.cfg.FrameBurst),
	}
	// Control frames the library could not write at once are this
	// socket's goroutine's to write.
	cw.conn.onBacklog = sc.client.Wake
	cw.conn.onFlood = func() { sc.signal(sigFlood) }
	sc.expires.Store(claims.ExpiresAt.UnixNano())
	sc.worker = s.workers[sc.id%uint64(len(s.workers))]
	sc.client.OnQueued(func() { sc.worker.schedule(sc) })
	sc.log = s.log.With("conn_id", sc.id, "user_id", claims.UserID)
	// The socket runs on a goroutine of its own and the handler returns:
	// the HTTP server's goroutine has grown a deep stack serving the
	// request, and at ten thousand sockets those stacks are most of the
	// memory. Shutdown waits for sockets through s.wg.
	go func() {
		defer s.wg.Done()
		defer s.conns.Add(-1)
		defer s.metrics.WSConnections.Dec()
		sc.run(context.WithoutCancel(r.Context()))
	}()
}

// Shutdown closes every socket with 1001 and waits for them, or for ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	s.admit.Lock()
	s.stopping = true
	s.admit.Unlock()
	s.stopAll()
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

type socket struct {
	srv    *Server
	conn   *websocket.Conn
	cork   *corkConn
	sent   map[string]prometheus.Counter // events_sent_total by type; guarded by wmu
	client *hub.Client
	id     uint64
	// expires is the token's expiry in Unix nanoseconds; refresh_token
	// moves it.
	expires atomic.Int64
	expiry  *time.Timer
	// tasks are the socket's goroutines besides its reader: the write
	// loop and pings in flight; run waits for them.
	tasks sync.WaitGroup
	// pingTimer is nil when pings are off.
	pingTimer *time.Timer
	// signals are socket events for the writer (sig* bits), each followed
	// by a Wake of the client: the writer waits on one channel only.
	signals atomic.Uint32
	// wmu is held by whoever writes queued frames: the socket's own
	// goroutine or its write worker.
	wmu       sync.Mutex
	worker    *writeWorker
	scheduled atomic.Bool // waiting in worker's queue
	limiter   *rate.Limiter
	// overLimit counts frames in a row over the rate; read goroutine only.
	overLimit int
	log       *slog.Logger
}

// floodFrames is how many frames in a row past its rate a socket may send
// before it is closed: reading a flood costs CPU even when nothing is
// answered, and no client needs that many.
const floodFrames = 100

// allowFrame takes a client frame (data or ping) from the socket's
// budget. A socket that keeps sending past it is closed with 1008.
func (sc *socket) allowFrame() bool {
	if sc.limiter.Allow() {
		sc.overLimit = 0
		return true
	}
	if sc.overLimit++; sc.overLimit == floodFrames {
		sc.signal(sigFlood)
	}
	return false
}

// Socket events the writer acts on besides queued frames.
const (
	sigPing uint32 = 1 << iota
	sigExpiry
	sigShutdown
	sigDone
	sigFlood
)

func (sc *socket) signal(sig uint32) {
	sc.signals.Or(sig)
	sc.client.Wake()
}

func (sc *socket) run(parent context.Context) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	defer cancel()
	sc.log.Debug("socket open")

	// Timers and cancellations signal the writer instead of being cases
	// of its select; none of them holds a goroutine while it waits.
	defer context.AfterFunc(ctx, func() { sc.signal(sigDone) })()
	defer context.AfterFunc(sc.srv.shuttingDown, func() { sc.signal(sigShutdown) })()
	sc.expiry = time.AfterFunc(time.Until(time.Unix(0, sc.expires.Load())), func() { sc.signal(sigExpiry) })
	defer sc.expiry.Stop()
	if interval := sc.srv.cfg.PingInterval; interval > 0 {
		// The writer re-arms it after each ping.
		sc.pingTimer = time.AfterFunc(interval, func() { sc.signal(sigPing) })
		defer sc.pingTimer.Stop()
	}

	sc.tasks.Add(1)
	go func() { defer sc.tasks.Done(); sc.writeLoop(ctx); cancel() }()
	sc.readLoop(ctx)
	cancel()
	sc.tasks.Wait()
	sc.srv.hub.Remove(sc.client)
	_ = sc.conn.CloseNow()
	sc.log.Debug("socket closed")
}

func (sc *socket) readLoop(ctx context.Context) {
	sc.conn.SetReadLimit(sc.srv.cfg.ReadLimit)
	for {
		typ, data, err := sc.conn.Read(ctx)
		if err != nil {
			return
		}
		if !sc.allowFrame() {
			// Said once per run of dropped frames: an error per frame
			// would let a flood fill the socket's own queue.
			if sc.overLimit == 1 {
				sc.sendError(CodeRateLimited, "too many frames; slow down", "")
			}
			continue
		}
		if typ != websocket.MessageText {
			sc.sendError(CodeBadRequest, "binary frames are not accepted; send JSON text frames", "")
			continue
		}
		cmd, err := ParseFrame(data)
		if err != nil {
			sc.sendError(CodeBadRequest, err.Error(), "")
			continue
		}
		sc.handle(ctx, cmd)
	}
}

func (sc *socket) handle(ctx context.Context, cmd Command) {
	h := sc.srv.hub
	switch cmd.Action {
	case ActionPing:
		h.Send(sc.client, "pong", pongFrame)
	case ActionRefreshToken:
		claims, err := sc.srv.verifier.Verify(cmd.Token)
		switch {
		case err != nil:
			sc.sendError(CodeUnauthorized, err.Error(), "")
		case claims.UserID != sc.client.UserID():
			sc.sendError(CodeUnauthorized, "the new token is for another user", "")
		default:
			sc.expires.Store(claims.ExpiresAt.UnixNano())
			sc.expiry.Reset(time.Until(claims.ExpiresAt))
			h.Send(sc.client, "token_refreshed", tokenRefreshedFrame(claims.ExpiresAt))
		}
	case ActionUnsubscribe:
		if err := h.Unsubscribe(sc.client, cmd.ProjectID, unsubscribedFrame(cmd.ProjectID)); err != nil {
			sc.sendError(CodeBadRequest, err.Error(), cmd.ProjectID)
		}
	case ActionSubscribe:
		userID := sc.client.UserID()
		// A refused subscribe costs the user a token of a budget shared
		// by all their sockets.
		if sc.srv.denials.empty(userID, time.Now()) {
			sc.sendError(CodeRateLimited, "too many refused subscribes; slow down", cmd.ProjectID)
			return
		}
		subCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		since := cmd.Since
		if since != nil && h.Foreign(cmd.Origin) {
			// A position of another cluster, timeline or slot: it cannot
			// be resumed from (the hub answers resync_required).
			since = &events.Position{}
		}
		res, err := h.Subscribe(subCtx, sc.client, cmd.ProjectID, since, func(ctx context.Context, fresh bool) (access.Proof, error) {
			return sc.srv.members.Lookup(ctx, cmd.ProjectID, userID, fresh)
		})
		switch {
		case err == nil:
			sc.log.Debug("subscribed", "project_id", cmd.ProjectID, "position", res.Position.String(), "replayed", res.Replayed, "resync", res.Resync)
		case errors.Is(err, hub.ErrForbidden):
			sc.srv.denials.allow(userID, time.Now())
			sc.sendError(CodeForbidden, "not a member of this project", cmd.ProjectID)
		case errors.Is(err, hub.ErrAlreadySubscribed), errors.Is(err, hub.ErrTooManySubs):
			sc.sendError(CodeBadRequest, err.Error(), cmd.ProjectID)
		case errors.Is(err, hub.ErrClientClosed):
		case errors.Is(err, hub.ErrAccessUnsettled), errors.Is(err, hub.ErrAccessSuspended):
			// Fail closed, and say why: the client may try again.
			sc.log.Warn("subscribe refused", "project_id", cmd.ProjectID, "err", err)
			sc.sendError(CodeInternal, err.Error(), cmd.ProjectID)
		default:
			sc.log.Error("subscribe", "project_id", cmd.ProjectID, "err", err)
			sc.sendError(CodeInternal, "subscription could not be checked; try again", cmd.ProjectID)
		}
	}
}

func (sc *socket) sendError(code, message, projectID string) {
	sc.srv.metrics.ClientErrors.WithLabelValues(code).Inc()
	sc.srv.hub.Send(sc.client, "error", marshalError(code, message, projectID))
}

// writeLoop is the socket's own writer. Its write worker writes most
// frames; this goroutine acts on everything else, blocking if it must:
// the socket's events, frames the worker handed over (a socket with a
// full buffer), and queues when no worker is set.
func (sc *socket) writeLoop(ctx context.Context) {
	var items []hub.Item
	for {
		<-sc.client.Ready()
		if !sc.writeQueued(ctx, &items) {
			return
		}
	}
}

// writeQueued reports false when the socket is done.
func (sc *socket) writeQueued(ctx context.Context, items *[]hub.Item) bool {
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	// An overflow wins over queued frames: the client gets the 4008
	// right after what is already on the wire.
	if sc.client.IsSlow() {
		sc.closeSlow()
		return false
	}
	if sig := sc.signals.Swap(0); sig != 0 {
		switch {
		case sig&sigDone != 0:
			return false
		case sig&sigFlood != 0:
			// No closing handshake: waiting for the peer's close frame
			// would mean reading its flood until the timeout. The close
			// frame goes if the socket takes it at once.
			sc.srv.metrics.FloodCloses.Inc()
			sc.log.Warn("client floods frames past its rate: closing socket")
			sc.cork.cutToFrameInFlight()
			sc.cork.writeClose(uint16(websocket.StatusPolicyViolation), "too many frames")
			sc.cork.tryFlush()
			_ = sc.conn.CloseNow()
			return false
		case sig&sigShutdown != 0:
			sc.close(websocket.StatusGoingAway, "server shutting down")
			return false
		case sig&sigExpiry != 0 && !time.Now().Before(time.Unix(0, sc.expires.Load())):
			// A refresh_token may have moved the expiry after the timer
			// fired; only a token past it closes.
			sc.close(CloseTokenExpired, "token expired")
			return false
		}
		if sig&sigPing != 0 {
			// Added while the write loop holds its own count: Wait in
			// run covers it.
			sc.tasks.Add(1)
			go func() { defer sc.tasks.Done(); sc.ping(ctx) }()
			sc.pingTimer.Reset(sc.srv.cfg.PingInterval)
		}
	}
	// What a worker could not write goes first.
	if err := sc.cork.flush(); err != nil {
		return sc.writeFailed(err)
	}
	// Everything queued now goes out in one TCP write.
	*items = sc.client.Take((*items)[:0])
	if len(*items) == 0 {
		return true
	}
	for _, it := range *items {
		sc.writeItem(it)
	}
	clear(*items)
	if cap(*items) > 1024 {
		*items = nil
	}
	if err := sc.cork.flush(); err != nil {
		return sc.writeFailed(err)
	}
	return true
}

// writeFailed ends the socket after a failed write and returns false. A
// write that timed out is a client that does not keep up: it is closed
// with 4008 after the frame in flight, like one whose queue overflowed.
func (sc *socket) writeFailed(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		if !sc.client.IsSlow() { // else the hub counted it when its queue overflowed
			sc.srv.metrics.SlowConsumerCloses.Inc()
		}
		sc.srv.hub.Remove(sc.client)
		sc.closeSlow()
		return false
	}
	sc.log.Debug("write failed", "err", err)
	return false
}

// writeItem appends an item's frames to the socket's buffer.
func (sc *socket) writeItem(it hub.Item) {
	defer sc.client.Written(it)
	if it.Frame != nil {
		sc.write(it.Frame, it.Replayed)
	}
	for _, f := range it.Batch {
		sc.write(f, it.Replayed)
	}
}

// write appends one frame to the socket's buffer; the deadline applies to
// the write that sends it.
func (sc *socket) write(f *hub.Frame, replayed bool) {
	sc.cork.writeText(f.Data)
	c, ok := sc.sent[f.Type]
	if !ok {
		c = sc.srv.metrics.EventsSent.WithLabelValues(f.Type)
		sc.sent[f.Type] = c
	}
	c.Inc()
	if !replayed && !f.CommitTime.IsZero() {
		sc.srv.metrics.DeliveryLatency.Observe(time.Since(f.CommitTime).Seconds())
	}
}

// closeSlow closes with 4008 right after the frame on the wire: the
// frames behind it are dropped, so the close frame does not wait for a
// client that reads slowly to take them all.
func (sc *socket) closeSlow() {
	sc.log.Warn("slow consumer: closing socket", "queued_frames", sc.client.Len())
	sc.cork.cutToFrameInFlight()
	sc.close(CloseSlowConsumer, "slow consumer")
}

// close sends a close frame after everything buffered and waits briefly
// for the peer's. The library queues the frame without waiting for the
// network; this goroutine writes it, on this socket only.
func (sc *socket) close(code websocket.StatusCode, reason string) {
	done := make(chan struct{})
	go func() {
		_ = sc.conn.Close(code, reason)
		close(done)
	}()
	timeout := time.NewTimer(sc.srv.cfg.WriteTimeout)
	defer timeout.Stop()
	for {
		if err := sc.cork.flush(); err != nil {
			_ = sc.conn.CloseNow()
			<-done
			return
		}
		select {
		case <-done:
			return
		case <-timeout.C:
			_ = sc.conn.CloseNow()
			<-done
			return
		case <-sc.client.Ready(): // the library queued more (its close frame)
		}
	}
}

// ping sends a WebSocket ping and closes the socket when no pong comes
// within the write timeout. It runs on a short-lived goroutine because a
// ping waits for its pong, which the read loop receives.
func (sc *socket) ping(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, sc.srv.cfg.WriteTimeout)
	err := sc.conn.Ping(pctx)
	cancel()
	if err != nil && ctx.Err() == nil {
		sc.log.Debug("ping failed; closing", "err", err)
		_ = sc.conn.CloseNow()
	}
}
