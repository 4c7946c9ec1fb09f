package demo

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/walcast/walcast/internal/auth"
	"github.com/walcast/walcast/internal/httpjson"
	"github.com/walcast/walcast/web"
)

// memberships answers whether a user may see a project (auth.Memberships).
type memberships interface {
	IsMember(ctx context.Context, projectID, userID string) (bool, error)
}

// Deps are what the demo serves from.
type Deps struct {
	Pool      *pgxpool.Pool
	Verifier  *auth.Verifier
	Members   memberships
	Secret    []byte
	Algorithm string
}

// Mount adds the demo's routes to r: /demo/ (the page and its API) and
// /walcast-client.js.
func Mount(r chi.Router, d Deps) {
	h := &handlers{d: d}
	page, _ := fs.Sub(web.Files, "demo")
	r.Get("/walcast-client.js", func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		http.ServeFileFS(w, req, web.Files, "walcast-client.js")
	})
	r.Get("/demo", func(w http.ResponseWriter, req *http.Request) {
		http.Redirect(w, req, "/demo/"+query(req), http.StatusFound)
	})
	r.Route("/demo", func(r chi.Router) {
		r.Get("/api/users", h.users)
		r.Get("/api/token", h.token)
		r.Get("/api/projects/{projectID}/tasks", h.tasks)
		r.Patch("/api/tasks/{taskID}", h.moveTask)
		r.Handle("/*", http.StripPrefix("/demo/", http.FileServerFS(page)))
	})
}

func query(r *http.Request) string {
	if r.URL.RawQuery == "" {
		return ""
	}
	return "?" + r.URL.RawQuery
}

type handlers struct{ d Deps }

var (
	writeJSON = httpjson.Write
	fail      = httpjson.Error
)

func (h *handlers) users(w http.ResponseWriter, r *http.Request) {
	type user struct {
		ID          string `json:"id"`
		DisplayName string `json:"displayName"`
	}
	rows, err := h.d.Pool.Query(r.Context(), `SELECT id::text, display_name FROM users ORDER BY created_at, display_name LIMIT 50`)
	if err != nil {
		fail(w, 500, "internal", "users could not be read")
		return
	}
	users, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (user, error) {
		var u user
		return u, row.Scan(&u.ID, &u.DisplayName)
	})
	if err != nil {
		fail(w, 500, "internal", "users could not be read")
		return
	}
	var pid, name string
	_ = h.d.Pool.QueryRow(r.Context(), `SELECT id::text, name FROM projects ORDER BY created_at LIMIT 1`).Scan(&pid, &name)
	writeJSON(w, 200, map[string]any{"users": users, "project": pid, "projectName": name})
}

func (h *handlers) token(w http.ResponseWriter, r *http.Request) {
	id := strings.ToLower(r.URL.Query().Get("user"))
	if !auth.IsUUID(id) {
		fail(w, 400, "bad_request", "user must be a UUID")
		return
	}
	var exists bool
	if err := h.d.Pool.QueryRow(r.Context(), `SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)`, id).Scan(&exists); err != nil || !exists {
		fail(w, 404, "not_found", "no such user")
		return
	}
	tok, err := auth.Issue(h.d.Secret, h.d.Algorithm, id, time.Hour, time.Now())
	if err != nil {
		fail(w, 500, "internal", "token could not be issued")
		return
	}
	writeJSON(w, 200, map[string]string{"token": tok})
}

// member authenticates the request and checks membership of projectID.
func (h *handlers) member(w http.ResponseWriter, r *http.Request, projectID string) bool {
	raw, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	claims, err := h.d.Verifier.Verify(raw)
	if err != nil {
		fail(w, 401, "unauthorized", err.Error())
		return false
	}
	ok, err := h.d.Members.IsMember(r.Context(), projectID, claims.UserID)
	if err != nil {
		fail(w, 500, "internal", "membership could not be checked")
		return false
	}
	if !ok {
		fail(w, 403, "forbidden", "not a member of this project")
		return false
	}
	return true
}

func (h *handlers) tasks(w http.ResponseWriter, r *http.Request) {
	pid := strings.ToLower(chi.URLParam(r, "projectID"))
	if !auth.IsUUID(pid) {
		fail(w, 400, "bad_request", "project id is not a UUID")
		return
	}
	if !h.member(w, r, pid) {
		return
	}
	type task struct {
		ID          string `json:"id"`
		Title       string `json:"title"`
		Status      string `json:"status"`
		StoryPoints *int32 `json:"storyPoints"`
	}
	rows, err := h.d.Pool.Query(r.Context(), `SELECT id::text, title, status, story_points FROM tasks WHERE project_id = $1 ORDER BY created_at, id`, pid)
	if err != nil {
		fail(w, 500, "internal", "tasks could not be read")
		return
	}
	tasks, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (task, error) {
		var t task
		return t, row.Scan(&t.ID, &t.Title, &t.Status, &t.StoryPoints)
	})
	if err != nil {
		fail(w, 500, "internal", "tasks could not be read")
		return
	}
	writeJSON(w, 200, map[string]any{"tasks": tasks})
}

func (h *handlers) moveTask(w http.ResponseWriter, r *http.Request) {
	id := strings.ToLower(chi.URLParam(r, "taskID"))
	if !auth.IsUUID(id) {
		fail(w, 400, "bad_request", "task id is not a UUID")
		return
	}
	var body struct {
		Status string `json:"status"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&body); err != nil {
		fail(w, 400, "bad_request", `body must be {"status":"todo|in_progress|done"}`)
		return
	}
	switch body.Status {
	case "todo", "in_progress", "done":
	default:
		fail(w, 422, "invalid_status", "status must be todo, in_progress or done")
		return
	}
	var pid string
	err := h.d.Pool.QueryRow(r.Context(), `SELECT project_id::text FROM tasks WHERE id = $1`, id).Scan(&pid)
	if errors.Is(err, pgx.ErrNoRows) {
		fail(w, 404, "not_found", "no such task")
		return
	}
	if err != nil {
		fail(w, 500, "internal", "task could not be read")
		return
	}
	if !h.member(w, r, pid) {
		return
	}
	if _, err := h.d.Pool.Exec(r.Context(), `UPDATE tasks SET status = $2, updated_at = now() WHERE id = $1`, id, body.Status); err != nil {
		fail(w, 500, "internal", "task could not be moved")
		return
	}
	writeJSON(w, 200, map[string]string{"id": id, "status": body.Status})
}
