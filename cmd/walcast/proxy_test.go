package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestTrustedProxy: behind a trusted proxy, the per-address connect limit
// counts each client (X-Forwarded-For), so a reconnect wave of many
// clients through one proxy is not refused, while one client past its own
// budget is; the same header from a peer that is not a trusted proxy is
// ignored (its sockets all count against the peer).
func TestTrustedProxy(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	env := baseEnv(t, db)
	env["WALCAST_CONNECT_RATE"] = "1" // burst: config's 50
	env["WALCAST_TRUSTED_PROXIES"] = "127.0.0.1/32"
	in := start(t, db, env)
	dialAs := func(forwardedFor string) int { return dialForwarded(t, in, forwardedFor) }
	// 200 clients through the proxy, each its own address: none refused.
	for i := range 200 {
		if code := dialAs(fmt.Sprintf("198.51.100.%d, 127.0.0.1", i)); code != http.StatusSwitchingProtocols {
			t.Fatalf("client %d of the wave answered %d", i, code)
		}
	}
	// A client's own Forwarded header, which the proxy (writing
	// X-Forwarded-For) passes on, is not read: changing it each time buys
	// nothing.
	refused := 0
	for i := range 60 {
		if dialForwardedAlso(t, in, "203.0.113.9", fmt.Sprintf("for=198.18.0.%d", i)) == http.StatusTooManyRequests {
			refused++
		}
	}
	if refused == 0 {
		t.Fatal("a client escaped its budget by sending its own Forwarded header")
	}
	// One client past its own budget (burst 50) is refused.
	refused = 0
	for range 60 {
		if dialAs("203.0.113.5") == http.StatusTooManyRequests {
			refused++
		}
	}
	if refused == 0 {
		t.Fatal("one client's 60 sockets through the proxy were never limited")
	}

	// Not a trusted proxy: the header is anyone's to send, and ignored.
	env2 := baseEnv(t, db)
	env2["WALCAST_CONNECT_RATE"] = "1"
	env2["WALCAST_TRUSTED_PROXIES"] = "10.0.0.0/8"
	other := start(t, db, env2)
	refused = 0
	for i := range 60 {
		if dialForwarded(t, other, fmt.Sprintf("198.51.100.%d", i)) == http.StatusTooManyRequests {
			refused++
		}
	}
	if refused == 0 {
		t.Fatal("forged X-Forwarded-For from an untrusted peer escaped the per-address limit")
	}
}

// dialForwarded opens a socket to in as bob with forwardedFor as
// X-Forwarded-For (none when empty) and returns the upgrade's status.
func dialForwarded(t *testing.T, in *instance, forwardedFor string) int {
	t.Helper()
	return dialForwardedAlso(t, in, forwardedFor, "")
}

// dialForwardedAlso is dialForwarded with a Forwarded header too (none
// when empty).
func dialForwardedAlso(t *testing.T, in *instance, forwardedFor, forwarded string) int {
	t.Helper()
	url := strings.Replace(in.base, "http", "ws", 1) + "/ws?token=" + token(t, bob, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h := http.Header{}
	if forwardedFor != "" {
		h.Set("X-Forwarded-For", forwardedFor)
	}
	if forwarded != "" {
		h.Set("Forwarded", forwarded)
	}
	conn, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		if resp != nil {
			return resp.StatusCode
		}
		t.Fatal(err)
	}
	conn.CloseNow()
	return http.StatusSwitchingProtocols
}
