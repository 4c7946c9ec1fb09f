package main

import (
	"syscall"
	"testing"
	"time"
)

// untilFrame reads c's frames until want holds for one, and returns it.
func untilFrame(t *testing.T, c *client, within time.Duration, what string, want func(frame) bool) frame {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		f, err := c.tryRead(time.Until(deadline))
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if want(f) {
			return f
		}
	}
}

func presenceHas(f frame, key, user string) bool {
	m, _ := f[key].(map[string]any)
	return f.str("type") == "presence_diff" && m[user] != nil
}

// TestClusterBroadcastAndPresence: broadcasts and presence cross
// replicas. Alice is on replica A, bob on replica B (a process of its
// own): each sees the other's broadcasts and presence; bob's membership
// removed (read from the WAL by the leader, applied by B) takes him out of
// alice's presence; replica B killed with SIGKILL takes him out within
// cluster.presence_timeout plus one presence_interval (5 s + 1 s).
func TestClusterBroadcastAndPresence(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	db := newDB(t)
	base := clustered(baseEnv(t, db), ns, "EPHEMERAL")
	envA, envB := clustered(base, nil, ""), clustered(base, nil, "")
	envA["WALCAST_HTTP_ADDR"], envB["WALCAST_HTTP_ADDR"] = freeAddr(t), freeAddr(t)
	a := start(t, db, envA)
	waitFor(t, 15*time.Second, "A leads", func() bool { return isLeader(a.base) })
	b := startProcess(t, envB)

	al := dial(t, a, alice)
	al.send(map[string]any{"action": "subscribe", "project_id": project, "presence": true})
	untilFrame(t, al, 5*time.Second, "subscribed", func(f frame) bool { return f.str("type") == "subscribed" })
	untilFrame(t, al, 5*time.Second, "presence_state", func(f frame) bool { return f.str("type") == "presence_state" })

	bo := dial(t, &instance{base: b.base}, bob)
	bo.send(map[string]any{"action": "subscribe", "project_id": project, "presence": true})
	untilFrame(t, bo, 5*time.Second, "subscribed", func(f frame) bool { return f.str("type") == "subscribed" })
	untilFrame(t, al, 10*time.Second, "bob joins on A", func(f frame) bool { return presenceHas(f, "joins", bob) })
	// B learns alice from A's snapshot (or had her in its state).
	untilFrame(t, bo, 10*time.Second, "alice present on B", func(f frame) bool {
		users, _ := f["users"].(map[string]any)
		return f.str("type") == "presence_state" && users[alice] != nil || presenceHas(f, "joins", alice)
	})

	bo.send(map[string]any{"action": "broadcast", "project_id": project, "event": "typing", "payload": map[string]bool{"on": true}})
	if f := untilFrame(t, al, 5*time.Second, "bob's broadcast", func(f frame) bool { return f.str("type") == "broadcast" }); f.str("from") != bob || f.str("event") != "typing" {
		t.Fatalf("broadcast %v", f)
	}
	al.send(map[string]any{"action": "broadcast", "project_id": project, "event": "cursor"})
	if f := untilFrame(t, bo, 5*time.Second, "alice's broadcast", func(f frame) bool { return f.str("type") == "broadcast" }); f.str("from") != alice {
		t.Fatalf("broadcast %v", f)
	}

	// Revocation: B revokes bob and he leaves alice's presence.
	db.Exec(t, `DELETE FROM project_members WHERE project_id = $1 AND user_id = $2`, project, bob)
	untilFrame(t, bo, 10*time.Second, "bob revoked", func(f frame) bool { return f.str("type") == "subscription_revoked" })
	untilFrame(t, al, 10*time.Second, "bob leaves on revocation", func(f frame) bool { return presenceHas(f, "leaves", bob) })

	// Back, then B dies: he leaves within the bound.
	db.Exec(t, `INSERT INTO project_members (project_id, user_id, role) VALUES ($1, $2, 'member')`, project, bob)
	bo2 := dial(t, &instance{base: b.base}, bob)
	waitFor(t, 10*time.Second, "bob subscribes again", func() bool {
		bo2.send(map[string]any{"action": "subscribe", "project_id": project})
		f := bo2.read(5 * time.Second)
		return f.str("type") == "subscribed"
	})
	untilFrame(t, al, 10*time.Second, "bob joins again", func(f frame) bool { return presenceHas(f, "joins", bob) })
	killed := time.Now()
	b.kill(syscall.SIGKILL)
	untilFrame(t, al, 10*time.Second, "bob leaves when B dies", func(f frame) bool { return presenceHas(f, "leaves", bob) })
	took := time.Since(killed)
	t.Logf("bob left alice's presence %s after replica B was killed", took.Round(10*time.Millisecond))
	if took > 6*time.Second+500*time.Millisecond {
		t.Fatalf("a dead replica's users left after %s, over the 6 s bound", took)
	}
}
