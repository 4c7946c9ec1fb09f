package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestOperatorDisconnectsAUserEverywhere: the admin route closes every
// socket of a user on every replica with 4003, and with a ban refuses the
// user's new sockets on every replica; alice's sockets stay open; the
// route needs the admin token.
func TestOperatorDisconnectsAUserEverywhere(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	db := newDB(t)
	const adminToken = "admin-token-0123456789abcdef0123456789"
	base := clustered(baseEnv(t, db), ns, "ADMIN")
	base["WALCAST_ADMIN_TOKEN"] = adminToken
	envA, envB := clustered(base, nil, ""), clustered(base, nil, "")
	envA["WALCAST_HTTP_ADDR"], envB["WALCAST_HTTP_ADDR"] = freeAddr(t), freeAddr(t)
	a := start(t, db, envA)
	waitFor(t, 15*time.Second, "A leads", func() bool { return isLeader(a.base) })
	b := start(t, db, envB)
	bobA, bobB, al := dial(t, a, bob), dial(t, b, bob), dial(t, b, alice)
	for _, c := range []*client{bobA, bobB, al} {
		c.subscribe(project)
	}
	url := a.base + "/api/v1/admin/users/" + bob + "/disconnect?ban=1h"
	if code, _ := doJSON(t, "POST", url, "not-the-token", "", ""); code != http.StatusUnauthorized {
		t.Fatalf("without the admin token: %d", code)
	}
	code, body := doJSON(t, "POST", url, adminToken, "", "")
	if code != http.StatusOK || body["disconnected"] != 1.0 {
		t.Fatalf("disconnect: %d %v", code, body)
	}
	for name, c := range map[string]*client{"on A": bobA, "on B": bobB} {
		if _, err := c.tryRead(10 * time.Second); websocket.CloseStatus(err) != 4003 {
			t.Fatalf("bob's socket %s: %v", name, err)
		}
	}
	waitFor(t, 5*time.Second, "bob refused on B too", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, resp, err := websocket.Dial(ctx, strings.Replace(b.base, "http", "ws", 1)+"/ws?token="+token(t, bob, time.Hour), nil)
		if err == nil {
			conn.CloseNow()
			return false
		}
		return resp != nil && resp.StatusCode == http.StatusForbidden
	})
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'alice stays')`, project, alice)
	untilFrame(t, al, 10*time.Second, "alice's socket still served", func(f frame) bool { return f.data()["content"] == "alice stays" })
}
