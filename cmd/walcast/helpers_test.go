package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/walcast/walcast/internal/auth"
	"github.com/walcast/walcast/internal/eventually"
	"github.com/walcast/walcast/internal/migrate"
	"github.com/walcast/walcast/internal/pgtest"
	"github.com/walcast/walcast/migrations"
)

const testSecret = "test-secret-0123456789abcdef"

// Fixed ids of the fixture every end-to-end test loads.
const (
	alice    = "11111111-1111-4111-8111-111111111111"
	bob      = "22222222-2222-4222-8222-222222222222"
	mallory  = "33333333-3333-4333-8333-333333333333"
	project  = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
	project2 = "dddddddd-dddd-4ddd-8ddd-dddddddddddd"
)

const fixture = `
INSERT INTO users (id, email, display_name) VALUES
  ('` + alice + `', 'alice@example.com', 'Alice'),
  ('` + bob + `', 'bob@example.com', 'Bob'),
  ('` + mallory + `', 'mallory@example.com', 'Mallory');
INSERT INTO projects (id, name, owner_id) VALUES
  ('` + project + `', 'Demo', '` + alice + `'),
  ('` + project2 + `', 'Mallory''s', '` + mallory + `');
INSERT INTO project_members (project_id, user_id, role) VALUES
  ('` + project + `', '` + alice + `', 'owner'),
  ('` + project + `', '` + bob + `', 'member'),
  ('` + project2 + `', '` + mallory + `', 'owner');
`

// instance is one walcast under test.
type instance struct {
	t      *testing.T
	db     *pgtest.DB
	env    map[string]string
	base   string // http://127.0.0.1:port
	cancel context.CancelFunc
	done   chan error
	logs   *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// newDB makes a database with the fixture loaded.
func newDB(t *testing.T) *pgtest.DB {
	db := pgtest.New(t)
	db.Exec(t, fixture)
	return db
}

// newClusterDB starts a PostgreSQL cluster of the test's own (for tests
// that stop it or reconfigure it) with the schema and the fixture loaded.
func newClusterDB(t *testing.T, conf ...string) *pgtest.Cluster {
	t.Helper()
	cluster := pgtest.NewCluster(t, conf...)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, cluster.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := migrate.Apply(ctx, conn, migrate.Set{Name: "schema", FS: migrations.Schema, Dir: "."}); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, fixture); err != nil {
		t.Fatal(err)
	}
	return cluster
}

// baseEnv is the environment of a walcast on db with a unique slot.
func baseEnv(t *testing.T, db *pgtest.DB) map[string]string {
	return map[string]string{
		"WALCAST_DATABASE_URL":     db.AppURL, // least privilege, as in production
		"WALCAST_JWT_SECRET":       testSecret,
		"WALCAST_HTTP_ADDR":        freeAddr(t),
		"WALCAST_SLOT_NAME":        "walcast_" + pgtest.RandomSuffix(),
		"WALCAST_PUBLICATION_NAME": pgtest.Publication,
		"WALCAST_CONFIG":           "../../config/walcast.yaml",
		"WALCAST_LOG_LEVEL":        "debug",
	}
}

