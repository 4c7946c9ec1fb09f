package api

import (
	"crypto/subtle"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/walcast/walcast/internal/auth"
)

// disconnectUser closes every socket of a user, on every replica (logout
// everywhere, a ban, a changed password): POST
// /api/v1/admin/users/{id}/disconnect[?ban=<duration>] with the admin
// token. With ban, the user's new sockets are refused until it ends (its
// tokens already issued stay valid until they expire).
func (h *handlers) disconnectUser(w http.ResponseWriter, r *http.Request) {
	if h.d.Config.AdminToken == "" || h.d.Disconnect == nil {
		writeError(w, http.StatusNotFound, "not_found", "the admin routes are off: set api.admin_token (WALCAST_ADMIN_TOKEN)")
		return
	}
	got, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(h.d.Config.AdminToken)) != 1 {
		writeError(w, http.StatusUnauthorized, "unauthorized", "this route needs the admin token")
		return
	}
	uid := strings.ToLower(chi.URLParam(r, "userID"))
	if !auth.IsUUID(uid) {
		writeError(w, http.StatusBadRequest, "bad_request", "user id is not a UUID")
		return
	}
	var ban time.Duration
	if v := r.URL.Query().Get("ban"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > 30*24*time.Hour {
			writeError(w, http.StatusBadRequest, "bad_request", "ban must be a duration between 0s and 720h, e.g. 15m")
			return
		}
		ban = d
	}
	n := h.d.Disconnect(uid, ban)
	h.d.Log.Info("user disconnected by the operator", "request_id", r.Context().Value(keyRequestID), "user_id", uid, "sockets", n, "ban", ban.String())
	writeJSON(w, http.StatusOK, map[string]any{"user_id": uid, "disconnected": n, "ban": ban.String()})
}
