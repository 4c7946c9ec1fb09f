package auth

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/walcast/walcast/internal/metrics"
	"github.com/walcast/walcast/internal/pgtest"
)

var referenceQuery = MembershipQuery{Table: "project_members", ProjectIDColumn: "project_id", UserIDColumn: "user_id"}

// seedMemberships fills project_members with n rows over 1000 projects
// (foreign keys off for the bulk load: the rows need no users).
func seedMemberships(t testing.TB, db *pgtest.DB, n int) (project, user string) {
	t.Helper()
	db.Exec(t, `BEGIN;
SET LOCAL session_replication_role = replica;
INSERT INTO project_members (project_id, user_id)
SELECT md5('p' || (i % 1000))::uuid, md5('u' || i)::uuid FROM generate_series(1, `+itoa(n)+`) i;
COMMIT;
ANALYZE project_members;`)
	var p, u string
	if err := db.Pool.QueryRow(context.Background(), `SELECT md5('p' || 500)::uuid::text, md5('u' || 500)::uuid::text`).Scan(&p, &u); err != nil {
		t.Fatal(err)
	}
	return p, u
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// TestMembershipLookupUsesTheIndex: the lookup is one probe of the
// (project_id, user_id) unique index; comparing the columns as text (what
// walcast did before) reads the whole table. The plan is the same at a
// million rows (BenchmarkMembershipLookup loads that many); 100,000 keep
// the suite fast.
func TestMembershipLookupUsesTheIndex(t *testing.T) {
	db := pgtest.New(t)
	project, user := seedMemberships(t, db, 100_000)
	var plan []byte
	if err := db.Pool.QueryRow(context.Background(), "EXPLAIN (FORMAT JSON) "+MembershipSQL(referenceQuery), project, user).Scan(&plan); err != nil {
		t.Fatal(err)
	}
	if s := string(plan); !strings.Contains(s, "Index") || strings.Contains(s, "Seq Scan") {
		t.Fatalf("plan does not use the index:\n%s", s)
	}

	ms := NewMemberships(db.Pool, MembershipConfig{Query: referenceQuery, TTL: time.Minute, MaxConcurrent: 2}, metrics.New(prometheus.NewRegistry()))
	for _, tc := range []struct {
		project, user string
		member        bool
	}{{project, user, true}, {project, project, false}, {user, user, false}} {
		p, err := ms.Lookup(context.Background(), tc.project, tc.user, true)
		if err != nil || p.Member != tc.member || p.Snapshot == nil || !p.Fresh || p.Snapshot.Xmax == 0 {
			t.Fatalf("lookup %+v: %+v %v", tc, p, err)
		}
	}
	// A cached answer says so, and keeps the snapshot it was read in.
	p, err := ms.Lookup(context.Background(), project, user, false)
	if err != nil || p.Fresh || !p.Member || p.Snapshot == nil {
		t.Fatalf("cached: %+v %v", p, err)
	}
}

// BenchmarkMembershipLookup measures one fresh lookup at a million
// memberships (compare: the text comparison took ~150 ms a check).
func BenchmarkMembershipLookup(b *testing.B) {
	db := pgtest.New(b)
	project, user := seedMemberships(b, db, 1_000_000)
	ms := NewMemberships(db.Pool, MembershipConfig{Query: referenceQuery, MaxConcurrent: 4}, metrics.New(prometheus.NewRegistry()))
	ctx := context.Background()
	for _, bc := range []struct {
		name   string
		user   string
		member bool
	}{{"member", user, true}, {"not_member", project, false}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if p, err := ms.Lookup(ctx, project, bc.user, true); err != nil || p.Member != bc.member {
					b.Fatal(p, err)
				}
			}
		})
	}
}

// TestFreshAnswerReplacesTheCachedOne: once a fresh lookup says "not a
// member", a cached "member" is gone, so it cannot be used after the hub
// has forgotten the removal it predates.
func TestFreshAnswerReplacesTheCachedOne(t *testing.T) {
	db := pgtest.New(t)
	project, user := seedMemberships(t, db, 1000)
	ms := NewMemberships(db.Pool, MembershipConfig{Query: referenceQuery, TTL: time.Hour, MaxConcurrent: 2}, metrics.New(prometheus.NewRegistry()))
	ctx := context.Background()
	if p, err := ms.Lookup(ctx, project, user, true); err != nil || !p.Member {
		t.Fatalf("member: %+v %v", p, err)
	}
	db.Exec(t, `DELETE FROM project_members WHERE project_id = $1 AND user_id = $2`, project, user)
	if p, _ := ms.Lookup(ctx, project, user, false); !p.Member || p.Fresh {
		t.Fatalf("want the cached answer first: %+v", p)
	}
	if p, err := ms.Lookup(ctx, project, user, true); err != nil || p.Member {
		t.Fatalf("fresh: %+v %v", p, err)
	}
	if p, err := ms.Lookup(ctx, project, user, false); err != nil || p.Member || !p.Fresh {
		t.Fatalf("the stale member answer is still cached: %+v %v", p, err)
	}
}
