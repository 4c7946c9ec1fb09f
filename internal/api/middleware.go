package api

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/walcast/walcast/internal/access"
	"github.com/walcast/walcast/internal/auth"
	"github.com/walcast/walcast/internal/httpjson"
)

type ctxKey int

const (
	keyRequestID ctxKey = iota
	keyUserID
)

type handlers struct{ d Deps }

var (
	writeJSON  = httpjson.Write
	writeError = httpjson.Error
)

// requestID takes a sane X-Request-Id or makes one, and echoes it.
func requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if len(id) == 0 || len(id) > 64 || strings.ContainsFunc(id, func(c rune) bool { return c < 0x21 || c > 0x7e }) {
			var b [8]byte
			_, _ = rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		w.Header().Set("X-Request-Id", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), keyRequestID, id)))
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController and the WebSocket upgrade reach the
// connection underneath.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// logRequests logs each request's path (never its query, where tokens
// travel) and counts it by route pattern.
func (h *handlers) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		route := chi.RouteContext(r.Context()).RoutePattern()
		if route == "" {
			route = "unmatched"
		}
		if rec.status == 0 {
			rec.status = http.StatusSwitchingProtocols // hijacked by the upgrade
		}
		h.d.Metrics.HTTPRequests.WithLabelValues(route, strconv.Itoa(rec.status)).Inc()
		level := slogLevelFor(rec.status, route)
		client := ""
		if h.d.ClientIP != nil {
			client = h.d.ClientIP(r)
		}
		h.d.Log.Log(r.Context(), level, "http request",
			"request_id", r.Context().Value(keyRequestID), "method", r.Method, "path", r.URL.Path,
			"route", route, "status", rec.status, "client", client, "duration_ms", float64(time.Since(start).Microseconds())/1000)
	})
}

// recoverer turns a handler panic into a 500 without a stack trace in the
// response; the stack goes to the log.
func (h *handlers) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				h.d.Log.Error("handler panic", "request_id", r.Context().Value(keyRequestID), "panic", v, "stack", string(debug.Stack()))
				writeError(w, http.StatusInternalServerError, "internal", "internal error")
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// statusAuth requires the configured status token, when there is one.
func (h *handlers) statusAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if want := h.d.Config.StatusToken; want != "" {
			got, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
				writeError(w, http.StatusUnauthorized, "unauthorized", "this route needs the status token")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// authenticate verifies the Bearer JWT and puts the user id in the context.
func (h *handlers) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			writeError(w, http.StatusUnauthorized, "unauthorized", "send Authorization: Bearer <token>")
			return
		}
		claims, err := h.d.Verifier.Verify(strings.TrimSpace(raw))
		if err != nil {
			writeError(w, http.StatusUnauthorized, "unauthorized", err.Error())
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), keyUserID, claims.UserID)))
	})
}

// membersOnly validates {projectID} and answers 403 to non-members.
func (h *handlers) membersOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pid := strings.ToLower(chi.URLParam(r, "projectID"))
		if !auth.IsUUID(pid) {
			writeError(w, http.StatusBadRequest, "bad_request", "project id is not a UUID")
			return
		}
		userID, _ := r.Context().Value(keyUserID).(string)
		ok, err := h.d.Access.Authorize(r.Context(), pid, userID)
		if errors.Is(err, access.ErrUnsettled) {
			writeError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
			return
		}
		if err != nil {
			h.internal(w, r, "membership lookup", err)
			return
		}
		if !ok {
			writeError(w, http.StatusForbidden, "forbidden", "not a member of this project")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// internal logs err and answers 500 without its text.
func (h *handlers) internal(w http.ResponseWriter, r *http.Request, what string, err error) {
	status, code := http.StatusInternalServerError, "internal"
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		status, code = http.StatusServiceUnavailable, "unavailable"
	}
	h.d.Log.Error(what, "request_id", r.Context().Value(keyRequestID), "err", err)
	writeError(w, status, code, what+" failed")
}
