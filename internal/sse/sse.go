// Package sse serves walcast's events as Server-Sent Events, for networks
// that block WebSockets: GET /sse?project_id=…[&project_id=…] with the same
// token, the same frames (each one SSE message whose data is the frame's
// JSON) and the same guarantees as the socket. Each frame with a position
// carries it as the SSE id, so the browser's own Last-Event-ID resumes
// exactly where the stream stopped (or is answered resync_required).
// Broadcast and presence need the socket: an event stream is one-way.
package sse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/walcast/walcast/internal/access"
	"github.com/walcast/walcast/internal/auth"
	"github.com/walcast/walcast/internal/clientaddr"
	"github.com/walcast/walcast/internal/events"
	"github.com/walcast/walcast/internal/httpjson"
	"github.com/walcast/walcast/internal/hub"
	"github.com/walcast/walcast/internal/jsonx"
	"github.com/walcast/walcast/internal/metrics"
)

// Config bounds the streams.
type Config struct {
	// MaxProjects is how many projects one stream may follow.
	MaxProjects int
	// MaxStreamsPerUser caps one user's open streams (429 past it), and
	// MaxStreams all of them together with Others() (the sockets: one
	// budget for both; 503 past it).
	MaxStreamsPerUser int
	MaxStreams        int64
	Others            func() int64
	// OnStream, when set, is told of each request that becomes a stream,
	// and the func it returns when the stream ends (api.Streaming takes the
	// connection out of the plain-HTTP connection cap meanwhile).
	OnStream func(*http.Request) func()
	// ForbiddenRate and ForbiddenBurst bound a user's refused projects
	// (each one a database lookup), and ConnectRate and ConnectBurst the
	// streams opened per client address, as on the socket (0: no bound).
	ForbiddenRate, ConnectRate   float64
	ForbiddenBurst, ConnectBurst int
	// ClientIP is a request's client address (clientaddr.Resolver).
	ClientIP func(*http.Request) string
	// KeepAlive is how often an idle stream gets a comment line (proxies
	// close silent connections); WriteTimeout bounds each write.
	KeepAlive, WriteTimeout time.Duration
}

// memberships answers whether a user may see a project (auth.Memberships).
type memberships interface {
	Lookup(ctx context.Context, projectID, userID string, fresh bool) (access.Proof, error)
}

// Server serves event streams.
type Server struct {
	cfg      Config
	hub      *hub.Hub
	verifier *auth.Verifier
	members  memberships
	log      *slog.Logger
	metrics  *metrics.Metrics

	stop     context.Context
	stopAll  context.CancelFunc
	mu       sync.Mutex
	stopping bool
	perUser  map[string]int
	open     int64
	wg       sync.WaitGroup
	// budgets of refused projects per user and new streams per address
	denials, connects *budgets
}

// budgets is a token bucket per key, swept now and then.
type budgets struct {
	rate  rate.Limit
	burst int
	mu    sync.Mutex
	by    map[string]*rate.Limiter
	swept time.Time
}

// empty reports whether key's bucket has no token left, taking none:
// refused subscribes are checked before and charged after, as on the
// socket.
func (b *budgets) empty(key string) bool {
	if b.rate <= 0 {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	l := b.by[key]
	return l != nil && l.TokensAt(time.Now()) < 1
}

func newBudgets(perSecond float64, burst int) *budgets {
	return &budgets{rate: rate.Limit(perSecond), burst: burst, by: map[string]*rate.Limiter{}}
}

// allow takes a token of key's bucket (always true with no rate).
func (b *budgets) allow(key string) bool {
	if b.rate <= 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if now := time.Now(); now.Sub(b.swept) > time.Minute || len(b.by) > 100_000 {
		b.swept = now
		for k, l := range b.by {
			if l.TokensAt(now) >= float64(b.burst) {
				delete(b.by, k)
			}
		}
	}
	l := b.by[key]
	if l == nil {
		l = rate.NewLimiter(b.rate, b.burst)
		b.by[key] = l
	}
	return l.Allow()
}

// NewServer returns a Server.
func NewServer(cfg Config, h *hub.Hub, v *auth.Verifier, members memberships, log *slog.Logger, m *metrics.Metrics) *Server {
	stop, stopAll := context.WithCancel(context.Background())
	return &Server{cfg: cfg, hub: h, verifier: v, members: members, log: log, metrics: m, stop: stop, stopAll: stopAll, perUser: map[string]int{},
		denials: newBudgets(cfg.ForbiddenRate, cfg.ForbiddenBurst), connects: newBudgets(cfg.ConnectRate, cfg.ConnectBurst)}
}

// Stop ends every stream now (the HTTP server's shutdown waits for the
// handlers: streams must end first); Shutdown also waits for them.
func (s *Server) Stop() {
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	s.stopAll()
}

// Open is how many streams are open.
func (s *Server) Open() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open
}

