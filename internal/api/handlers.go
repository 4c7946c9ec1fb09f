package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/walcast/walcast/internal/auth"
)

func slogLevelFor(status int, route string) slog.Level {
	switch {
	case status >= 500:
		return slog.LevelError
	case route == "/healthz" || route == "/readyz" || route == "/metrics":
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

func (h *handlers) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (h *handlers) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := h.d.Ready(ctx); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (h *handlers) status(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	writeJSON(w, http.StatusOK, h.d.Status(ctx))
}

// Message is a row of messages as the REST routes and events show it.
type Message struct {
	ID          string    `json:"id"`
	ProjectID   string    `json:"projectId"`
	SenderID    string    `json:"senderId"`
	Content     string    `json:"content"`
	MessageType string    `json:"messageType"`
	CreatedAt   time.Time `json:"createdAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
}

const messageColumns = "id::text, project_id::text, sender_id::text, content, message_type, created_at, updated_at"

func scanMessage(row pgx.Row) (Message, error) {
	var m Message
	err := row.Scan(&m.ID, &m.ProjectID, &m.SenderID, &m.Content, &m.MessageType, &m.CreatedAt, &m.UpdatedAt)
	m.CreatedAt, m.UpdatedAt = m.CreatedAt.UTC(), m.UpdatedAt.UTC()
	return m, err
}

func (h *handlers) listMessages(w http.ResponseWriter, r *http.Request) {
	pid := strings.ToLower(chi.URLParam(r, "projectID"))
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "query string does not parse")
		return
	}
	for k := range q {
		if k != "limit" && k != "before" {
			writeError(w, http.StatusBadRequest, "bad_request", "unknown query parameter (use limit and before)")
			return
		}
	}
	limit := 50
	if s := q.Get("limit"); s != "" || q.Has("limit") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 200 {
			writeError(w, http.StatusBadRequest, "bad_request", "limit must be a whole number from 1 to 200")
			return
		}
		limit = n
	}
	before := strings.ToLower(q.Get("before"))
	if q.Has("before") && !auth.IsUUID(before) {
		writeError(w, http.StatusBadRequest, "bad_request", "before must be a message id (UUID)")
		return
	}

	ctx := r.Context()
	var rows pgx.Rows
	if before == "" {
		rows, err = h.d.Pool.Query(ctx, `SELECT `+messageColumns+` FROM messages WHERE project_id = $1
			ORDER BY created_at DESC, id DESC LIMIT $2`, pid, limit+1)
	} else {
		var exists bool
		if err := h.d.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM messages WHERE id = $1 AND project_id = $2)`, before, pid).Scan(&exists); err != nil {
			h.internal(w, r, "list messages", err)
			return
		}
		if !exists {
			writeError(w, http.StatusNotFound, "not_found", "before names no message of this project")
			return
		}
		rows, err = h.d.Pool.Query(ctx, `SELECT `+messageColumns+` FROM messages
			WHERE project_id = $1 AND (created_at, id) < (SELECT created_at, id FROM messages WHERE id = $3)
			ORDER BY created_at DESC, id DESC LIMIT $2`, pid, limit+1, before)
	}
	if err != nil {
		h.internal(w, r, "list messages", err)
		return
	}
	msgs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Message, error) { return scanMessage(row) })
	if err != nil {
		h.internal(w, r, "list messages", err)
		return
	}
	var next *string
	if len(msgs) > limit {
		msgs = msgs[:limit]
		next = &msgs[limit-1].ID
	}
	writeJSON(w, http.StatusOK, map[string]any{"messages": msgs, "next_before": next})
}

type createMessageBody struct {
	Content     *string `json:"content"`
	MessageType *string `json:"messageType"`
}

func (h *handlers) createMessage(w http.ResponseWriter, r *http.Request) {
	pid := strings.ToLower(chi.URLParam(r, "projectID"))
	userID, _ := r.Context().Value(keyUserID).(string)

	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "send Content-Type: application/json")
		return
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.d.Config.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "too_large", "body is larger than "+strconv.FormatInt(tooBig.Limit, 10)+" bytes")
			return
		}
		writeError(w, http.StatusBadRequest, "bad_request", "body could not be read")
		return
	}
	var body createMessageBody
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&body); err != nil || dec.More() {
		writeError(w, http.StatusBadRequest, "bad_request", `body must be one JSON object {"content":"…","messageType":"text"}`)
		return
	}
	if _, err := dec.Token(); err != io.EOF {
		writeError(w, http.StatusBadRequest, "bad_request", "body has data after the JSON object")
		return
	}
	if body.Content == nil {
		writeError(w, http.StatusUnprocessableEntity, "invalid_content", "content is required")
		return
	}
	content := *body.Content
	switch n := utf8.RuneCountInString(content); {
	case strings.TrimSpace(content) == "":
		writeError(w, http.StatusUnprocessableEntity, "invalid_content", "content is empty")
		return
	case n > h.d.Config.MaxMessageChars:
		writeError(w, http.StatusUnprocessableEntity, "invalid_content", "content is longer than "+strconv.Itoa(h.d.Config.MaxMessageChars)+" characters")
		return
	case !utf8.ValidString(content) || strings.ContainsRune(content, 0):
		writeError(w, http.StatusUnprocessableEntity, "invalid_content", "content is not valid text")
		return
	}
	msgType := "text"
	if body.MessageType != nil {
		msgType = *body.MessageType
		if !validMessageType(msgType) {
			writeError(w, http.StatusUnprocessableEntity, "invalid_message_type", "messageType must be 1 to 32 lowercase letters, digits or '_'")
			return
		}
	}
	// The membership was checked before; a removal committed since must
	// still keep the message out.
	msg, err := scanMessage(h.d.Pool.QueryRow(r.Context(),
		`INSERT INTO messages (project_id, sender_id, content, message_type)
		 SELECT $1, $2, $3, $4 WHERE `+h.d.Config.MemberCondition+` RETURNING `+messageColumns,
		pid, userID, content, msgType))
	if errors.Is(err, pgx.ErrNoRows) {
		writeError(w, http.StatusForbidden, "forbidden", "not a member of this project")
		return
	}
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23503" {
			writeError(w, http.StatusUnprocessableEntity, "invalid_reference", "the project or the sender does not exist")
			return
		}
		h.internal(w, r, "create message", err)
		return
	}
	writeJSON(w, http.StatusCreated, msg)
}

func validMessageType(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for _, c := range s {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
