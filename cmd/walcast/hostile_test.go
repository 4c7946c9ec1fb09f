package main

import (
	"context"
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
)

// withConfig writes a YAML config for env's instance and points env at it.
func withConfig(t *testing.T, env map[string]string, yaml string) {
	t.Helper()
	base, err := os.ReadFile("../../config/walcast.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The committed example with some sections replaced wholesale.
	text := string(base)
	for _, section := range []string{"websocket:", "hub:"} {
		if strings.Contains(yaml, section) {
			i := strings.Index(text, "\n"+section)
			j := strings.Index(text[i+1:], "\n\n")
			text = text[:i+1] + text[i+1+j+2:]
		}
	}
	path := filepath.Join(t.TempDir(), "walcast.yaml")
	if err := os.WriteFile(path, []byte(text+"\n"+yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env["WALCAST_CONFIG"] = path
}

func wsURL(in *instance) string { return strings.Replace(in.base, "http", "ws", 1) + "/ws" }

// TestHostileSocketInput sends every kind of bad frame over a real socket
// and checks each answer; the socket survives all but the oversized frame.
func TestHostileSocketInput(t *testing.T) {
	db := newDB(t)
	db.Exec(t, `INSERT INTO project_members (project_id, user_id) VALUES ($1, $2)`, project2, alice)
	db.Exec(t, `INSERT INTO projects (id, name, owner_id) VALUES ('eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee', 'third', $1)`, alice)
	db.Exec(t, `INSERT INTO project_members (project_id, user_id) VALUES ('eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee', $1)`, alice)
	env := baseEnv(t, db)
	withConfig(t, env, `
websocket:
  read_limit: 1024
  frame_rate: 5
  frame_burst: 20
  write_timeout: 5s
  ping_interval: 25s
hub:
  queue_size: 64
  history_size: 100
  history_age: 10m
  max_subscriptions_per_socket: 2
`)
	in := start(t, db, env)

	frames := []struct {
		name  string
		frame string
		code  string
	}{
		{"invalid JSON", `{"action":`, "bad_request"},
		{"not an object", `[1,2]`, "bad_request"},
		{"unknown action", `{"action":"drop_tables"}`, "bad_request"},
		{"missing project_id", `{"action":"subscribe"}`, "bad_request"},
		{"malformed project_id", `{"action":"subscribe","project_id":"'; DROP TABLE messages; --"}`, "bad_request"},
		{"malformed since", `{"action":"subscribe","project_id":"` + project + `","since":"0/0"}`, "bad_request"},
		{"non-member project", `{"action":"subscribe","project_id":"` + mallory + `"}`, "forbidden"},
		{"unsubscribe unknown", `{"action":"unsubscribe","project_id":"` + project + `"}`, "bad_request"},
		{"refresh with garbage", `{"action":"refresh_token","token":"x.y.z"}`, "unauthorized"},
		{"refresh as someone else", `{"action":"refresh_token","token":"` + token(t, bob, time.Hour) + `"}`, "unauthorized"},
	}
	c := dial(t, in, alice)
	for _, f := range frames {
		t.Run(f.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := c.conn.Write(ctx, websocket.MessageText, []byte(f.frame)); err != nil {
				t.Fatal(err)
			}
			got := c.read(5 * time.Second)
			if got.str("type") != "error" || got.str("code") != f.code || got.str("message") == "" {
				t.Fatalf("got %v, want error %s", got, f.code)
			}
		})
	}
	t.Run("binary frame", func(t *testing.T) {
		if err := c.conn.Write(context.Background(), websocket.MessageBinary, []byte{0, 1, 2}); err != nil {
			t.Fatal(err)
		}
		if got := c.read(5 * time.Second); got.str("code") != "bad_request" {
			t.Fatalf("got %v", got)
		}
	})
	t.Run("subscription cap", func(t *testing.T) {
		c.subscribe(project)
		c.subscribe(project2)
		c.send(map[string]string{"action": "subscribe", "project_id": "eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee"})
		if got := c.read(5 * time.Second); got.str("code") != "bad_request" || !strings.Contains(got.str("message"), "too many") {
			t.Fatalf("got %v", got)
		}
		c.send(map[string]string{"action": "subscribe", "project_id": project})
		if got := c.read(5 * time.Second); got.str("code") != "bad_request" {
			t.Fatalf("twice: %v", got)
		}
	})
	t.Run("frame flood", func(t *testing.T) {
		time.Sleep(time.Second) // refill a little after the cases above
		for i := 0; i < 40; i++ {
			c.send(map[string]string{"action": "ping"})
		}
		// Pongs for the frames within the budget and one rate_limited
		// error for the run of dropped ones (not one per frame: a flood
		// must not fill its own queue).
		limited, pongs := 0, 0
		for {
			got, err := c.tryRead(time.Second)
			if err != nil {
				break
			}
			switch {
			case got.str("code") == "rate_limited":
				limited++
			case got.str("type") == "pong":
				pongs++
			}
		}
		if limited != 1 || pongs == 0 || pongs >= 40 {
			t.Fatalf("40 frames at once: %d pongs, %d rate_limited errors", pongs, limited)
		}
	})
	t.Run("oversized frame closes with 1009", func(t *testing.T) {
		big := `{"action":"ping","pad":"` + strings.Repeat("x", 2000) + `"}`
		_ = c.conn.Write(context.Background(), websocket.MessageText, []byte(big))
		for {
			if _, err := c.tryRead(5 * time.Second); err != nil {
				if status := websocket.CloseStatus(c.closed()); status != websocket.StatusMessageTooBig {
					t.Fatalf("closed with %v (%v), want 1009", status, c.closed())
				}
				return
			}
		}
	})
	if strings.Contains(in.logs.String(), token(t, bob, time.Hour)[:60]) {
		t.Error("a token reached the log")
	}
}

// TestHostileTokens: every bad token is refused on the upgrade with 401.
func TestHostileTokens(t *testing.T) {
	db := newDB(t)
	in := start(t, db, baseEnv(t, db))
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
	cases := map[string]string{
		"expired":         signed(jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"sub": alice, "exp": now.Add(-time.Hour).Unix()}),
		"not yet valid":   signed(jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"sub": alice, "exp": exp, "nbf": now.Add(time.Hour).Unix()}),
		"wrong signature": signed(jwt.SigningMethodHS256, []byte("another-secret-0123456789abc"), jwt.MapClaims{"sub": alice, "exp": exp}),
		"alg none":        b64(`{"alg":"none","typ":"JWT"}`) + "." + b64(`{"sub":"`+alice+`","exp":9999999999}`) + ".",
		"wrong algorithm": signed(jwt.SigningMethodHS512, []byte(testSecret), jwt.MapClaims{"sub": alice, "exp": exp}),
		"missing sub":     signed(jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"exp": exp}),
		"non-uuid sub":    signed(jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"sub": "admin", "exp": exp}),
		"missing exp":     signed(jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"sub": alice}),
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			for _, header := range []bool{false, true} {
				req, _ := http.NewRequest("GET", in.base+"/ws?token="+tok, nil)
				if header {
					req, _ = http.NewRequest("GET", in.base+"/ws", nil)
					req.Header.Set("Authorization", "Bearer "+tok)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
					t.Fatalf("header=%v: %d %s", header, resp.StatusCode, resp.Header.Get("Content-Type"))
				}
			}
			if strings.Contains(in.logs.String(), tok) {
				t.Fatal("token in the log")
			}
		})
	}
}

