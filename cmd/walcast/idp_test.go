package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
)

// TestIdentityProviderTokens: walcast next to an identity provider. With
// its JWKS unreachable, /readyz says so; with it up, an RS256 token of the
// provider (the user id in user_id, iss and aud checked) opens a socket
// that receives the project's events, and a token of another issuer is
// refused.
func TestIdentityProviderTokens(t *testing.T) {
	t.Parallel()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var down atomic.Bool
	down.Store(true)
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if down.Load() {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		b64 := base64.RawURLEncoding.EncodeToString
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
			"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": b64(key.N.Bytes()), "e": b64(big.NewInt(int64(key.E)).Bytes())}}})
	}))
	defer idp.Close()
	sign := func(iss string) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"user_id": bob, "sub": "idp|bob", "iss": iss, "aud": "walcast",
			"exp": time.Now().Add(time.Hour).Unix()})
		tok.Header["kid"] = "k1"
		raw, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}

	db := newDB(t)
	env := baseEnv(t, db)
	env["WALCAST_JWT_ALGORITHM"] = "RS256"
	env["WALCAST_JWKS_URL"] = idp.URL
	env["WALCAST_JWT_USER_CLAIM"] = "user_id"
	env["WALCAST_JWT_ISSUER"] = "https://idp.example"
	env["WALCAST_JWT_AUDIENCE"] = "walcast"

	// Unreachable: not ready, and why.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve"}, func(k string) string { return env[k] }, &syncBuffer{}, &syncBuffer{})
	}()
	base := "http://" + env["WALCAST_HTTP_ADDR"]
	waitFor(t, 20*time.Second, "/readyz names the unreachable JWKS", func() bool {
		code, body := getJSON(base + "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "JWKS") && strings.Contains(body, idp.URL)
	})
	cancel()
	<-done

	down.Store(false)
	in := start(t, db, env)
	dialWith := func(tok string) (*websocket.Conn, int) {
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		conn, resp, err := websocket.Dial(dctx, strings.Replace(in.base, "http", "ws", 1)+"/ws?token="+tok, nil)
		if err != nil {
			if resp != nil {
				return nil, resp.StatusCode
			}
			t.Fatal(err)
		}
		return conn, http.StatusSwitchingProtocols
	}
	if _, code := dialWith(sign("https://evil.example")); code != http.StatusUnauthorized {
		t.Fatalf("another issuer's token: %d", code)
	}
	conn, code := dialWith(sign("https://idp.example"))
	if code != http.StatusSwitchingProtocols {
		t.Fatalf("the provider's token: %d", code)
	}
	c := newClient(t, conn)
	c.subscribe(project)
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'via the idp')`, project, alice)
	untilFrame(t, c, 10*time.Second, "the message", func(f frame) bool { return f.data()["content"] == "via the idp" })
}

// getJSON returns a GET's status and body.
func getJSON(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	n, _ := resp.Body.Read(buf)
	b.Write(buf[:n])
	return resp.StatusCode, b.String()
}
