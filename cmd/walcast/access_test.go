package main

// Access ends when membership ends. These tests pin down the guarantee from
// the outside (sockets, REST, SQL, metrics):
//
//   - once the transaction that ends a membership is visible, the user gets
//     nothing of the project after the removal's position, on any socket,
//     and both REST message routes answer 403;
//   - an open socket gets subscription_revoked at the position of the
//     member_removed event other members see; a new subscribe is forbidden;
//   - every way a membership can end is covered (DELETE, UPDATE of either
//     key, TRUNCATE, cascades), and where walcast cannot tell whose access
//     ended (replica identity lost, table out of the publication, column
//     renamed) it fails closed;
//   - the window in which PostgreSQL has streamed a commit that other
//     sessions cannot see yet is made deterministic with a synchronous
//     standby that never answers, and is also raced under load.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/walcast/walcast/internal/auth"
	"github.com/walcast/walcast/internal/events"
	"github.com/walcast/walcast/internal/eventually"
	"github.com/walcast/walcast/internal/pgtest"
)

// carol is an extra user some tests add; she is in no project at first.
const carol = "cccccccc-cccc-4ccc-8ccc-cccccccccccc"

const addCarol = `INSERT INTO users (id, email, display_name) VALUES ('` + carol + `', 'carol@example.com', 'Carol')`

// accEnv is baseEnv with limits that suit tests opening many sockets from
// one address, and a short publication check so a table dropped from the
// publication is noticed quickly.
func accEnv(t *testing.T, db *pgtest.DB) map[string]string {
	env := baseEnv(t, db)
	env["WALCAST_CONNECT_RATE"] = "10000"
	env["WALCAST_PUBLICATION_CHECK_INTERVAL"] = "200ms"
	return env
}

// accIs matches frames of one type for one project.
func accIs(typ, projectID string) func(frame) bool {
	return func(f frame) bool { return f.str("type") == typ && f.str("project_id") == projectID }
}

// accUntil reads c until want matches and returns the match and every
// frame read before it; it fails the test when nothing matches within.
func accUntil(t *testing.T, c *client, within time.Duration, what string, want func(frame) bool) (frame, []frame) {
	t.Helper()
	deadline := time.Now().Add(within)
	var before []frame
	for {
		f, err := c.tryRead(max(time.Until(deadline), time.Millisecond))
		if err != nil {
			t.Fatalf("waiting for %s: %v; frames read meanwhile: %v", what, err, before)
		}
		if want(f) {
			return f, before
		}
		before = append(before, f)
	}
}

// accPos parses a frame's position, failing the test when it has none.
func accPos(t *testing.T, f frame) events.Position {
	t.Helper()
	p, err := events.ParsePosition(f.str("position"))
	if err != nil {
		t.Fatalf("frame without a valid position: %v", f)
	}
	return p
}

// accIsAnswer matches the answer to a subscribe to projectID: subscribed,
// an error naming the project, or a rate_limited error (which names none).
func accIsAnswer(projectID string) func(frame) bool {
	return func(f frame) bool {
		switch f.str("type") {
		case "subscribed":
			return f.str("project_id") == projectID
		case "error":
			return f.str("project_id") == projectID || f.str("code") == "rate_limited"
		}
		return false
	}
}

// accAnswer sends a subscribe and returns its answer and the frames before it.
func accAnswer(t *testing.T, c *client, projectID string) (frame, []frame) {
	t.Helper()
	c.send(map[string]string{"action": "subscribe", "project_id": projectID})
	return accUntil(t, c, 5*time.Second, "the answer to subscribe "+projectID, accIsAnswer(projectID))
}

// accDenied subscribes and requires an error (of code, when code is not
// empty): never subscribed, and no frame of the project on the way.
func accDenied(t *testing.T, c *client, projectID, who, code string) {
	t.Helper()
	ans, before := accAnswer(t, c, projectID)
	for _, f := range before {
		if f.str("project_id") == projectID {
			t.Errorf("%s: frame of %s before the answer to subscribe: %v", who, projectID, f)
		}
	}
	if ans.str("type") != "error" || (code != "" && ans.str("code") != code) {
		want := "an error"
		if code != "" {
			want = `{"type":"error","code":"` + code + `"}`
		}
		t.Fatalf("%s subscribing to %s: want %s, got %v", who, projectID, want, ans)
	}
}

// accSubscribeEventually subscribes until walcast accepts, for members
// whose subscriptions a fail-closed revocation ended and who may have to
// wait until walcast trusts the stream again. Attempts are spaced so the
// per-socket frame rate limit is never hit.
func accSubscribeEventually(t *testing.T, c *client, projectID, who string, within time.Duration) frame {
	t.Helper()
	var last frame
	var lastTry time.Time
	waitFor(t, within, who+" subscribed to "+projectID+" again", func() bool {
		if time.Since(lastTry) < 150*time.Millisecond {
			return false
		}
		lastTry = time.Now()
		last, _ = accAnswer(t, c, projectID)
		return last.str("type") == "subscribed"
	})
	return last
}