// TestTokenExpiryAndRefresh: a socket whose token expires is closed with
// 4001; refresh_token before expiry keeps it open.
func TestTokenExpiryAndRefresh(t *testing.T) {
	db := newDB(t)
	in := start(t, db, baseEnv(t, db))
	dialTok := func(tok string) *client {
		conn, _, err := websocket.Dial(context.Background(), wsURL(in)+"?token="+tok, nil)
		if err != nil {
			t.Fatal(err)
		}
		return newClient(t, conn)
	}
	short := dialTok(token(t, alice, 1500*time.Millisecond))
	short.subscribe(project)
	if _, err := short.tryRead(5 * time.Second); err == nil || websocket.CloseStatus(short.closed()) != 4001 {
		t.Fatalf("expiry: %v", short.closed())
	}

	refreshed := dialTok(token(t, alice, 1500*time.Millisecond))
	refreshed.send(map[string]string{"action": "refresh_token", "token": token(t, alice, time.Hour)})
	if f := refreshed.read(5 * time.Second); f.str("type") != "token_refreshed" || f.str("expires_at") == "" {
		t.Fatalf("refresh: %v", f)
	}
	time.Sleep(2500 * time.Millisecond)
	refreshed.send(map[string]string{"action": "ping"})
	if f := refreshed.read(5 * time.Second); f.str("type") != "pong" {
		t.Fatalf("after the old expiry: %v", f)
	}
}

// TestOriginAndConnectionLimits: a browser on a foreign origin is refused
// (cross-site WebSocket hijacking), an allowed one is not; the connection
// cap and the per-address connection rate answer 503 and 429.
func TestOriginAndConnectionLimits(t *testing.T) {
	db := newDB(t)
	env := baseEnv(t, db)
	env["WALCAST_ALLOWED_ORIGINS"] = "app.example.com"
	env["WALCAST_MAX_CONNECTIONS"] = "3"
	in := start(t, db, env)
	tok := token(t, alice, time.Hour)
	dialOrigin := func(origin string) (*websocket.Conn, *http.Response, error) {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		return websocket.Dial(context.Background(), wsURL(in)+"?token="+tok, &websocket.DialOptions{HTTPHeader: h})
	}
	if _, resp, err := dialOrigin("https://evil.example.net"); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: %v %v", resp, err)
	}
	var open []*websocket.Conn
	for _, origin := range []string{"https://app.example.com", "", in.base} {
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
	if !strings.Contains(scrape(t, in.base), `walcast_ws_rejected_total{reason="connection_cap"} 1`) {
		t.Error("connection_cap rejection not counted")
	}

	db2 := newDB(t)
	env2 := baseEnv(t, db2)
	env2["WALCAST_CONNECT_RATE"] = "0.5"
	withConfig(t, env2, `
websocket:
  connect_rate: 0.5
  connect_burst: 2
  write_timeout: 10s
  ping_interval: 25s
  read_limit: 4096
`)
	in2 := start(t, db2, env2)
	var codes []int
	for i := 0; i < 4; i++ {
		conn, resp, err := websocket.Dial(context.Background(), wsURL(in2)+"?token="+tok, nil)
		if err == nil {
			codes = append(codes, 101)
			_ = conn.CloseNow()
		} else if resp != nil {
			codes = append(codes, resp.StatusCode)
		}
	}
	if codes[0] != 101 || codes[1] != 101 || codes[2] != http.StatusTooManyRequests || codes[3] != http.StatusTooManyRequests {
		t.Fatalf("per-address rate: %v", codes)
	}
}
