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

	"github.com/walcast/walcast/internal/access"
	"github.com/walcast/walcast/internal/auth"
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
	// MaxStreams all of them (503).
	MaxStreamsPerUser int
	MaxStreams        int64
	// OnStream, when set, is told of each request that becomes a stream
	// (api.Streaming takes it out of the plain-HTTP connection cap).
	OnStream func(*http.Request)
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
}

// NewServer returns a Server.
func NewServer(cfg Config, h *hub.Hub, v *auth.Verifier, members memberships, log *slog.Logger, m *metrics.Metrics) *Server {
	stop, stopAll := context.WithCancel(context.Background())
	return &Server{cfg: cfg, hub: h, verifier: v, members: members, log: log, metrics: m, stop: stop, stopAll: stopAll, perUser: map[string]int{}}
}

// Shutdown ends every stream and waits for them, or for ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	s.stopAll()
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
	claims, err := s.verifier.Verify(strings.TrimSpace(raw))
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
	if s.cfg.MaxStreams > 0 && s.open >= s.cfg.MaxStreams {
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
		s.cfg.OnStream(r)
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
	for _, p := range projects {
		sub := since
		if sub != nil {
			cp := *sub
			sub = &cp
		}
		subCtx, subCancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := s.hub.Subscribe(subCtx, client, p, sub, func(ctx context.Context, fresh bool) (access.Proof, error) {
			return s.members.Lookup(ctx, p, uid, fresh)
		})
		subCancel()
		switch {
		case err == nil:
		case errors.Is(err, hub.ErrForbidden):
			s.sendError(client, "forbidden", "not a member of this project", p)
		case errors.Is(err, hub.ErrClientClosed):
			return
		default:
			log.Warn("subscribe", "project_id", p, "err", err)
			s.sendError(client, "internal", "subscription could not be checked; reconnect", p)
		}
	}
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
		for _, it := range items {
			if it.Frame != nil {
				buf = appendEvent(buf, it.Frame)
			}
			for _, f := range it.Batch {
				buf = appendEvent(buf, f)
			}
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
// (frames without one, such as errors, carry none), its JSON as the data.
func appendEvent(b []byte, f *hub.Frame) []byte {
	if !f.Position.IsZero() {
		b = append(b, "id: "...)
		b = f.Position.AppendText(b)
		b = append(b, '\n')
	}
	return eventBytes(b, f.Data)
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
