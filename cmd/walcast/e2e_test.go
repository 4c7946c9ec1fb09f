package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/events"
)

// TestMessageReachesEveryMember is the bug walcast ends: a message posted by
// one member reaches the others at once, whether it came through the REST
// route or through plain SQL, and never reaches a non-member.
func TestMessageReachesEveryMember(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	in := start(t, db, baseEnv(t, db))

	a, b, m := dial(t, in, alice), dial(t, in, bob), dial(t, in, mallory)
	a.subscribe(project)
	b.subscribe(project)
	m.send(map[string]string{"action": "subscribe", "project_id": project})
	if f := m.read(5 * time.Second); f.str("type") != "error" || f.str("code") != "forbidden" || f.str("project_id") != project {
		t.Fatalf("non-member subscribe: got %v", f)
	}
	m.subscribe(project2) // mallory's own project: her socket stays useful

	check := func(how, content string) {
		t.Helper()
		for name, c := range map[string]*client{"alice": a, "bob": b} {
			inv := c.read(5 * time.Second)
			if inv.str("type") != "cache_invalidate" || inv.str("resource") != "message" || inv.str("action") != "INSERT" ||
				inv.str("project_id") != project || inv.str("id") == "" || inv.str("timestamp") == "" {
				t.Fatalf("%s via %s: first frame %v", name, how, inv)
			}
			if _, err := time.Parse(time.RFC3339Nano, inv.str("timestamp")); err != nil {
				t.Fatalf("timestamp %q: %v", inv.str("timestamp"), err)
			}
			mc := c.read(5 * time.Second)
			d := mc.data()
			if mc.str("type") != "message_created" || mc.str("project_id") != project || d == nil {
				t.Fatalf("%s via %s: second frame %v", name, how, mc)
			}
			if d["content"] != content || d["projectId"] != project || d["senderId"] != alice || d["messageType"] != "text" || d["id"] != inv.str("id") {
				t.Fatalf("%s via %s: data %v", name, how, d)
			}
			if _, err := time.Parse(time.RFC3339Nano, d["createdAt"].(string)); err != nil {
				t.Fatalf("createdAt %v: %v", d["createdAt"], err)
			}
			p1, err1 := events.ParsePosition(inv.str("position"))
			p2, err2 := events.ParsePosition(mc.str("position"))
			if err1 != nil || err2 != nil || p1.Compare(p2) >= 0 || p1.LSN != p2.LSN {
				t.Fatalf("positions %q %q", inv.str("position"), mc.str("position"))
			}
		}
	}

	status, body := doJSON(t, http.MethodPost, in.base+"/api/v1/projects/"+project+"/messages", token(t, alice, time.Hour),
		`{"content":"hello from REST","messageType":"text"}`, "application/json")
	if status != http.StatusCreated || body["content"] != "hello from REST" || body["projectId"] != project {
		t.Fatalf("POST message: %d %v", status, body)
	}
	check("REST", "hello from REST")

	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'hello from SQL')`, project, alice)
	check("SQL", "hello from SQL")

	m.expectQuiet(300 * time.Millisecond)
}

// TestEveryTableAndAction drives every action on the five tables and checks
// the events of docs/protocol.md §2: one cache_invalidate per row change, the
// domain event where there is one, project_id on DELETE, typed camelCase
// data, and commit order.
func TestEveryTableAndAction(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	in := start(t, db, baseEnv(t, db))
	c := dial(t, in, alice)
	c.subscribe(project)

	const sprint = "eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee"
	const task = "ffffffff-ffff-4fff-8fff-ffffffffffff"
	steps := []struct {
		sql      string
		resource string
		action   string
		domain   string
		check    func(t *testing.T, d map[string]any)
	}{
		{`INSERT INTO sprints (id, project_id, name, start_date, end_date) VALUES ('` + sprint + `', '` + project + `', 'S1', '2026-12-01', NULL)`,
			"sprint", "INSERT", "sprint_created", func(t *testing.T, d map[string]any) {
				if d["startDate"] != "2026-12-01" || d["endDate"] != nil || d["status"] != "planned" {
					t.Errorf("sprint data %v", d)
				}
			}},
		{`UPDATE sprints SET status = 'active' WHERE id = '` + sprint + `'`, "sprint", "UPDATE", "sprint_updated",
			func(t *testing.T, d map[string]any) {
				if d["status"] != "active" || d["name"] != "S1" {
					t.Errorf("sprint update data %v", d)
				}
			}},
		{`INSERT INTO tasks (id, project_id, sprint_id, title, story_points, assignee_id) VALUES ('` + task + `', '` + project + `', '` + sprint + `', 'T1', 3, '` + bob + `')`,
			"task", "INSERT", "task_created", func(t *testing.T, d map[string]any) {
				if d["storyPoints"] != float64(3) || d["sprintId"] != sprint || d["assigneeId"] != bob || d["description"] != nil {
					t.Errorf("task data %v", d)
				}
			}},
		{`UPDATE tasks SET status = 'done', description = repeat('x', 100000) WHERE id = '` + task + `'`, "task", "UPDATE", "task_updated",
			func(t *testing.T, d map[string]any) {
				if d["status"] != "done" || len(d["description"].(string)) != 100000 {
					t.Errorf("task update status=%v description len %d", d["status"], len(d["description"].(string)))
				}
			}},
		// description is TOASTed now and unchanged: it must come from the old row.
		{`UPDATE tasks SET story_points = 8 WHERE id = '` + task + `'`, "task", "UPDATE", "task_updated",
			func(t *testing.T, d map[string]any) {
				desc, ok := d["description"].(string)
				if d["storyPoints"] != float64(8) || !ok || len(desc) != 100000 {
					t.Errorf("unchanged TOAST value not carried: storyPoints=%v description present=%v", d["storyPoints"], ok)
				}
			}},
		{`DELETE FROM tasks WHERE id = '` + task + `'`, "task", "DELETE", "task_deleted",
			func(t *testing.T, d map[string]any) {
				if d["id"] != task || d["title"] != "T1" || d["projectId"] != project {
					t.Errorf("task delete data %v", d)
				}
			}},
		{`UPDATE projects SET name = 'Renamed' WHERE id = '` + project + `'`, "project", "UPDATE", "project_updated",
			func(t *testing.T, d map[string]any) {
				if d["name"] != "Renamed" || d["id"] != project {
					t.Errorf("project data %v", d)
				}
			}},
		{`INSERT INTO project_members (project_id, user_id) VALUES ('` + project + `', '` + mallory + `')`, "project_members", "INSERT", "member_added",
			func(t *testing.T, d map[string]any) {
				if d["userId"] != mallory || d["role"] != "member" {
					t.Errorf("member data %v", d)
				}
			}},
		{`UPDATE messages SET content = 'edited' WHERE false`, "", "", "", nil}, // no rows: no events
		{`INSERT INTO messages (project_id, sender_id, content) VALUES ('` + project + `', '` + bob + `', 'm')`, "message", "INSERT", "message_created", nil},
		{`UPDATE messages SET content = 'edited'`, "message", "UPDATE", "", nil},
		{`DELETE FROM messages`, "message", "DELETE", "", nil},
		{`DELETE FROM sprints WHERE id = '` + sprint + `'`, "sprint", "DELETE", "sprint_deleted", nil},
	}
	var last events.Position
	for i, s := range steps {
		db.Exec(t, s.sql)
		if s.resource == "" {
			continue
		}
		inv := c.read(5 * time.Second)
		if inv.str("type") != "cache_invalidate" || inv.str("resource") != s.resource || inv.str("action") != s.action || inv.str("project_id") != project {
			t.Fatalf("step %d (%s): cache_invalidate %v", i, s.sql, inv)
		}
		pos, err := events.ParsePosition(inv.str("position"))
		if err != nil || pos.Compare(last) <= 0 {
			t.Fatalf("step %d: position %q not after %s", i, inv.str("position"), last)
		}
		last = pos
		if s.domain == "" {
			continue
		}
		ev := c.read(5 * time.Second)
		if ev.str("type") != s.domain || ev.str("project_id") != project {
			t.Fatalf("step %d (%s): domain event %v", i, s.sql, ev)
		}
		pos, _ = events.ParsePosition(ev.str("position"))
		if pos.Compare(last) <= 0 {
			t.Fatalf("step %d: domain position not after cache_invalidate", i)
		}
		last = pos
		if s.check != nil {
			s.check(t, ev.data())
		}
	}
	c.expectQuiet(200 * time.Millisecond)
}

// TestMemberRemovedAndProjectDeleted checks revocation at a position: the
// removed user gets subscription_revoked in place of the change's events and
// nothing of the project after it; deleting the project revokes everyone.
func TestMemberRemovedAndProjectDeleted(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	in := start(t, db, baseEnv(t, db))
	a, b, b2 := dial(t, in, alice), dial(t, in, bob), dial(t, in, bob)
	a.subscribe(project)
	b.subscribe(project)
	b2.subscribe(project) // a second socket of the same user

	// Bob is removed and a message follows in the same transaction.
	tx(t, db, func(ctx context.Context, q querier) {
		mustExec(t, q, `DELETE FROM project_members WHERE project_id = $1 AND user_id = $2`, project, bob)
		mustExec(t, q, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, 'after')`, project, alice)
	})
	inv := a.read(5 * time.Second)
	removed := a.read(5 * time.Second)
	if inv.str("type") != "cache_invalidate" || inv.str("resource") != "project_members" || inv.str("action") != "DELETE" ||
		removed.str("type") != "member_removed" || removed.data()["userId"] != bob {
		t.Fatalf("alice: %v then %v", inv, removed)
	}
	for _, c := range []*client{b, b2} {
		rev := c.read(5 * time.Second)
		if rev.str("type") != "subscription_revoked" || rev.str("reason") != "member_removed" || rev.str("project_id") != project || rev.str("position") != removed.str("position") {
			t.Fatalf("bob: want subscription_revoked at %s, got %v", removed.str("position"), rev)
		}
	}
	if f := a.read(5 * time.Second); f.str("type") != "cache_invalidate" || f.str("resource") != "message" {
		t.Fatalf("alice after removal: %v", f)
	}
	a.read(5 * time.Second) // message_created
	b.expectQuiet(300 * time.Millisecond)
	b2.expectQuiet(0)

	// Bob can no longer subscribe; added back, he can at once.
	b.send(map[string]string{"action": "subscribe", "project_id": project})
	if f := b.read(5 * time.Second); f.str("code") != "forbidden" {
		t.Fatalf("removed member subscribe: %v", f)
	}
	db.Exec(t, `INSERT INTO project_members (project_id, user_id) VALUES ($1, $2)`, project, bob)
	// At once: no stale negative answer is cached. Bob may subscribe before
	// or after the hub takes his re-adding; events published while his
	// subscription was being checked come before the subscribed frame.
	b.send(map[string]string{"action": "subscribe", "project_id": project})
	for {
		f := b.read(5 * time.Second)
		if f.str("type") == "subscribed" {
			break
		}
		if f.str("resource") != "project_members" && f.str("type") != "member_added" {
			t.Fatalf("bob re-subscribing: %v", f)
		}
	}
	a.read(5 * time.Second) // cache_invalidate project_members INSERT
	a.read(5 * time.Second) // member_added
	drain(b)

	// Deleting the project revokes every subscription to it.
	db.Exec(t, `DELETE FROM projects WHERE id = $1`, project)
	for name, c := range map[string]*client{"alice": a, "bob": b} {
		f := c.read(5 * time.Second)
		for f.str("type") != "subscription_revoked" {
			t.Fatalf("%s: want subscription_revoked, got %v", name, f)
		}
		if f.str("reason") != "project_deleted" {
			t.Fatalf("%s: reason %v", name, f)
		}
		c.expectQuiet(300 * time.Millisecond)
	}
}

// TestBadTokensAre401 covers forged, expired, alg:none and missing tokens
// on the upgrade and the REST routes.
func TestBadTokensAre401(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	in := start(t, db, baseEnv(t, db))
	good := token(t, alice, time.Hour)
	parts := strings.Split(good, ".")
	cases := map[string]string{
		"missing":  "",
		"garbage":  "not-a-jwt",
		"forged":   parts[0] + "." + parts[1] + ".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"expired":  token(t, alice, -time.Minute),
		"alg none": "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + parts[1] + ".",
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			url := in.base + "/ws"
			if tok != "" {
				url += "?token=" + tok
			}
			status, body := doJSON(t, http.MethodGet, url, "", "", "")
			if status != http.StatusUnauthorized || body["error"] == nil {
				t.Fatalf("upgrade: %d %v", status, body)
			}
			status, body = doJSON(t, http.MethodGet, in.base+"/api/v1/projects/"+project+"/messages", tok, "", "")
			if status != http.StatusUnauthorized || body["error"] == nil {
				t.Fatalf("REST: %d %v", status, body)
			}
			if tok != "" && strings.Contains(in.logs.String(), tok) {
				t.Fatal("token appears in the log")
			}
		})
	}
}