// start runs walcast in-process (run, as main calls it) and waits until
// /readyz answers 200.
func start(t *testing.T, db *pgtest.DB, env map[string]string) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{t: t, db: db, env: env, base: "http://" + env["WALCAST_HTTP_ADDR"], cancel: cancel, done: make(chan error, 1), logs: &syncBuffer{}}
	go func() {
		in.done <- run(ctx, []string{"serve"}, func(k string) string { return env[k] }, in.logs, in.logs)
	}()
	t.Cleanup(in.stop)
	t.Cleanup(func() {
		// What walcast logged is what a failure needs to be understood
		// (CI keeps no other trace of it): its last lines.
		if t.Failed() {
			lines := strings.Split(strings.TrimRight(in.logs.String(), "\n"), "\n")
			t.Logf("walcast's last %d log lines:\n%s", min(len(lines), 150), strings.Join(lines[max(0, len(lines)-150):], "\n"))
		}
	})
	waitFor(t, 20*time.Second, "walcast ready", func() bool {
		select {
		case err := <-in.done:
			in.done <- err
			t.Fatalf("walcast exited: %v\n%s", err, in.logs.String())
		default:
		}
		resp, err := http.Get(in.base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return in
}

// stop cancels run as SIGTERM would and waits for it to return.
func (in *instance) stop() {
	in.cancel()
	select {
	case err := <-in.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			in.t.Errorf("walcast returned %v", err)
		}
		in.done <- nil
	case <-time.After(20 * time.Second):
		in.t.Errorf("walcast did not stop within 20s\n%s", in.logs.String())
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	eventually.True(t, within, what, cond)
}

func token(t *testing.T, user string, ttl time.Duration) string {
	t.Helper()
	tok, err := auth.Issue([]byte(testSecret), "HS256", user, ttl, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// frame is a decoded server frame.
type frame map[string]any

func (f frame) str(k string) string { s, _ := f[k].(string); return s }

func (f frame) data() map[string]any { d, _ := f["data"].(map[string]any); return d }

// client is a real WebSocket client. A goroutine reads frames into a
// channel: a read deadline in coder/websocket closes the socket, so tests
// wait on the channel instead.
type client struct {
	t      *testing.T
	conn   *websocket.Conn
	frames chan frame
	// closeErr holds the error that ended reading (a close frame's status).
	closeErr chan error
}

func dial(t *testing.T, in *instance, user string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, strings.Replace(in.base, "http", "ws", 1)+"/ws?token="+token(t, user, time.Hour), nil)
	if err != nil {
		t.Fatalf("dial as %s: %v", user, err)
	}
	return newClient(t, conn)
}

func newClient(t *testing.T, conn *websocket.Conn) *client {
	conn.SetReadLimit(1 << 20)
	c := &client{t: t, conn: conn, frames: make(chan frame, 100000), closeErr: make(chan error, 1)}
	go func() {
		for {
			_, b, err := conn.Read(context.Background())
			if err != nil {
				c.closeErr <- err
				close(c.frames)
				return
			}
			var f frame
			if err := json.Unmarshal(b, &f); err != nil {
				f = frame{"_invalid": string(b)}
			}
			c.frames <- f
		}
	}()
	t.Cleanup(func() { _ = conn.CloseNow() })
	return c
}

func (c *client) send(v any) {
	c.t.Helper()
	b, _ := json.Marshal(v)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// read returns the next frame, or fails the test after within.
func (c *client) read(within time.Duration) frame {
	c.t.Helper()
	f, err := c.tryRead(within)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return f
}

func (c *client) tryRead(within time.Duration) (frame, error) {
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case f, ok := <-c.frames:
		if !ok {
			return nil, fmt.Errorf("socket closed: %w", c.closed())
		}
		return f, nil
	case <-timer.C:
		return nil, fmt.Errorf("no frame within %s", within)
	}
}

// closed returns the error that ended the socket's reading.
func (c *client) closed() error {
	select {
	case err := <-c.closeErr:
		c.closeErr <- err
		return err
	default:
		return nil
	}
}

// subscribe sends subscribe and returns the subscribed frame, failing on
// anything else first.
func (c *client) subscribe(projectID string) frame {
	c.t.Helper()
	c.send(map[string]string{"action": "subscribe", "project_id": projectID})
	f := c.read(5 * time.Second)
	if f.str("type") != "subscribed" || f.str("project_id") != projectID {
		c.t.Fatalf("subscribe %s: got %v", projectID, f)
	}
	return f
}

// expectQuiet fails if a frame arrives within d.
func (c *client) expectQuiet(d time.Duration) {
	c.t.Helper()
	if f, err := c.tryRead(d); err == nil {
		c.t.Fatalf("expected no frame, got %v", f)
	}
}

func doJSON(t *testing.T, method, url, tok string, body string, contentType string) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	if out == nil {
		out = map[string]any{"_raw": string(raw)}
	}
	return resp.StatusCode, out
}

type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// tx runs fn in one transaction on db.
func tx(t *testing.T, db *pgtest.DB, fn func(ctx context.Context, q querier)) {
	t.Helper()
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		fn(ctx, tx)
		return nil
	})
	if err != nil {
		t.Fatalf("transaction: %v", err)
	}
}

func mustExec(t *testing.T, q querier, sql string, args ...any) {
	t.Helper()
	if _, err := q.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("exec %q: %v", sql, err)
	}
}

// scrape returns the /metrics text.
func scrape(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
