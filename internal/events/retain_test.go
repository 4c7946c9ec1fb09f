package events

import (
	"fmt"
	"strings"
	"testing"
)

func retained(m *Mapper, changes []Change) *Txn {
	txn := &Txn{CommitLSN: 7, CommitTime: commit, Xid: 9}
	for _, ch := range changes {
		ch.Schema = "public"
		m.Retain(txn, ch)
	}
	return txn
}

func msg(project string, i int) Change {
	return Change{Table: "messages", Action: Insert, New: cols("id", fmt.Sprint(i), "project_id", project, "content", strings.Repeat("x", 100))}
}

// TestRetainSmallTransactionUnchanged: below the bound Retain keeps every
// change and Map's output is what it was.
func TestRetainSmallTransactionUnchanged(t *testing.T) {
	m, err := NewMapper(Options{Tables: DefaultTables(), BulkThreshold: 3, MaxTxnRows: 100})
	if err != nil {
		t.Fatal(err)
	}
	var changes []Change
	for i := range 5 {
		changes = append(changes, msg(pid, i))
	}
	changes = append(changes, msg(pid2, 9),
		Change{Table: "project_members", Action: Delete, Old: cols("id", "x", "project_id", pid, "user_id", uid)})
	txn := retained(m, changes)
	if len(txn.Changes) != len(changes) {
		t.Fatalf("kept %d of %d", len(txn.Changes), len(changes))
	}
	whole := &Txn{CommitLSN: 7, CommitTime: commit, Xid: 9, Changes: txn.Changes}
	a, _ := m.Map(txn, nil)
	b, _ := m.Map(whole, nil)
	if fmt.Sprint(describe(a)) != fmt.Sprint(describe(b)) {
		t.Fatalf("%v vs %v", describe(a), describe(b))
	}
}

// TestRetainBoundsALargeTransaction: a transaction far past the bound
// keeps a marker per (project, table), maps to one BULK per project and
// resource, and revokes at the membership change's own position.
func TestRetainBoundsALargeTransaction(t *testing.T) {
	const bound = 50
	m, err := NewMapper(Options{Tables: DefaultTables(), BulkThreshold: 500, MaxTxnRows: bound})
	if err != nil {
		t.Fatal(err)
	}
	txn := &Txn{CommitLSN: 7, CommitTime: commit, Xid: 9}
	most := 0
	for i := range 100_000 {
		p := pid
		if i%2 == 1 {
			p = pid2
		}
		m.Retain(txn, withSchema(msg(p, i)))
		if i == 30 {
			m.Retain(txn, withSchema(Change{Table: "project_members", Action: Delete, Old: cols("id", "x", "project_id", pid, "user_id", uid)}))
		}
		if i == 40_000 {
			m.Retain(txn, withSchema(Change{Table: "tasks", Action: Update, Old: cols("id", "t", "project_id", pid), New: cols("id", "t", "project_id", pid2)}))
		}
		most = max(most, len(txn.Changes))
	}
	if most > bound+2 {
		t.Fatalf("kept up to %d changes, bound %d", most, bound)
	}
	evs, problems := m.Map(txn, nil)
	if len(problems) != 0 {
		t.Fatal(problems)
	}
	want := "cache_invalidate:a: cache_invalidate:b: cache_invalidate:a:1/member_removed member_removed:a:1/member_removed cache_invalidate:a: cache_invalidate:b:"
	if got := strings.Join(describe(evs), " "); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	for _, i := range []int{0, 1, 4, 5} {
		if d := decode(t, evs[i]); d["action"] != "BULK" {
			t.Fatalf("event %d: %s", i, evs[i].Payload)
		}
	}
}

