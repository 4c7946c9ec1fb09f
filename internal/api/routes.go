package api

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/walcast/walcast/internal/auth"
	"github.com/walcast/walcast/internal/metrics"
)

// Config configures the REST routes.
type Config struct {
	// MaxBodyBytes caps request bodies (413 past it).
	MaxBodyBytes int64
	// MaxMessageChars caps a message's content, in characters (422 past it).
	MaxMessageChars int
	// StatusToken, when set, is required as a Bearer token on /metrics and
	// /api/v1/status.
	StatusToken string
	// AdminToken, when set, turns the admin routes on behind it.
	AdminToken string
	// MemberCondition is SQL true while user $2 is a member of project $1
	// (auth.MemberCondition): a message is stored only if it still holds
	// when the row is written, whatever happened since the check.
	MemberCondition string
}

// AccessChecker decides whether a user may read and write a project's data
// now, on committed state (never from a cache that may predate a removal).
type AccessChecker interface {
	Authorize(ctx context.Context, projectID, userID string) (bool, error)
}

// Deps are what the router serves from.
type Deps struct {
	Config   Config
	Pool     *pgxpool.Pool
	Verifier *auth.Verifier
	Access   AccessChecker
	// WS serves the socket endpoint at SocketPaths ("/" takes upgrades
	// only).
	WS          http.Handler
	SocketPaths []string
	// SSE serves GET /sse (nil: not mounted).
	SSE http.Handler
	// Gatherer is the registry /metrics exposes.
	Gatherer prometheus.Gatherer
	// Ready returns nil when walcast can serve, or why not.
	Ready func(ctx context.Context) error
	// Status builds the /api/v1/status document.
	Status func(ctx context.Context) Status
	// Demo, when set, mounts the demo page and its routes (demo mode).
	Demo    func(r chi.Router)
	Log     *slog.Logger
	Metrics *metrics.Metrics
	// ClientIP is a request's client address for the logs
	// (clientaddr.Resolver); nil logs none.
	ClientIP func(*http.Request) string
	// Disconnect closes a user's sockets on every replica and bans it
	// for banFor; it returns how many sockets this replica closed.
	Disconnect func(userID string, banFor time.Duration) int
	// Publisher serves POST /api/v1/projects/{id}/events; when nil the
	// route answers 404 with PublishOff, the reason.
	Publisher  *Publisher
	PublishOff string
}

// NewRouter returns the whole HTTP API.
// Its limits are taken as they are (config.Default() holds the defaults).
func NewRouter(d Deps) http.Handler {
	h := &handlers{d: d}
	r := chi.NewRouter()
	r.Use(requestID, h.recoverer, h.logRequests)

	r.Get("/healthz", h.healthz)
	r.Get("/readyz", h.readyz)
	r.With(h.statusAuth).Method(http.MethodGet, "/metrics", promhttp.HandlerFor(d.Gatherer, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(d.Log.Handler(), slog.LevelError)}))
	for _, path := range d.SocketPaths {
		if path == "/" {
			r.Get("/", func(w http.ResponseWriter, r *http.Request) {
				if !upgradesToWebSocket(r.Header.Values("Upgrade")) {
					writeError(w, http.StatusNotFound, "not_found", "no such route (sockets: send a WebSocket upgrade)")
					return
				}
				d.WS.ServeHTTP(w, r)
			})
			continue
		}
		r.Get(path, d.WS.ServeHTTP)
	}

	if d.SSE != nil {
		r.Get("/sse", d.SSE.ServeHTTP)
	}
	r.Route("/api/v1", func(r chi.Router) {
		r.With(h.statusAuth).Get("/status", h.status)
		r.Route("/projects/{projectID}/messages", func(r chi.Router) {
			r.Use(h.authenticate, h.membersOnly)
			r.Get("/", h.listMessages)
			r.Post("/", h.createMessage)
		})
		r.Post("/projects/{projectID}/events", h.publishEvent)
		r.Post("/admin/users/{userID}/disconnect", h.disconnectUser)
	})
	if d.Demo != nil {
		d.Demo(r)
	}
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such route")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed on this route")
	})
	return r
}

// upgradesToWebSocket reports whether an Upgrade header lists websocket
// among its protocols ("websocket", "websocket, h2c", on several lines).
func upgradesToWebSocket(values []string) bool {
	for _, v := range values {
		for _, p := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(p), "websocket") {
				return true
			}
		}
	}
	return false
}
