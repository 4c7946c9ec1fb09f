package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	accesspkg "github.com/walcast/walcast/internal/access"
	"github.com/walcast/walcast/internal/auth"
	"github.com/walcast/walcast/internal/hub"
	"github.com/walcast/walcast/internal/metrics"
	"github.com/walcast/walcast/internal/pgtest"
)

const (
	secret  = "api-test-secret-0123456789"
	alice   = "11111111-1111-4111-8111-111111111111"
	mallory = "33333333-3333-4333-8333-333333333333"
	project = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
)

func setup(t *testing.T) (*httptest.Server, *pgtest.DB) {
	t.Helper()
	return setupWith(t, nil)
}

// setupWith serves the routes; a non-nil override decides access instead
// of the hub and the membership lookup.
func setupWith(t *testing.T, override AccessChecker) (*httptest.Server, *pgtest.DB) {
	t.Helper()
	db := pgtest.New(t)
	db.Exec(t, `INSERT INTO users (id, email, display_name) VALUES ($1, 'a@x', 'A'), ($2, 'm@x', 'M')`, alice, mallory)
	db.Exec(t, `INSERT INTO projects (id, name, owner_id) VALUES ($1, 'P', $2)`, project, alice)
	db.Exec(t, `INSERT INTO project_members (project_id, user_id) VALUES ($1, $2)`, project, alice)
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	v, err := auth.NewVerifier([]byte(secret), "HS256", 0)
	if err != nil {
		t.Fatal(err)
	}
	q := auth.MembershipQuery{Table: "project_members", ProjectIDColumn: "project_id", UserIDColumn: "user_id"}
	members := auth.NewMemberships(db.Pool, auth.MembershipConfig{
		Query: q,
		TTL:   time.Minute, MaxConcurrent: 2,
	}, m)
	h := hub.New(hub.Config{QueueSize: 16, AccessWait: time.Second, AccessKeep: time.Minute, AccessMax: 100}, m)
	var access AccessChecker = accessFunc(func(ctx context.Context, projectID, userID string) (bool, error) {
		return h.Authorize(ctx, projectID, userID, func(ctx context.Context, _ bool) (accesspkg.Proof, error) {
			return members.Lookup(ctx, projectID, userID, true)
		})
	})
	if override != nil {
		access = override
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	router := NewRouter(Deps{
		Config: Config{MaxBodyBytes: 2048, MaxMessageChars: 100, MemberCondition: auth.MemberCondition(q, 1, 2)}, Pool: db.Pool, Verifier: v, Access: access,
		WS:       http.NotFoundHandler(),
		Gatherer: reg, Ready: func(context.Context) error { return nil },
		Status: func(context.Context) Status { return Status{} }, Log: log, Metrics: m,
	})
	srv := httptest.NewServer(router)
	t.Cleanup(srv.Close)
	return srv, db
}

type accessFunc func(ctx context.Context, projectID, userID string) (bool, error)

func (f accessFunc) Authorize(ctx context.Context, projectID, userID string) (bool, error) {
	return f(ctx, projectID, userID)
}

func tok(t *testing.T, user string) string {
	s, err := auth.Issue([]byte(secret), "HS256", user, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type reply struct {
	status int
	body   map[string]any
	raw    string
}

func call(t *testing.T, method, url, token, ctype, body string) reply {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return reply{resp.StatusCode, m, string(raw)}
}

func TestMessagesRoutes(t *testing.T) {
	srv, _ := setup(t)
	base := srv.URL + "/api/v1/projects/" + project + "/messages"
	a := tok(t, alice)

	var ids []string
	for i := 0; i < 5; i++ {
		r := call(t, "POST", base, a, "application/json; charset=utf-8", fmt.Sprintf(`{"content":"m%d"}`, i))
		if r.status != 201 || r.body["content"] != fmt.Sprintf("m%d", i) || r.body["senderId"] != alice || r.body["messageType"] != "text" {
			t.Fatalf("create: %d %s", r.status, r.raw)
		}
		ids = append(ids, r.body["id"].(string))
	}
	r := call(t, "GET", base+"?limit=2", a, "", "")
	msgs, _ := r.body["messages"].([]any)
	if r.status != 200 || len(msgs) != 2 || msgs[0].(map[string]any)["content"] != "m4" || r.body["next_before"] != msgs[1].(map[string]any)["id"] {
		t.Fatalf("page 1: %d %s", r.status, r.raw)
	}
	seen := []any{msgs[0].(map[string]any)["id"], msgs[1].(map[string]any)["id"]}
	r = call(t, "GET", base+"?limit=10&before="+r.body["next_before"].(string), a, "", "")
	msgs, _ = r.body["messages"].([]any)
	if r.status != 200 || len(msgs) != 3 || msgs[0].(map[string]any)["content"] != "m2" || r.body["next_before"] != nil {
		t.Fatalf("page 2: %d %s", r.status, r.raw)
	}
	for _, m := range msgs {
		seen = append(seen, m.(map[string]any)["id"])
	}
	// The two pages together are every message, newest first, none twice.
	for i, id := range seen {
		if id != ids[len(ids)-1-i] {
			t.Fatalf("pages give %v, want %v reversed", seen, ids)
		}
	}
	if r := call(t, "GET", base, a, "", ""); r.status != 200 || len(r.body["messages"].([]any)) != 5 {
		t.Fatalf("default limit: %s", r.raw)
	}
}

func TestMessagesRoutesRefuseBadInput(t *testing.T) {
	srv, _ := setup(t)
	base := srv.URL + "/api/v1/projects/" + project + "/messages"
	a, m := tok(t, alice), tok(t, mallory)
	long := strings.Repeat("é", 101)
	cases := []struct {
		name, method, url, token, ctype, body string
		status                                int
		code                                  string
	}{
		{"no token", "GET", base, "", "", "", 401, "unauthorized"},
		{"bad token", "GET", base, "x.y.z", "", "", 401, "unauthorized"},
		{"non-member reads", "GET", base, m, "", "", 403, "forbidden"},
		{"non-member posts", "POST", base, m, "application/json", `{"content":"hi"}`, 403, "forbidden"},
		{"malformed project id", "GET", srv.URL + "/api/v1/projects/not-a-uuid/messages", a, "", "", 400, "bad_request"},
		{"sql in project id", "GET", srv.URL + "/api/v1/projects/1%27%3BDROP%20TABLE%20messages--/messages", a, "", "", 400, "bad_request"},
		{"limit zero", "GET", base + "?limit=0", a, "", "", 400, "bad_request"},
		{"limit too big", "GET", base + "?limit=201", a, "", "", 400, "bad_request"},
		{"limit not a number", "GET", base + "?limit=ten", a, "", "", 400, "bad_request"},
		{"limit empty", "GET", base + "?limit=", a, "", "", 400, "bad_request"},
		{"before not uuid", "GET", base + "?before=1%27%20OR%201%3D1", a, "", "", 400, "bad_request"},
		{"before unknown", "GET", base + "?before=" + mallory, a, "", "", 404, "not_found"},
		{"semicolon query", "GET", base + "?limit=1;DROP", a, "", "", 400, "bad_request"},
		{"unknown parameter", "GET", base + "?order=asc", a, "", "", 400, "bad_request"},
		{"wrong content type", "POST", base, a, "text/plain", `{"content":"hi"}`, 415, "unsupported_media_type"},
		{"no content type", "POST", base, a, "", `{"content":"hi"}`, 415, "unsupported_media_type"},
		{"not json", "POST", base, a, "application/json", `content=hi`, 400, "bad_request"},
		{"two objects", "POST", base, a, "application/json", `{"content":"a"}{"content":"b"}`, 400, "bad_request"},
		{"content not string", "POST", base, a, "application/json", `{"content":5}`, 400, "bad_request"},
		{"body too large", "POST", base, a, "application/json", `{"content":"` + strings.Repeat("x", 4000) + `"}`, 413, "too_large"},
		{"missing content", "POST", base, a, "application/json", `{}`, 422, "invalid_content"},
		{"empty content", "POST", base, a, "application/json", `{"content":"  \n "}`, 422, "invalid_content"},
		{"content too long", "POST", base, a, "application/json", `{"content":"` + long + `"}`, 422, "invalid_content"},
		{"nul in content", "POST", base, a, "application/json", `{"content":"a\u0000b"}`, 422, "invalid_content"},
		{"bad message type", "POST", base, a, "application/json", `{"content":"a","messageType":"'; DROP TABLE x"}`, 422, "invalid_message_type"},
		{"wrong method", "DELETE", base, a, "", "", 405, "method_not_allowed"},
		{"unknown route", "GET", srv.URL + "/nope", "", "", "", 404, "not_found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := call(t, c.method, c.url, c.token, c.ctype, c.body)
			e, _ := r.body["error"].(map[string]any)
			if r.status != c.status || e == nil || e["code"] != c.code {
				t.Fatalf("got %d %s, want %d %s", r.status, r.raw, c.status, c.code)
			}
			for _, leak := range []string{"SQLSTATE", "pgx", "goroutine", "SELECT", "INSERT", c.token + "x"} {
				if leak != "x" && strings.Contains(r.raw, leak) {
					t.Fatalf("response leaks %q: %s", leak, r.raw)
				}
			}
		})
	}
	// SQL metacharacters in content are stored as text, not run.
	r := call(t, "POST", base, a, "application/json", `{"content":"'); DROP TABLE messages; --"}`)
	if r.status != 201 || r.body["content"] != "'); DROP TABLE messages; --" {
		t.Fatalf("metacharacters: %d %s", r.status, r.raw)
	}
}

// TestPostStoresNothingOnceMembershipEnded: the insert itself requires the
// membership, so a removal committed between the check and the write keeps
// the message out (here the check is made to pass for a non-member).
func TestPostStoresNothingOnceMembershipEnded(t *testing.T) {
	yes := accessFunc(func(context.Context, string, string) (bool, error) { return true, nil })
	srv, db := setupWith(t, yes)
	r := call(t, http.MethodPost, srv.URL+"/api/v1/projects/"+project+"/messages", tok(t, mallory), "application/json", `{"content":"sneaky"}`)
	if r.status != http.StatusForbidden {
		t.Fatalf("status %d: %s", r.status, r.raw)
	}
	var n int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM messages`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d messages stored (%v)", n, err)
	}
	if r := call(t, http.MethodPost, srv.URL+"/api/v1/projects/"+project+"/messages", tok(t, alice), "application/json", `{"content":"hi"}`); r.status != http.StatusCreated {
		t.Fatalf("member: %d %s", r.status, r.raw)
	}
}

func TestStatusToken(t *testing.T) {
	srv, db := setup(t)
	_ = db
	// The default router is open; a router with a token is not.
	if r := call(t, "GET", srv.URL+"/api/v1/status", "", "", ""); r.status != 200 {
		t.Fatalf("open status: %d", r.status)
	}
	h := &handlers{d: Deps{Config: Config{StatusToken: "s3cret"}}}
	ok := h.statusAuth(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) }))
	for token, want := range map[string]int{"": 401, "wrong": 401, "s3cret": 204} {
		req := httptest.NewRequest("GET", "/metrics", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		ok.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("token %q: %d, want %d", token, rec.Code, want)
		}
	}
}