// accRevoked reads c until its subscription_revoked for projectID and checks
// it: at position at (when set), for reason (when set), and in place of the
// removing change's events: nothing of the project from that transaction
// on came before it (a resync_required is harmless and allowed).
func accRevoked(t *testing.T, c *client, within time.Duration, projectID, who, at, reason string) frame {
	t.Helper()
	rev, before := accUntil(t, c, within, who+"'s subscription_revoked for "+projectID, accIs("subscription_revoked", projectID))
	if at != "" && rev.str("position") != at {
		t.Errorf("%s: subscription_revoked at %s, want the member_removed position %s", who, rev.str("position"), at)
	}
	if reason != "" && rev.str("reason") != reason {
		t.Errorf("%s: subscription_revoked reason %q, want %q", who, rev.str("reason"), reason)
	}
	rp := accPos(t, rev)
	for _, f := range before {
		if f.str("project_id") != projectID || f.str("type") == "resync_required" {
			continue
		}
		if p, err := events.ParsePosition(f.str("position")); err != nil || p.LSN >= rp.LSN {
			t.Errorf("%s: got %v before the revocation at %s (events of the removing change or later)", who, f, rev.str("position"))
		}
	}
	return rev
}

// accQuiet reads c for d and fails on any frame of projectID: the removed
// user must receive nothing of it.
func accQuiet(t *testing.T, c *client, projectID, who string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		f, err := c.tryRead(time.Until(deadline))
		if err != nil {
			return
		}
		if f.str("project_id") == projectID {
			t.Errorf("%s received a frame of %s after losing access: %v", who, projectID, f)
		}
	}
}

// accNothingOf fails when frames hold anything of projectID but error
// answers, naming how many and the first few.
func accNothingOf(t *testing.T, what string, frames []frame, projectID string) {
	t.Helper()
	var bad []frame
	for _, f := range frames {
		if f.str("project_id") == projectID && f.str("type") != "error" {
			bad = append(bad, f)
		}
	}
	if len(bad) > 0 {
		t.Errorf("%s: got %d frame(s) of %s, first %v", what, len(bad), projectID, bad[:min(3, len(bad))])
	}
}

// accRemoved reads the observer until the member_removed of user in projectID.
func accRemoved(t *testing.T, observer *client, projectID, user string) frame {
	t.Helper()
	f, _ := accUntil(t, observer, 5*time.Second, "member_removed of "+user, func(f frame) bool {
		return accIs("member_removed", projectID)(f) && f.data()["userId"] == user
	})
	return f
}

var accMessageSeq atomic.Int64

