package ws

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/walcast/walcast/internal/access"
	"github.com/walcast/walcast/internal/auth"
	"github.com/walcast/walcast/internal/hub"
	"github.com/walcast/walcast/internal/metrics"
)

// The socket protocol's hostile-input, token, origin and limit cases, on a
// real socket over httptest with a hub and a membership fake: no database.

const (
	userA    = "11111111-1111-4111-8111-111111111111"
	userB    = "22222222-2222-4222-8222-222222222222"
	projectA = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
	projectB = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
	projectC = "eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee"
	projectX = "dddddddd-dddd-4ddd-8ddd-dddddddddddd" // nobody's
)

// memberSet answers from a fixed set of "project/user" pairs.
type memberSet map[string]bool

func (m memberSet) Lookup(_ context.Context, projectID, userID string, _ bool) (access.Proof, error) {
	return access.Proof{Member: m[projectID+"/"+userID], Fresh: true}, nil
}

// fakeClock is a clock a test moves forward: timers fire when it passes
// their deadline.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c    *fakeClock
	at   time.Time
	f    func()
	live bool
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f, live: true}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.live
	t.live = false
	return was
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.live
	t.at, t.live = t.c.now.Add(d), true
	return was
}

// advance moves the clock by d and fires the timers it passes.
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []func()
	for _, t := range c.timers {
		if t.live && !t.at.After(c.now) {
			t.live = false
			due = append(due, t.f)
		}
	}
	c.mu.Unlock()
	for _, f := range due {
		f()
	}
}

// protocolServer serves sockets with cfg over httptest; logs go to the
// returned buffer.
func protocolServer(t *testing.T, cfg Config, hcfg hub.Config, members memberships) (*Server, string, *syncBuffer) {
	t.Helper()
	m := metrics.New(prometheus.NewRegistry())
	if hcfg.QueueSize == 0 {
		hcfg.QueueSize = 64
	}
	if hcfg.AccessWait == 0 {
		hcfg.AccessWait = time.Second
	}
	h := hub.New(hcfg, m)
	h.SetFloor(1)
	v, err := auth.NewVerifier([]byte(testSecret), "HS256", 0)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	s := NewServer(withDefaults(cfg), h, v, members, slog.New(slog.NewJSONHandler(logs, nil)), m)
	running(t, s)
	srv := httptest.NewServer(s)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		srv.Close()
	})
	return s, srv.URL, logs
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