// TestRetainBoundsAccessChanges: membership changes are never coalesced,
// so past the bound one conservative revocation of every subscription
// stands for the rest, and past the bound of markers one resync of every
// project stands for the rest.
func TestRetainBoundsAccessChanges(t *testing.T) {
	m, err := NewMapper(Options{Tables: DefaultTables(), BulkThreshold: 500, MaxTxnRows: 10})
	if err != nil {
		t.Fatal(err)
	}
	txn := &Txn{CommitLSN: 7, CommitTime: commit}
	for i := range 1000 {
		m.Retain(txn, withSchema(Change{Table: "project_members", Action: Delete,
			Old: cols("id", fmt.Sprint(i), "project_id", pid, "user_id", fmt.Sprintf("%08d-0000-4000-8000-000000000000", i))}))
	}
	if len(txn.Changes) != 11 {
		t.Fatalf("kept %d", len(txn.Changes))
	}
	evs, problems := m.Map(txn, nil)
	if last := evs[len(evs)-1]; len(problems) != 1 || !last.AllProjects || last.Revoke == nil || !last.Revoke.Conservative {
		t.Fatalf("last %+v, problems %v", last, problems)
	}

	txn = &Txn{CommitLSN: 7, CommitTime: commit}
	for i := range 1000 {
		m.Retain(txn, withSchema(msg(fmt.Sprintf("%08d-aaaa-4aaa-8aaa-aaaaaaaaaaaa", i), i)))
	}
	if len(txn.Changes) > 11 {
		t.Fatalf("kept %d markers", len(txn.Changes))
	}
	evs, _ = m.Map(txn, nil)
	if last := evs[len(evs)-1]; !last.AllProjects || last.Type != TypeResyncRequired {
		t.Fatalf("last %+v", last)
	}
}

func withSchema(ch Change) Change { ch.Schema = "public"; return ch }

// TestRetainCutAtATruncateStillRevokes: the bound is first crossed by a
// change of a table that grants no access (a TRUNCATE), and a membership
// ends later in the same transaction. The stand-in for everything past the
// bound revokes every subscription: a resync alone left the removed member
// subscribed.
func TestRetainCutAtATruncateStillRevokes(t *testing.T) {
	m, err := NewMapper(Options{Tables: DefaultTables(), BulkThreshold: 500, MaxTxnRows: 10, MaxTxnBytes: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	txn := &Txn{CommitLSN: 7, CommitTime: commit}
	m.Retain(txn, withSchema(Change{Table: "messages", Action: Insert, New: cols("id", "m", "project_id", pid, "content", strings.Repeat("x", 4<<10))}))
	m.Retain(txn, withSchema(Change{Table: "sprints", Action: Truncate}))
	m.Retain(txn, withSchema(Change{Table: "project_members", Action: Delete, Old: cols("id", "x", "project_id", pid, "user_id", uid)}))
	evs, _ := m.Map(txn, nil)
	revoked := false
	for _, ev := range evs {
		if ev.Revoke != nil && ev.AllProjects && ev.Revoke.Conservative && ev.Revoke.UserID == "" {
			revoked = true
		}
	}
	if !revoked {
		t.Fatalf("no revocation of every subscription: %v", describe(evs))
	}
}

// TestRetainBoundsBytes: wide rows are bounded by bytes, not only rows.
func TestRetainBoundsBytes(t *testing.T) {
	m, err := NewMapper(Options{Tables: DefaultTables(), BulkThreshold: 500, MaxTxnRows: 10_000, MaxTxnBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	txn := &Txn{CommitLSN: 7, CommitTime: commit}
	wide := strings.Repeat("x", 50<<10)
	most := 0
	for i := range 200 { // 10 MB of 50 KB rows over two projects
		p := pid
		if i%2 == 1 {
			p = pid2
		}
		m.Retain(txn, withSchema(Change{Table: "tasks", Action: Insert, New: cols("id", fmt.Sprint(i), "project_id", p, "description", wide)}))
		kept := 0
		for _, ch := range txn.Changes {
			kept += changeBytes(&ch)
		}
		most = max(most, kept)
	}
	if most > 1<<20+64<<10 {
		t.Fatalf("kept up to %d bytes, bound 1 MiB", most)
	}
	evs, _ := m.Map(txn, nil)
	if got := strings.Join(describe(evs), " "); got != "cache_invalidate:a: cache_invalidate:b:" {
		t.Fatalf("got %s", got)
	}
}