// accWrite inserts a message into projectID as plain SQL (a writer other
// than walcast) and returns its unique content.
func accWrite(t *testing.T, db *pgtest.DB, projectID string) string {
	t.Helper()
	content := fmt.Sprintf("later message %d", accMessageSeq.Add(1))
	db.Exec(t, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, $3)`, projectID, alice, content)
	return content
}

// accSeen reads a member's socket until the message_created of content:
// walcast has fanned it out, so a removed user's socket would have it too.
func accSeen(t *testing.T, c *client, projectID, content string) frame {
	t.Helper()
	f, _ := accUntil(t, c, 5*time.Second, "message_created "+content, func(f frame) bool {
		return accIs("message_created", projectID)(f) && f.data()["content"] == content
	})
	return f
}

// accHTTP calls a REST route with a timeout (a route that hangs must not
// hang the test) and returns the status code.
func accHTTP(method, url, tok, body string) (int, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// accREST checks the message routes of projectID for user: a member may
// read them (GET 200; POST is left out so the check writes nothing), a
// removed user gets 403 from both GET and POST.
func accREST(t *testing.T, in *instance, user, who, projectID string, member bool) {
	t.Helper()
	url := in.base + "/api/v1/projects/" + projectID + "/messages"
	tok := token(t, user, time.Hour)
	if member {
		if status, err := accHTTP(http.MethodGet, url, tok, ""); err != nil || status != http.StatusOK {
			t.Errorf("%s GET %s: status %d (%v), want 200", who, url, status, err)
		}
		return
	}
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		body := ""
		if method == http.MethodPost {
			body = `{"content":"written by ` + who + `"}`
		}
		status, err := accHTTP(method, url, tok, body)
		if err != nil || status != http.StatusForbidden {
			t.Errorf("%s %s %s: status %d (%v), want 403", who, method, url, status, err)
		}
	}
}

// accMetric returns the largest sample of a metric on /metrics (any labels)
// and whether it has one.
func accMetric(t *testing.T, in *instance, name string) (float64, bool) {
	t.Helper()
	best, found := 0.0, false
	sc := bufio.NewScanner(strings.NewReader(scrape(t, in.base)))
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err == nil && (!found || v > best) {
			best, found = v, true
		}
	}
	return best, found
}

// accFailClosedCounted requires walcast_access_fail_closed_total >= 1.
func accFailClosedCounted(t *testing.T, in *instance) {
	t.Helper()
	if v, ok := accMetric(t, in, "walcast_access_fail_closed_total"); !ok || v < 1 {
		t.Errorf("walcast_access_fail_closed_total: found=%v value=%v, want a sample >= 1", ok, v)
	}
}

// accMembers is the common stage of the tests where one membership of bob
// in project ends: alice (who stays a member) watches project, bob has two
// sockets subscribed to it, and bob's membership has just been checked
// through REST (so a cached positive answer is there to go stale).
type accMembers struct {
	t      *testing.T
	db     *pgtest.DB
	in     *instance
	alice  *client
	bobs   []*client
	others map[string]*client
}

func accStage(t *testing.T, setup ...string) *accMembers {
	t.Helper()
	db := newDB(t)
	for _, sql := range setup {
		db.Exec(t, sql)
	}
	in := start(t, db, accEnv(t, db))
	s := &accMembers{t: t, db: db, in: in, alice: dial(t, in, alice), bobs: []*client{dial(t, in, bob), dial(t, in, bob)}}
	s.alice.subscribe(project)
	for _, b := range s.bobs {
		b.subscribe(project)
	}
	// Precondition, and it fills the membership cache: a removal must
	// end a cached answer as surely as a fresh one.
	accREST(t, in, bob, "bob (still a member)", project, true)
	return s
}

// checkEnded checks everything "bob's access to project ended at R" means:
// each open socket is revoked at R, re-subscribing and subscribing on a
// new socket are forbidden, REST answers 403, and a writer's later
// messages reach alice but never bob.
func (s *accMembers) checkEnded(r string) {
	t := s.t
	t.Helper()
	for i, b := range s.bobs {
		accRevoked(t, b, 5*time.Second, project, fmt.Sprintf("bob's socket %d", i+1), r, events.ReasonMemberRemoved)
	}
	accDenied(t, s.bobs[0], project, "bob re-subscribing on an old socket", "forbidden")
	fresh := dial(t, s.in, bob)
	accDenied(t, fresh, project, "bob on a new socket", "forbidden")
	accREST(t, s.in, bob, "bob (removed)", project, false)

	content := accWrite(t, s.db, project)
	seen := accSeen(t, s.alice, project, content)
	if rp, mp := mustPos(t, r), accPos(t, seen); mp.Compare(rp) <= 0 {
		t.Fatalf("later message at %s is not after the removal at %s", seen.str("position"), r)
	}
	for i, b := range append(s.bobs, fresh) {
		accQuiet(t, b, project, fmt.Sprintf("bob's socket %d", i+1), 300*time.Millisecond)
	}
}

func mustPos(t *testing.T, s string) events.Position {
	t.Helper()
	p, err := events.ParsePosition(s)
	if err != nil {
		t.Fatalf("position %q: %v", s, err)
	}
	return p
}

// TestAccessEndsOnDelete: the plain way a membership ends.
func TestAccessEndsOnDelete(t *testing.T) {
	t.Parallel()
	s := accStage(t)
	s.db.Exec(t, `DELETE FROM project_members WHERE project_id = $1 AND user_id = $2`, project, bob)
	removed := accRemoved(t, s.alice, project, bob)
	s.checkEnded(removed.str("position"))
}

// TestAccessEndsOnUserIDUpdate: moving a membership row to another user is
// a removal for the old user and an addition for the new one, at the same
// change; the new user can subscribe at once.
func TestAccessEndsOnUserIDUpdate(t *testing.T) {
	t.Parallel()
	s := accStage(t, addCarol)
	s.db.Exec(t, `UPDATE project_members SET user_id = $1 WHERE project_id = $2 AND user_id = $3`, carol, project, bob)

	var removed, added frame
	for removed == nil || added == nil {
		f, _ := accUntil(t, s.alice, 5*time.Second, "member_removed (bob) and member_added (carol)", func(f frame) bool {
			return f.str("project_id") == project && (f.str("type") == "member_removed" || f.str("type") == "member_added")
		})
		switch {
		case f.str("type") == "member_removed" && f.data()["userId"] == bob:
			removed = f
		case f.str("type") == "member_added" && f.data()["userId"] == carol:
			added = f
		default:
			t.Fatalf("alice: unexpected membership event %v", f)
		}
	}
	if accPos(t, removed).LSN != accPos(t, added).LSN {
		t.Errorf("member_removed at %s and member_added at %s are not of the same change", removed.str("position"), added.str("position"))
	}

	c := dial(t, s.in, carol)
	c.subscribe(project)
	accREST(t, s.in, carol, "carol (new member)", project, true)
	s.checkEnded(removed.str("position"))
}

// TestAccessEndsOnProjectIDUpdate: moving a membership row to another
// project ends access to the old one and grants the new one.
func TestAccessEndsOnProjectIDUpdate(t *testing.T) {
	t.Parallel()
	s := accStage(t)
	s.db.Exec(t, `UPDATE project_members SET project_id = $1 WHERE project_id = $2 AND user_id = $3`, project2, project, bob)
	removed := accRemoved(t, s.alice, project, bob)
	s.checkEnded(removed.str("position"))

	// bob is a member of project2 now: a new socket of his follows it.
	b := dial(t, s.in, bob)
	b.subscribe(project2)
	content := accWrite(t, s.db, project2)
	accSeen(t, b, project2, content)
	accREST(t, s.in, bob, "bob (moved)", project2, true)
}

// TestAccessEndsOnUserCascade: deleting a user removes their memberships
// through ON DELETE CASCADE; that is a removal like any DELETE. bob sent no
// message (messages.sender_id does not cascade), so he can be deleted.
func TestAccessEndsOnUserCascade(t *testing.T) {
	t.Parallel()
	s := accStage(t)
	s.db.Exec(t, `DELETE FROM users WHERE id = $1`, bob)
	removed := accRemoved(t, s.alice, project, bob)
	s.checkEnded(removed.str("position"))
}

// TestAccessEndsOnTruncate: TRUNCATE carries no rows, so walcast cannot
// know whose access ended: every subscription of every project ends, and
// nobody may subscribe until a membership exists again.
func TestAccessEndsOnTruncate(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	// alice is in both projects so one socket holds two subscriptions.
	db.Exec(t, `INSERT INTO project_members (project_id, user_id) VALUES ($1, $2)`, project2, alice)
	in := start(t, db, accEnv(t, db))
	a, b, m := dial(t, in, alice), dial(t, in, bob), dial(t, in, mallory)
	a.subscribe(project)
	a.subscribe(project2)
	b.subscribe(project)
	m.subscribe(project2)
	accREST(t, in, bob, "bob (still a member)", project, true)
	accREST(t, in, alice, "alice (still a member)", project2, true)

	db.Exec(t, `TRUNCATE project_members`)
	// alice's two revocations may come in either order.
	got := map[string]bool{}
	for len(got) < 2 {
		f, _ := accUntil(t, a, 5*time.Second, "alice's subscription_revoked for both projects", func(f frame) bool {
			return f.str("type") == "subscription_revoked" && !got[f.str("project_id")]
		})
		got[f.str("project_id")] = true
	}
	if !got[project] || !got[project2] {
		t.Fatalf("alice's revocations: %v", got)
	}
	accRevoked(t, b, 5*time.Second, project, "bob", "", "")
	accRevoked(t, m, 5*time.Second, project2, "mallory", "", "")
	accDenied(t, b, project, "bob after TRUNCATE", "forbidden")
	accDenied(t, dial(t, in, alice), project2, "alice on a new socket after TRUNCATE", "forbidden")
	accDenied(t, m, project2, "mallory after TRUNCATE", "forbidden")
	accREST(t, in, bob, "bob (truncated)", project, false)
	accREST(t, in, alice, "alice (truncated)", project2, false)

	// alice is added back: she can follow project again, bob still gets
	// nothing of what is written there.
	db.Exec(t, `INSERT INTO project_members (project_id, user_id) VALUES ($1, $2)`, project, alice)
	a2 := dial(t, in, alice)
	accSubscribeEventually(t, a2, project, "alice", 5*time.Second)
	content := accWrite(t, db, project)
	accSeen(t, a2, project, content)
	accQuiet(t, b, project, "bob", 300*time.Millisecond)
	// alice's old socket lost both subscriptions and made none since.
	accQuiet(t, a, project, "alice's old socket", 100*time.Millisecond)
}

// accSub is one subscription a fail-closed test expects to be revoked.
type accSub struct {
	c            *client
	who, project string
}

// accFailClosed: alice and bob on project (bob with two sockets) and
// mallory on project2, so "every subscription of every project" is seen.
type accFailClosed struct {
	db   *pgtest.DB
	in   *instance
	a, m *client
	bobs []*client
	subs []accSub
}

func accFailClosedStage(t *testing.T) *accFailClosed {
	t.Helper()
	db := newDB(t)
	in := start(t, db, accEnv(t, db))
	s := &accFailClosed{db: db, in: in, a: dial(t, in, alice), m: dial(t, in, mallory), bobs: []*client{dial(t, in, bob), dial(t, in, bob)}}
	s.a.subscribe(project)
	s.m.subscribe(project2)
	for _, b := range s.bobs {
		b.subscribe(project)
	}
	s.subs = []accSub{{s.a, "alice", project}, {s.m, "mallory", project2}, {s.bobs[0], "bob's socket 1", project}, {s.bobs[1], "bob's socket 2", project}}
	accREST(t, in, bob, "bob (still a member)", project, true)
	return s
}

// revokedAll requires every subscription to be revoked by deadline.
func (s *accFailClosed) revokedAll(t *testing.T, deadline time.Time, reason string) {
	t.Helper()
	for _, x := range s.subs {
		accRevoked(t, x.c, max(time.Until(deadline), time.Millisecond), x.project, x.who, "", reason)
	}
}

// TestAccessFailsClosedWithoutReplicaIdentity: with REPLICA IDENTITY DEFAULT
// a DELETE's WAL carries only the primary key, so walcast cannot tell whose
// access ended. It must revoke every subscription rather than keep
// streaming to a removed user; members can subscribe again afterwards.
func TestAccessFailsClosedWithoutReplicaIdentity(t *testing.T) {
	t.Parallel()
	s := accFailClosedStage(t)
	s.db.Exec(t, `ALTER TABLE project_members REPLICA IDENTITY DEFAULT`)
	s.db.Exec(t, `DELETE FROM project_members WHERE project_id = $1 AND user_id = $2`, project, bob)
	s.revokedAll(t, time.Now().Add(5*time.Second), events.ReasonMemberRemoved)
	accFailClosedCounted(t, s.in)

	accSubscribeEventually(t, s.a, project, "alice", 5*time.Second)
	accSubscribeEventually(t, s.m, project2, "mallory", 5*time.Second)
	accDenied(t, s.bobs[0], project, "bob on an old socket", "forbidden")
	accDenied(t, dial(t, s.in, bob), project, "bob on a new socket", "forbidden")
	accREST(t, s.in, bob, "bob (removed)", project, false)

	content := accWrite(t, s.db, project)
	accSeen(t, s.a, project, content)
	for i, b := range s.bobs {
		accQuiet(t, b, project, fmt.Sprintf("bob's socket %d", i+1), 300*time.Millisecond)
	}
}

// TestAccessFailsClosedWhenTableLeavesPublication: once project_members is
// out of the publication, removals no longer reach walcast at all. walcast
// notices (publication check), revokes everything, refuses subscriptions
// and reports not ready until the table is back.
func TestAccessFailsClosedWhenTableLeavesPublication(t *testing.T) {
	t.Parallel()
	s := accFailClosedStage(t)
	s.db.Exec(t, `ALTER PUBLICATION `+pgtest.Publication+` DROP TABLE project_members`)
	s.db.Exec(t, `DELETE FROM project_members WHERE project_id = $1 AND user_id = $2`, project, bob)
	s.revokedAll(t, time.Now().Add(3*time.Second), "")

	var reason string
	waitFor(t, 3*time.Second, "/readyz 503 naming project_members", func() bool {
		status, body := doJSON(t, http.MethodGet, s.in.base+"/readyz", "", "", "")
		reason, _ = body["reason"].(string)
		return status == http.StatusServiceUnavailable && strings.Contains(reason, "project_members")
	})
	// Nobody can be checked while removals are invisible: not even alice.
	accDenied(t, s.a, project, "alice while project_members is out of the publication", "internal")
	accDenied(t, s.bobs[0], project, "bob while project_members is out of the publication", "")
	accFailClosedCounted(t, s.in)

	s.db.Exec(t, `ALTER PUBLICATION `+pgtest.Publication+` ADD TABLE project_members`)
	accSubscribeEventually(t, s.a, project, "alice", 5*time.Second)
	accSubscribeEventually(t, s.m, project2, "mallory", 5*time.Second)
	waitFor(t, 5*time.Second, "/readyz 200 once the table is back", func() bool {
		status, _ := doJSON(t, http.MethodGet, s.in.base+"/readyz", "", "", "")
		return status == http.StatusOK
	})
	accDenied(t, s.bobs[1], project, "bob after the table is back", "forbidden")
	accDenied(t, dial(t, s.in, bob), project, "bob on a new socket", "forbidden")
	accREST(t, s.in, bob, "bob (removed)", project, false)

	content := accWrite(t, s.db, project)
	accSeen(t, s.a, project, content)
	for i, b := range s.bobs {
		accQuiet(t, b, project, fmt.Sprintf("bob's socket %d", i+1), 300*time.Millisecond)
	}
}

// TestAccessFailsClosedWhenUserColumnRenamed: after the membership column
// is renamed, a DELETE's row no longer has user_id: walcast must not guess.
// The row still names its project, so every subscription of that project
// is revoked (the affected project, not the others: mallory's own project
// stays live), and bob never gets a subscription again.
func TestAccessFailsClosedWhenUserColumnRenamed(t *testing.T) {
	t.Parallel()
	s := accFailClosedStage(t)
	s.db.Exec(t, `ALTER TABLE project_members RENAME COLUMN user_id TO member_id`)
	s.db.Exec(t, `DELETE FROM project_members WHERE project_id = $1 AND member_id = $2`, project, bob)
	for _, x := range s.subs {
		if x.project == project {
			accRevoked(t, x.c, 5*time.Second, x.project, x.who, "", events.ReasonMemberRemoved)
		}
	}
	accFailClosedCounted(t, s.in)
	// mallory's project was not touched: her subscription still delivers.
	accWrite(t, s.db, project2)
	if f := s.m.read(5 * time.Second); f.str("project_id") != project2 || f.str("type") != "cache_invalidate" {
		t.Fatalf("mallory's project after the fail-closed revocation: %v", f)
	}

	accDenied(t, s.bobs[0], project, "bob on an old socket", "")
	fresh := dial(t, s.in, bob)
	accDenied(t, fresh, project, "bob on a new socket", "")
	// The membership query may not work any more, so a 5xx is a refusal
	// too; any 2xx is access.
	url := s.in.base + "/api/v1/projects/" + project + "/messages"
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		status, err := accHTTP(method, url, token(t, bob, time.Hour), `{"content":"bob after removal"}`)
		if err != nil || status < 400 || status == http.StatusNotFound {
			t.Errorf("bob %s after removal: status %d (%v), want 403 or a 5xx", method, status, err)
		}
	}

	// A later message; alice may or may not be able to resubscribe while
	// the schema is broken, so walcast's own newest position tells when
	// it has been published.
	before := accStatusPosition(t, s.in)
	content := accWrite(t, s.db, project)
	if !eventually.Poll(5*time.Second, func() bool { return accStatusPosition(t, s.in) > before }) {
		t.Logf("walcast did not publish %q within 5s; checking bob's sockets anyway", content)
	}
	for i, b := range append(s.bobs, fresh) {
		accQuiet(t, b, project, fmt.Sprintf("bob's socket %d", i+1), 300*time.Millisecond)
	}
	accDenied(t, fresh, project, "bob on a new socket, later", "")
}

// accStatusPosition is walcast's newest published position.
func accStatusPosition(t *testing.T, in *instance) string {
	t.Helper()
	_, body := doJSON(t, http.MethodGet, in.base+"/api/v1/status", "", "", "")
	p, _ := body["position"].(string)
	return p
}

// TestAccessRaceWindowWithUnansweredSyncStandby makes the race window
// deterministic. PostgreSQL streams a commit to logical walsenders once
// it is flushed locally, and with a synchronous standby that never answers
// the committing session waits there, still invisible to other sessions.
// So walcast has seen bob's removal while every other session still sees
// bob's row: nothing in walcast may trust that row any more.
func TestAccessRaceWindowWithUnansweredSyncStandby(t *testing.T) {
	t.Parallel()
	cluster := newClusterDB(t)
	ctx := context.Background()

	env := clusterEnv(t, cluster)
	env["WALCAST_CONNECT_RATE"] = "10000"
	in := start(t, nil, env)

	// Every write of the test but the DELETE commits locally, or it
	// would wait for the standby too.
	standby := newSilentStandby(t, cluster)
	local, localExec := standby.local, standby.exec
	bobVisible := func() bool {
		t.Helper()
		var n int
		if err := local.QueryRow(ctx, `SELECT count(*) FROM project_members WHERE project_id = $1 AND user_id = $2`, project, bob).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}
	writeLocal := func(content string) {
		t.Helper()
		localExec(`INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, $3)`, project, alice, content)
	}

	a, b1 := dial(t, in, alice), dial(t, in, bob)
	a.subscribe(project)
	b1.subscribe(project)
	accREST(t, in, bob, "bob (still a member)", project, true)

	// The DELETE's goroutine closes delFinished after setting delErr.
	delFinished := make(chan struct{})
	var delErr error
	var deleting atomic.Bool
	// Runs before walcast stops and the cluster goes: nothing stays blocked.
	t.Cleanup(func() {
		standby.release()
		if !deleting.Load() {
			return
		}
		select {
		case <-delFinished:
		case <-time.After(10 * time.Second):
			t.Errorf("the DELETE still blocks after release")
		}
	})

	standby.hold()

	delConn, err := pgx.Connect(ctx, cluster.URL)
	if err != nil {
		t.Fatal(err)
	}
	delPID := delConn.PgConn().PID()
	deleting.Store(true)
	go func() {
		_, err := delConn.Exec(context.Background(), `DELETE FROM project_members WHERE project_id = $1 AND user_id = $2`, project, bob)
		delConn.Close(context.Background())
		delErr = err
		close(delFinished)
	}()
	waitFor(t, 5*time.Second, "the DELETE held by the synchronous standby", func() bool {
		select {
		case <-delFinished:
			t.Fatalf("the DELETE returned (%v) while the standby never answered", delErr)
		default:
		}
		return standby.waiting(delPID)
	})

	removed := accRemoved(t, a, project, bob)
	r := removed.str("position")
	rp := mustPos(t, r)
	accRevoked(t, b1, 5*time.Second, project, "bob's open socket", r, events.ReasonMemberRemoved)
	if !bobVisible() {
		t.Fatal("bob's row is no longer visible: the window this test needs did not open")
	}
	select {
	case <-delFinished:
		t.Fatalf("the DELETE returned (%v) while the standby never answered", delErr)
	default:
	}

	// In the window. walcast may answer a subscribe or a REST call at once
	// or only once the removal is visible, so answers are collected in the
	// background and judged after release; none may grant access.
	b2 := dial(t, in, bob)
	b2.send(map[string]string{"action": "subscribe", "project_id": project})
	b1.send(map[string]string{"action": "subscribe", "project_id": project})
	type restResult struct {
		method string
		status int
		err    error
	}
	rest := make(chan restResult, 2)
	url := in.base + "/api/v1/projects/" + project + "/messages"
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		go func() {
			status, err := accHTTP(method, url, token(t, bob, time.Hour), `{"content":"bob in the window"}`)
			rest <- restResult{method, status, err}
		}()
	}
	var windowFrames []frame
	collect := func(c *client, d time.Duration) []frame {
		var out []frame
		deadline := time.Now().Add(d)
		for {
			f, err := c.tryRead(max(time.Until(deadline), time.Millisecond))
			if err != nil {
				return out
			}
			out = append(out, f)
		}
	}
	// alice writes in the window; once her socket has the messages, bob's
	// sockets would have them too.
	var inWindow []string
	for i := range 3 {
		c := fmt.Sprintf("in the window %d", i)
		writeLocal(c)
		inWindow = append(inWindow, c)
	}
	for _, c := range inWindow {
		f := accSeen(t, a, project, c)
		if accPos(t, f).Compare(rp) <= 0 {
			t.Fatalf("message %q at %s is not after the removal at %s", c, f.str("position"), r)
		}
	}
	windowFrames = append(windowFrames, collect(b1, 500*time.Millisecond)...)
	windowFrames = append(windowFrames, collect(b2, 100*time.Millisecond)...)
	if !bobVisible() {
		t.Fatal("bob's row became visible before release: the window closed early")
	}
	accNothingOf(t, "bob in the window (removal streamed, not yet visible)", windowFrames, project)

	standby.release()
	select {
	case <-delFinished:
		if delErr != nil {
			t.Fatalf("DELETE: %v", delErr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the DELETE did not return after release")
	}
	if bobVisible() {
		t.Fatal("bob's row is still visible after the DELETE returned")
	}
	for range 2 {
		select {
		case res := <-rest:
			if res.err != nil || res.status != http.StatusForbidden {
				t.Errorf("bob's REST %s during the window: status %d (%v), want 403", res.method, res.status, res.err)
			}
		case <-time.After(15 * time.Second):
			t.Error("bob's REST call from the window never answered")
		}
	}
	// The answers to the window's subscribes, however late, deny.
	late := append(collect(b1, 300*time.Millisecond), collect(b2, 300*time.Millisecond)...)
	accNothingOf(t, "bob after release, answering the window's subscribes", late, project)
	answered := 0
	for _, f := range append(windowFrames, late...) {
		if accIsAnswer(project)(f) {
			answered++
		}
	}
	if answered < 2 {
		t.Errorf("bob's two subscribes from the window got %d answers (frames: %v %v)", answered, windowFrames, late)
	}

	// After: the removal is visible; the guarantee holds as for any DELETE.
	b3 := dial(t, in, bob)
	accDenied(t, b3, project, "bob on a new socket after the DELETE returned", "forbidden")
	accREST(t, in, bob, "bob (removed)", project, false)
	writeLocal("after the window")
	accSeen(t, a, project, "after the window")
	for i, c := range []*client{b1, b2, b3} {
		accQuiet(t, c, project, fmt.Sprintf("bob's socket %d", i+1), 300*time.Millisecond)
	}
}

// accSock is one socket of the stress test, used off the test goroutine:
// it keeps every frame it read.
type accSock struct {
	c      *client
	frames []frame
	// answers counts subscribe answers read; afterFrom is the index of the
	// first answer to a subscribe sent after the DELETE returned (-1: none).
	answers   int
	afterFrom int
}

func accStressDial(t *testing.T, in *instance, user string) (*accSock, error) {
	tok, err := auth.Issue([]byte(testSecret), "HS256", user, time.Hour, time.Now())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, strings.Replace(in.base, "http", "ws", 1)+"/ws?token="+tok, nil)
	if err != nil {
		return nil, err
	}
	return &accSock{c: newClient(t, conn), afterFrom: -1}, nil
}

func (s *accSock) subscribe(projectID string, after bool) error {
	if after && s.afterFrom < 0 {
		// Every earlier subscribe on this socket was answered first.
		s.afterFrom = s.answers
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.c.conn.Write(ctx, websocket.MessageText, []byte(`{"action":"subscribe","project_id":"`+projectID+`"}`))
}

// read reads one frame within d, counting answers.
func (s *accSock) read(projectID string, d time.Duration) bool {
	f, err := s.c.tryRead(d)
	if err != nil {
		return false
	}
	s.frames = append(s.frames, f)
	if accIsAnswer(projectID)(f) {
		s.answers++
	}
	return true
}

// awaitAnswers reads until n answers arrived or the deadline passed.
func (s *accSock) awaitAnswers(projectID string, n int, deadline time.Time) bool {
	for s.answers < n {
		if !s.read(projectID, max(time.Until(deadline), time.Millisecond)) {
			return false
		}
	}
	return true
}

// TestAccessRaceStress races each user's removal against subscribes from
// that user under a steady stream of messages: subscribes just before,
// during and just after the DELETE, on old and new sockets. A leak is any
// frame of the project after the user's removal position on any of their
// sockets, or a subscribed answer to a subscribe sent after the DELETE
// returned. Bounded to about 10 s of racing.
func TestAccessRaceStress(t *testing.T) {
	t.Parallel()
	const (
		users   = 200
		workers = 4
		budget  = 9 * time.Second
	)
	db := newDB(t)
	ids := make([]string, users)
	var sb strings.Builder
	sb.WriteString(`INSERT INTO users (id, email, display_name) VALUES `)
	for i := range ids {
		ids[i] = fmt.Sprintf("5e000000-0000-4000-8000-%012x", i+1)
		if i > 0 {
			sb.WriteString(",")
		}
		fmt.Fprintf(&sb, "('%s', 'stress%d@example.com', 'Stress %d')", ids[i], i, i)
	}
	db.Exec(t, sb.String())
	db.Exec(t, `INSERT INTO project_members (project_id, user_id) SELECT $1, id FROM users WHERE email LIKE 'stress%'`, project)
	env := accEnv(t, db)
	env["WALCAST_LOG_LEVEL"] = "info" // debug logs every subscribe: noise at this rate
	in := start(t, db, env)

	// alice stays a member and observes: the removal positions, and how
	// many messages walcast has fanned out (the progress clock).
	obs := dial(t, in, alice)
	obs.subscribe(project)
	var (
		mu        sync.Mutex
		removedAt = map[string]events.Position{}
		messages  int64 // message_created seen by alice
	)
	obsDone := make(chan struct{})
	go func() {
		defer close(obsDone)
		for f := range obs.frames {
			switch f.str("type") {
			case "member_removed":
				if p, err := events.ParsePosition(f.str("position")); err == nil {
					u, _ := f.data()["userId"].(string)
					mu.Lock()
					removedAt[u] = p
					mu.Unlock()
				}
			case "message_created":
				mu.Lock()
				messages++
				mu.Unlock()
			}
		}
	}()
	seenMessages := func() int64 { mu.Lock(); defer mu.Unlock(); return messages }

	ctx, stopWriter := context.WithCancel(context.Background())
	writerDone := make(chan struct{})
	go func() {
		// The writer: a message every 2 ms, so every race has traffic.
		defer close(writerDone)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			_, _ = db.Pool.Exec(ctx, `INSERT INTO messages (project_id, sender_id, content) VALUES ($1, $2, $3)`, project, alice, fmt.Sprintf("w%d", n))
		}
	}()
	t.Cleanup(func() { stopWriter(); <-writerDone })

	var (
		rmu       sync.Mutex
		leaks     = map[string][]string{} // by user
		leakUsers []string
		problems  []string
		done      int
	)
	report := func(leak bool, format string, args ...any) {
		rmu.Lock()
		defer rmu.Unlock()
		msg := fmt.Sprintf(format, args...)
		if !leak {
			problems = append(problems, msg)
			return
		}
		u, _, _ := strings.Cut(msg, " ")
		if leaks[u] == nil {
			leakUsers = append(leakUsers, u)
		}
		leaks[u] = append(leaks[u], msg)
	}

	// Every wait of a user is capped by hardStop, so the test ends on time
	// even when walcast stalls.
	var hardStop time.Time
	upTo := func(d time.Duration) time.Duration { return max(min(d, time.Until(hardStop)), time.Millisecond) }

	one := func(u string) {
		var socks []*accSock
		defer func() {
			for _, s := range socks {
				_ = s.c.conn.CloseNow()
			}
		}()
		open := func() *accSock {
			s, err := accStressDial(t, in, u)
			if err != nil {
				report(false, "%s: dial: %v", u, err)
				return nil
			}
			socks = append(socks, s)
			return s
		}
		s1, s2, s3 := open(), open(), open()
		if s1 == nil || s2 == nil || s3 == nil {
			return
		}
		// Before: s1 is a live subscription the removal must end.
		if err := s1.subscribe(project, false); err != nil || !s1.awaitAnswers(project, 1, time.Now().Add(upTo(5*time.Second))) {
			report(false, "%s: no answer to the subscribe before removal (%v)", u, err)
			return
		}
		// Just before and during the DELETE.
		_ = s2.subscribe(project, false)
		delErr := make(chan error, 1)
		go func() {
			_, err := db.Pool.Exec(context.Background(), `DELETE FROM project_members WHERE project_id = $1 AND user_id = $2`, project, u)
			delErr <- err
		}()
		_ = s3.subscribe(project, false)
		if err := <-delErr; err != nil {
			report(false, "%s: DELETE: %v", u, err)
			return
		}
		// After the DELETE returned: on the old socket and a new one.
		_ = s1.subscribe(project, true)
		s4 := open()
		if s4 == nil {
			return
		}
		_ = s4.subscribe(project, true)

		var r events.Position
		if !eventually.Poll(upTo(5*time.Second), func() bool {
			mu.Lock()
			defer mu.Unlock()
			p, ok := removedAt[u]
			r = p
			return ok
		}) {
			report(false, "%s: alice never saw the member_removed", u)
			return
		}
		deadline := time.Now().Add(upTo(5 * time.Second))
		for _, w := range []struct {
			s *accSock
			n int
		}{{s1, 2}, {s2, 1}, {s3, 1}, {s4, 1}} {
			if !w.s.awaitAnswers(project, w.n, deadline) {
				report(false, "%s: %d of %d subscribe answers within 5s", u, w.s.answers, w.n)
			}
		}
		// Progress: three more messages fanned out after every answer,
		// so a subscription left live would have received them.
		n0 := seenMessages()
		if !eventually.Poll(upTo(5*time.Second), func() bool { return seenMessages() >= n0+3 }) {
			report(false, "%s: the writer's messages stopped reaching alice", u)
		}
		// Then whatever else reached the user's sockets in the next 100 ms.
		grace := time.Now().Add(100 * time.Millisecond)
		for _, s := range socks {
			for s.read(project, max(time.Until(grace), time.Millisecond)) {
			}
		}

		for si, s := range socks {
			answer := 0
			for _, f := range s.frames {
				isAns := accIsAnswer(project)(f)
				if isAns {
					answer++
				}
				if isAns && f.str("type") == "subscribed" && s.afterFrom >= 0 && answer-1 >= s.afterFrom {
					report(true, "%s socket %d: subscribed to a subscribe sent after the DELETE returned: %v (removal at %s)", u, si+1, f, r)
					continue
				}
				if f.str("project_id") != project || f.str("position") == "" {
					continue
				}
				p, err := events.ParsePosition(f.str("position"))
				if err != nil {
					report(false, "%s: bad position in %v", u, f)
					continue
				}
				switch typ := f.str("type"); {
				case typ == "subscription_revoked":
					if p != r {
						report(p.Compare(r) > 0, "%s socket %d: revoked at %s, removal at %s", u, si+1, f.str("position"), r)
					}
				case typ == "subscribed" && p.Compare(r) >= 0:
					report(true, "%s socket %d: subscription live from %s, at or after the removal at %s", u, si+1, f.str("position"), r)
				case p.Compare(r) > 0:
					report(true, "%s socket %d: %s at %s, after the removal at %s", u, si+1, typ, f.str("position"), r)
				}
			}
		}
		rmu.Lock()
		done++
		rmu.Unlock()
	}

	queue := make(chan string)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range queue {
				one(u)
			}
		}()
	}
	stopAt := time.Now().Add(budget)
	hardStop = stopAt.Add(3 * time.Second)
	for _, u := range ids {
		rmu.Lock()
		failing := len(problems) > 10
		rmu.Unlock()
		if time.Now().After(stopAt) || failing {
			break
		}
		queue <- u
	}
	close(queue)
	wg.Wait()
	stopWriter()
	<-writerDone

	rmu.Lock()
	defer rmu.Unlock()
	t.Logf("%d of %d users raced in %s, %d messages fanned out to alice", done, users, time.Since(stopAt.Add(-budget)).Round(time.Millisecond), seenMessages())
	for i, p := range problems {
		if i == 10 {
			t.Errorf("… and %d more problems", len(problems)-10)
			break
		}
		t.Errorf("problem: %s", p)
	}
	total := 0
	for i, u := range leakUsers {
		total += len(leaks[u])
		if i < 10 {
			t.Errorf("%d leak(s) for one user, first: %s", len(leaks[u]), leaks[u][0])
		}
	}
	if total > 0 {
		t.Errorf("%d leaks for %d of %d users raced", total, len(leakUsers), done)
	}
	if done == 0 {
		t.Error("no user was raced within the budget")
	}
	_ = obs.conn.CloseNow()
	<-obsDone
}