// Shutdown ends every stream and waits for them, or for ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	s.Stop()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ServeHTTP streams the events of the projects asked for.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		raw = r.URL.Query().Get("token")
	}
	if s.cfg.ClientIP != nil && !s.connects.allow(clientaddr.LimitKey(s.cfg.ClientIP(r))) {
		w.Header().Set("Retry-After", "1")
		httpjson.Error(w, http.StatusTooManyRequests, "rate_limited", "too many new connections from this address; retry later")
		return
	}
	claims, err := s.verifier.Verify(strings.TrimSpace(raw))
	if err == nil && !time.Now().Before(claims.ExpiresAt) {
		err = auth.ErrTokenExpired // within the leeway: a stream would end at once
	}
	if err != nil {
		httpjson.Error(w, http.StatusUnauthorized, "unauthorized", err.Error())
		return
	}
	projects, err := s.projects(r)
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	var since *events.Position
	v := r.Header.Get("Last-Event-ID")
	if v == "" {
		// An EventSource sends the header only when it reconnects; a
		// client resuming a new one passes the position in the URL.
		v = r.URL.Query().Get("last_event_id")
	}
	if v != "" {
		p, err := events.ParsePosition(v)
		if err != nil {
			httpjson.Error(w, http.StatusBadRequest, "bad_request", "Last-Event-ID is not a position")
			return
		}
		since = &p
	}
	uid := claims.UserID
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		httpjson.Error(w, http.StatusServiceUnavailable, "internal", "server is shutting down")
		return
	}
	others := int64(0)
	if s.cfg.Others != nil {
		others = s.cfg.Others()
	}
	if s.cfg.MaxStreams > 0 && s.open+others >= s.cfg.MaxStreams {
		s.mu.Unlock()
		w.Header().Set("Retry-After", "5")
		httpjson.Error(w, http.StatusServiceUnavailable, "internal", "too many event streams open; retry later")
		return
	}
	if s.cfg.MaxStreamsPerUser > 0 && s.perUser[uid] >= s.cfg.MaxStreamsPerUser {
		s.mu.Unlock()
		w.Header().Set("Retry-After", "5")
		httpjson.Error(w, http.StatusTooManyRequests, "rate_limited", fmt.Sprintf("this user has %d event streams open already", s.cfg.MaxStreamsPerUser))
		return
	}
	s.perUser[uid]++
	s.open++
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.perUser[uid]--; s.perUser[uid] == 0 {
			delete(s.perUser, uid)
		}
		s.open--
		s.mu.Unlock()
		s.wg.Done()
	}()
	if s.cfg.OnStream != nil {
		defer s.cfg.OnStream(r)()
	}
	s.stream(w, r, uid, claims.ExpiresAt, projects, since)
}