func issue(t *testing.T, user string, ttl time.Duration) string {
	t.Helper()
	tok, err := auth.Issue([]byte(testSecret), "HS256", user, ttl, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// jsonClient reads a socket's frames on a goroutine of its own.
type jsonClient struct {
	t      *testing.T
	conn   *websocket.Conn
	frames chan map[string]any
	err    chan error
}

func dialJSON(t *testing.T, url, tok string) *jsonClient {
	t.Helper()
	conn, _, err := websocket.Dial(context.Background(), strings.Replace(url, "http", "ws", 1)+"/?token="+tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &jsonClient{t: t, conn: conn, frames: make(chan map[string]any, 1024), err: make(chan error, 1)}
	go func() {
		for {
			_, b, err := conn.Read(context.Background())
			if err != nil {
				c.err <- err
				close(c.frames)
				return
			}
			var f map[string]any
			_ = json.Unmarshal(b, &f)
			c.frames <- f
		}
	}()
	t.Cleanup(func() { _ = conn.CloseNow() })
	return c
}

func (c *jsonClient) send(s string) {
	c.t.Helper()
	if err := c.conn.Write(context.Background(), websocket.MessageText, []byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

// read returns the next frame, or nil and the error that ended the socket,
// or fails after within.
func (c *jsonClient) read(within time.Duration) (map[string]any, error) {
	c.t.Helper()
	select {
	case f, ok := <-c.frames:
		if !ok {
			err := <-c.err
			c.err <- err
			return nil, err
		}
		return f, nil
	case <-time.After(within):
		c.t.Fatalf("no frame within %s", within)
		return nil, nil
	}
}

func (c *jsonClient) must(within time.Duration) map[string]any {
	c.t.Helper()
	f, err := c.read(within)
	if err != nil {
		c.t.Fatalf("socket ended: %v", err)
	}
	return f
}

// TestHostileFrames sends every kind of bad frame over a real socket and
// checks each answer; the socket survives all but the oversized frame, and
// no token reaches the log.
func TestHostileFrames(t *testing.T) {
	members := memberSet{projectA + "/" + userA: true, projectB + "/" + userA: true, projectC + "/" + userA: true}
	_, url, logs := protocolServer(t, Config{ReadLimit: 1024, FrameRate: 5, FrameBurst: 30}, hub.Config{MaxSubscriptions: 2}, members)
	other := issue(t, userB, time.Hour)
	c := dialJSON(t, url, issue(t, userA, time.Hour))
	for _, tc := range []struct{ name, frame, code string }{
		{"invalid JSON", `{"action":`, "bad_request"},
		{"not an object", `[1,2]`, "bad_request"},
		{"unknown action", `{"action":"drop_tables"}`, "bad_request"},
		{"missing project_id", `{"action":"subscribe"}`, "bad_request"},
		{"malformed project_id", `{"action":"subscribe","project_id":"'; DROP TABLE messages; --"}`, "bad_request"},
		{"malformed since", `{"action":"subscribe","project_id":"` + projectA + `","since":"0/0"}`, "bad_request"},
		{"origin without since", `{"action":"subscribe","project_id":"` + projectA + `","origin":"x"}`, "bad_request"},
		{"non-member project", `{"action":"subscribe","project_id":"` + projectX + `"}`, "forbidden"},
		{"unsubscribe unknown", `{"action":"unsubscribe","project_id":"` + projectA + `"}`, "bad_request"},
		{"refresh with garbage", `{"action":"refresh_token","token":"x.y.z"}`, "unauthorized"},
		{"refresh as someone else", `{"action":"refresh_token","token":"` + other + `"}`, "unauthorized"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.send(tc.frame)
			if f := c.must(5 * time.Second); f["type"] != "error" || f["code"] != tc.code || f["message"] == "" {
				t.Fatalf("got %v, want error %s", f, tc.code)
			}
		})
	}
	t.Run("binary frame", func(t *testing.T) {
		if err := c.conn.Write(context.Background(), websocket.MessageBinary, []byte{0, 1, 2}); err != nil {
			t.Fatal(err)
		}
		if f := c.must(5 * time.Second); f["code"] != "bad_request" {
			t.Fatalf("got %v", f)
		}
	})
	t.Run("subscription cap", func(t *testing.T) {
		for _, p := range []string{projectA, projectB} {
			c.send(`{"action":"subscribe","project_id":"` + p + `"}`)
			if f := c.must(5 * time.Second); f["type"] != "subscribed" {
				t.Fatalf("subscribe %s: %v", p, f)
			}
		}
		c.send(`{"action":"subscribe","project_id":"` + projectC + `"}`)
		if f := c.must(5 * time.Second); f["code"] != "bad_request" || !strings.Contains(f["message"].(string), "too many") {
			t.Fatalf("third: %v", f)
		}
		c.send(`{"action":"subscribe","project_id":"` + projectA + `"}`)
		if f := c.must(5 * time.Second); f["code"] != "bad_request" {
			t.Fatalf("twice: %v", f)
		}
	})
	t.Run("oversized frame closes with 1009", func(t *testing.T) {
		c.send(`{"action":"ping","pad":"` + strings.Repeat("x", 2000) + `"}`)
		for {
			if _, err := c.read(5 * time.Second); err != nil {
				// 1009, or, on a loaded machine, the connection reset before
				// the client read the close frame: the library closes the
				// TCP connection right after writing it, with the rest of the
				// oversized frame unread, which makes the kernel send a RST
				// that can overtake it. Never another close code.
				if status := websocket.CloseStatus(err); status != websocket.StatusMessageTooBig && status != -1 {
					t.Fatalf("closed with %v (%v), want 1009", status, err)
				}
				return
			}
		}
	})
	t.Run("frame flood on a fresh socket", func(t *testing.T) {
		f := dialJSON(t, url, issue(t, userA, time.Hour))
		for range 60 {
			f.send(`{"action":"ping"}`)
		}
		// Pongs for the frames within the budget and one rate_limited
		// error for the run of dropped ones (not one per frame: a flood
		// must not fill its own queue).
		limited, pongs := 0, 0
		for limited+pongs < 31 {
			got := f.must(5 * time.Second)
			switch {
			case got["code"] == "rate_limited":
				limited++
			case got["type"] == "pong":
				pongs++
			}
		}
		if limited != 1 || pongs < 30 || pongs >= 60 {
			t.Fatalf("60 frames at once: %d pongs, %d rate_limited errors", pongs, limited)
		}
	})
	if strings.Contains(logs.String(), other[:60]) {
		t.Error("a token reached the log")
	}
}

// TestHostileTokens: every bad token is refused on the upgrade with 401
// and a JSON body, in the query and in the Authorization header, and
// never logged.
func TestHostileTokens(t *testing.T) {
	_, url, logs := protocolServer(t, Config{}, hub.Config{}, memberSet{})
	now := time.Now()
	signed := func(method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(method, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	exp := now.Add(time.Hour).Unix()
	for name, tok := range map[string]string{
		"expired":         signed(jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"sub": userA, "exp": now.Add(-time.Hour).Unix()}),
		"not yet valid":   signed(jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"sub": userA, "exp": exp, "nbf": now.Add(time.Hour).Unix()}),
		"wrong signature": signed(jwt.SigningMethodHS256, []byte("another-secret-0123456789abc"), jwt.MapClaims{"sub": userA, "exp": exp}),
		"alg none":        b64(`{"alg":"none","typ":"JWT"}`) + "." + b64(`{"sub":"`+userA+`","exp":9999999999}`) + ".",
		"wrong algorithm": signed(jwt.SigningMethodHS512, []byte(testSecret), jwt.MapClaims{"sub": userA, "exp": exp}),
		"missing sub":     signed(jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"exp": exp}),
		"non-uuid sub":    signed(jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"sub": "admin", "exp": exp}),
		"missing exp":     signed(jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"sub": userA}),
	} {
		t.Run(name, func(t *testing.T) {
			for _, header := range []bool{false, true} {
				req, _ := http.NewRequest("GET", url+"/?token="+tok, nil)
				if header {
					req, _ = http.NewRequest("GET", url+"/", nil)
					req.Header.Set("Authorization", "Bearer "+tok)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
					t.Fatalf("header=%v: %d %s", header, resp.StatusCode, resp.Header.Get("Content-Type"))
				}
			}
			if strings.Contains(logs.String(), tok) {
				t.Fatal("token in the log")
			}
		})
	}
}

// TestTokenExpiryAndRefresh: a socket whose token expires is closed with
// 4001; refresh_token before expiry keeps it open past the old expiry. The
// server's clock is a test clock moved forward, not waited for.
func TestTokenExpiryAndRefresh(t *testing.T) {
	s, url, _ := protocolServer(t, Config{}, hub.Config{}, memberSet{projectA + "/" + userA: true})
	clk := &fakeClock{now: time.Now()}
	s.clock = clk

	expiring := dialJSON(t, url, issue(t, userA, time.Hour))
	expiring.send(`{"action":"subscribe","project_id":"` + projectA + `"}`)
	if f := expiring.must(5 * time.Second); f["type"] != "subscribed" {
		t.Fatalf("subscribe: %v", f)
	}
	refreshed := dialJSON(t, url, issue(t, userA, time.Hour))
	refreshed.send(`{"action":"refresh_token","token":"` + issue(t, userA, 3*time.Hour) + `"}`)
	if f := refreshed.must(5 * time.Second); f["type"] != "token_refreshed" || f["expires_at"] == "" {
		t.Fatalf("refresh: %v", f)
	}

	clk.advance(2 * time.Hour)
	if _, err := expiring.read(5 * time.Second); websocket.CloseStatus(err) != CloseTokenExpired {
		t.Fatalf("expiry: %v", err)
	}
	refreshed.send(`{"action":"ping"}`)
	if f := refreshed.must(5 * time.Second); f["type"] != "pong" {
		t.Fatalf("after the old expiry: %v", f)
	}
}

// TestOriginAndConnectionLimits: a browser on a foreign origin is refused
// (cross-site WebSocket hijacking), an allowed one is not; the connection
// cap and the per-address connection rate answer 503 and 429.
func TestOriginAndConnectionLimits(t *testing.T) {
	s, url, _ := protocolServer(t, Config{AllowedOrigins: []string{"app.example.com"}, MaxConnections: 3}, hub.Config{}, memberSet{})
	wsURL := strings.Replace(url, "http", "ws", 1) + "/?token=" + issue(t, userA, time.Hour)
	dialOrigin := func(origin string) (*websocket.Conn, *http.Response, error) {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		return websocket.Dial(context.Background(), wsURL, &websocket.DialOptions{HTTPHeader: h})
	}
	if _, resp, err := dialOrigin("https://evil.example.net"); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: %v %v", resp, err)
	}
	var open []*websocket.Conn
	for _, origin := range []string{"https://app.example.com", "", url} {
		conn, _, err := dialOrigin(origin)
		if err != nil {
			t.Fatalf("origin %q: %v", origin, err)
		}
		open = append(open, conn)
	}
	if _, resp, err := dialOrigin(""); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("over the cap: %v %v", resp, err)
	}
	for _, c := range open {
		_ = c.Close(websocket.StatusNormalClosure, "")
	}
	if n := testutil.ToFloat64(s.metrics.WSRejected.WithLabelValues("connection_cap")); n != 1 {
		t.Errorf("connection_cap rejections counted: %v", n)
	}

	_, url2, _ := protocolServer(t, Config{ConnectRate: 0.5, ConnectBurst: 2}, hub.Config{}, memberSet{})
	var codes []int
	for range 4 {
		conn, resp, err := websocket.Dial(context.Background(), strings.Replace(url2, "http", "ws", 1)+"/?token="+issue(t, userA, time.Hour), nil)
		switch {
		case err == nil:
			codes = append(codes, http.StatusSwitchingProtocols)
			_ = conn.CloseNow()
		case resp != nil:
			codes = append(codes, resp.StatusCode)
		}
	}
	if len(codes) != 4 || codes[0] != 101 || codes[1] != 101 || codes[2] != http.StatusTooManyRequests || codes[3] != http.StatusTooManyRequests {
		t.Fatalf("per-address rate: %v", codes)
	}
}
