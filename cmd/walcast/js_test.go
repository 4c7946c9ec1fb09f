package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestJSClient runs web/walcast-client.test.mjs with Node's test runner
// against a real walcast: subscribe and receive, resume after a drop,
// resync, token refresh, and the TanStack adapter.
func TestJSClient(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is needed for the JavaScript client's tests (Debian's nodejs, ≥ 20)")
	}
	db := newDB(t)
	in := start(t, db, baseEnv(t, db))
	if _, err := os.Stat("../../web/node_modules/@tanstack/query-core"); err != nil {
		t.Fatal("web/node_modules is missing: make test runs npm ci in web/ (the TanStack tests use the real @tanstack/query-core)")
	}
	// A test that leaves a socket or stream open keeps node waiting: fail
	// in minutes, not at go test's own timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--experimental-websocket", "--experimental-eventsource", "--test", "web/walcast-client.test.mjs", "web/tanstack.test.mjs", "web/react.test.mjs")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(),
		"WALCAST_WS_URL="+strings.Replace(in.base, "http", "ws", 1)+"/ws",
		"WALCAST_HTTP_URL="+in.base,
		"PROJECT="+project,
		"ALICE="+alice,
		"BOB="+bob,
		"MALLORY_TOKEN="+token(t, mallory, time.Hour),
		"DATABASE_URL="+db.URL,
		"ALICE_TOKEN="+token(t, alice, time.Hour),
		"BOB_TOKEN="+token(t, bob, time.Hour),
		"JWT_SECRET="+testSecret,
	)
	out, err := cmd.CombinedOutput()
	t.Logf("node --test:\n%s", out)
	if err != nil {
		t.Fatalf("JavaScript client tests failed: %v", err)
	}
	if !strings.Contains(string(out), "# fail 0") || !strings.Contains(string(out), "# pass 13") {
		t.Fatal("node reported failures")
	}
}