// projects reads project_id (repeated, or comma-separated).
func (s *Server) projects(r *http.Request) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, v := range r.URL.Query()["project_id"] {
		for _, p := range strings.Split(v, ",") {
			p = strings.ToLower(strings.TrimSpace(p))
			if !auth.IsUUID(p) {
				return nil, errors.New("project_id must be one or more UUIDs")
			}
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	switch {
	case len(out) == 0:
		return nil, errors.New("project_id is required")
	case s.cfg.MaxProjects > 0 && len(out) > s.cfg.MaxProjects:
		return nil, fmt.Errorf("at most %d projects per stream", s.cfg.MaxProjects)
	}
	return out, nil
}

func (s *Server) stream(w http.ResponseWriter, r *http.Request, uid string, expires time.Time, projects []string, since *events.Position) {
	rc := http.NewResponseController(w)
	// The server's read and write timeouts are for plain requests; a
	// stream's writes are bounded one by one.
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(s.stop, cancel)()
	client := s.hub.NewClient(uid)
	defer s.hub.Remove(client)
	log := s.log.With("user_id", uid, "transport", "sse")
	var through events.Position // the newest subscribed position
	for _, p := range projects {
		if s.denials.empty(uid) {
			// A flood of other people's projects costs the database a
			// lookup each: past the user's budget of refusals, none.
			s.sendError(client, "rate_limited", "too many refused projects; slow down", p)
			continue
		}
		sub := since
		if sub != nil {
			cp := *sub
			sub = &cp
		}
		subCtx, subCancel := context.WithTimeout(ctx, 10*time.Second)
		res, err := s.hub.Subscribe(subCtx, client, p, sub, func(ctx context.Context, fresh bool) (access.Proof, error) {
			return s.members.Lookup(ctx, p, uid, fresh)
		})
		subCancel()
		switch {
		case err == nil:
			if res.Position.Compare(through) > 0 {
				through = res.Position
			}
		case errors.Is(err, hub.ErrForbidden):
			s.denials.allow(uid)
			s.sendError(client, "forbidden", "not a member of this project", p)
		case errors.Is(err, hub.ErrClientClosed):
			return
		default:
			log.Warn("subscribe", "project_id", p, "err", err)
			s.sendError(client, "internal", "subscription could not be checked; reconnect", p)
		}
	}
	// Every project's replay and subscribed frame is queued by now, at
	// positions up to checkpoint, interleaved: ids would go backwards from
	// one project to the next, and a browser that reconnected after a
	// higher one would skip the others' lower events. So the frames queued
	// up to here carry no id; once they are written, one id-only message
	// (it sets the browser's Last-Event-ID without an event) says that
	// every project is delivered through checkpoint, and later frames,
	// published in order, carry theirs.
	checkpoint := s.hub.Last()
	if through.Compare(checkpoint) > 0 {
		// The hub is catching up with history: subscriptions are live
		// from past it.
		checkpoint = through
	}
	checkpointed := false
	keepAlive := time.NewTicker(s.cfg.KeepAlive)
	defer keepAlive.Stop()
	expiry := time.NewTimer(time.Until(expires))
	defer expiry.Stop()
	var items []hub.Item
	var buf []byte
	for {
		select {
		case <-ctx.Done():
			return
		case <-expiry.C:
			s.writeNow(rc, w, eventBytes(nil, errorFrame("unauthorized", "token expired; reconnect with a fresh token", "")))
			return
		case <-keepAlive.C:
			if !s.writeNow(rc, w, []byte(": keepalive\n\n")) {
				return
			}
			continue
		case <-client.Ready():
		}
		if client.IsSlow() {
			s.metrics.SlowConsumerCloses.Inc()
			s.writeNow(rc, w, eventBytes(nil, errorFrame("slow_consumer", "this stream fell too far behind; reconnect with Last-Event-ID", "")))
			return
		}
		items = client.Take(items[:0])
		buf = buf[:0]
		add := func(f *hub.Frame) {
			if !checkpointed && f.Position.Compare(checkpoint) > 0 {
				buf, checkpointed = appendCheckpoint(buf, checkpoint), true
			}
			buf = appendEvent(buf, f, checkpoint)
		}
		for _, it := range items {
			if it.Frame != nil {
				add(it.Frame)
			}
			for _, f := range it.Batch {
				add(f)
			}
		}
		if !checkpointed {
			buf, checkpointed = appendCheckpoint(buf, checkpoint), true
		}
		ok := s.writeNow(rc, w, buf)
		for _, it := range items {
			client.Written(it)
		}
		clear(items)
		if !ok {
			return
		}
	}
}

// writeNow writes b and flushes it within the write timeout.
func (s *Server) writeNow(rc *http.ResponseController, w http.ResponseWriter, b []byte) bool {
	if len(b) == 0 {
		return true
	}
	_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	if _, err := w.Write(b); err != nil {
		return false
	}
	return rc.Flush() == nil
}

// appendEvent writes one frame as an SSE message: its position as the id
// when it is past checkpoint (frames without one, such as errors, and the
// first ones of the stream, carry none), its JSON as the data.
func appendEvent(b []byte, f *hub.Frame, checkpoint events.Position) []byte {
	if f.Position.Compare(checkpoint) > 0 {
		b = append(b, "id: "...)
		b = f.Position.AppendText(b)
		b = append(b, '\n')
	}
	return eventBytes(b, f.Data)
}

// appendCheckpoint appends an id-only message: the browser's
// Last-Event-ID moves to p, and no event is dispatched.
func appendCheckpoint(b []byte, p events.Position) []byte {
	b = append(b, "id: "...)
	b = p.AppendText(b)
	return append(b, "\n\n"...)
}

// eventBytes appends a data-only SSE message. A frame is JSON, whose
// strings hold no raw newline, but a published event's data may be spread
// over lines: each line is a data field, which the browser joins with
// newlines again.
func eventBytes(b, data []byte) []byte {
	for {
		line, rest, more := bytes.Cut(data, []byte{'\n'})
		b = append(b, "data: "...)
		b = append(b, bytes.TrimSuffix(line, []byte{'\r'})...)
		b = append(b, '\n')
		if !more {
			break
		}
		data = rest
	}
	return append(b, '\n')
}

func errorFrame(code, message, projectID string) []byte {
	b, _ := jsonx.Marshal(struct {
		Type      string `json:"type"`
		Code      string `json:"code"`
		Message   string `json:"message"`
		ProjectID string `json:"project_id,omitempty"`
	}{events.TypeError, code, message, projectID})
	return b
}

func (s *Server) sendError(c *hub.Client, code, message, projectID string) {
	s.metrics.ClientErrors.WithLabelValues(code).Inc()
	s.hub.Send(c, events.TypeError, errorFrame(code, message, projectID))
}
