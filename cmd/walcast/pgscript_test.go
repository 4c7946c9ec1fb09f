package main

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// TestPgScriptNoticesAnotherPort: scripts/pg.sh on a data folder made for
// another port says so and starts on the port asked for (it used to wait
// for a server listening elsewhere, then fail); with the server running
// on the other port it stops at once with the fix.
func TestPgScriptNoticesAnotherPort(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "walcast-pgsh-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o777); err != nil { // initdb runs as the postgres user
		t.Fatal(err)
	}
	port := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	}
	pgsh := func(p string, args ...string) (string, error) {
		cmd := exec.Command("../../scripts/pg.sh", args...)
		cmd.Env = append(os.Environ(), "WALCAST_PGDATA="+dir, "WALCAST_PG_PORT="+p)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	first, second, third := port(), port(), port()
	if out, err := pgsh(first, "start"); err != nil {
		t.Fatalf("start: %v\n%s", err, out)
	}
	if out, err := pgsh(first, "stop"); err != nil {
		t.Fatalf("stop: %v\n%s", err, out)
	}
	out, err := pgsh(second, "start")
	if err != nil || !strings.Contains(out, "made for port "+first) {
		t.Fatalf("start on another port: %v\n%s", err, out)
	}
	defer pgsh(second, "stop")
	if out, err := pgsh(second, "url"); err != nil || !strings.Contains(out, ":"+second+"/") {
		t.Fatalf("url: %v %s", err, out)
	}
	out, err = pgsh(third, "start")
	if err == nil || !strings.Contains(out, "running on port "+second) || !strings.Contains(out, "WALCAST_PG_PORT="+second) {
		t.Fatalf("start while it runs on another port: %v\n%s", err, out)
	}
}
