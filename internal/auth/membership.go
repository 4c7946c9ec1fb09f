package auth

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/walcast/walcast/internal/access"
	"github.com/walcast/walcast/internal/metrics"
)

// MembershipQuery describes where membership lives.
type MembershipQuery struct {
	// Table is the membership table, schema-qualified or not.
	Table           string
	ProjectIDColumn string
	UserIDColumn    string
}

// MembershipConfig configures Memberships.
type MembershipConfig struct {
	Query MembershipQuery
	// TTL bounds how long a "member" answer is reused, and it is reused
	// only while no access change the stream brought is newer than it (the
	// hub judges; package access). "Not a member" is never cached: a user
	// added a moment ago may subscribe at once (ws limits refusals).
	TTL time.Duration
	// MaxConcurrent caps lookups running at once, so that a flood of
	// subscribes cannot take every pooled connection.
	MaxConcurrent int
}

// Memberships answers "is user U a member of project P" from the database,
// with the MVCC snapshot the answer was read in, and caches the answers.
type Memberships struct {
	pool    *pgxpool.Pool
	sql     string
	cfg     MembershipConfig
	metrics *metrics.Metrics
	now     func() time.Time
	slots   chan struct{}

	mu    sync.Mutex
	cache map[[2]string]cached // (project, user)
}

type cached struct {
	proof  access.Proof
	expiry time.Time
}

// MembershipSQL is the lookup: the columns are compared with parameters of
// their own type (so the table's unique index on the pair is used), and
// pg_current_snapshot() in the same statement returns the snapshot the
// EXISTS was evaluated in.
func MembershipSQL(q MembershipQuery) string {
	return "SELECT " + MemberCondition(q, 1, 2) + ", pg_current_snapshot()::text"
}

// MemberCondition is the SQL condition "user $u is a member of project
// $p", for statements that must act only while the membership holds.
func MemberCondition(q MembershipQuery, p, u int) string {
	ident := func(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
	table := q.Table
	if schema, name, ok := strings.Cut(table, "."); ok {
		table = ident(schema) + "." + ident(name)
	} else {
		table = ident(table)
	}
	return fmt.Sprintf("EXISTS (SELECT 1 FROM %s WHERE %s = $%d AND %s = $%d)", table, ident(q.ProjectIDColumn), p, ident(q.UserIDColumn), u)
}

// NewMemberships returns a cached lookup over cfg.Query.
func NewMemberships(pool *pgxpool.Pool, cfg MembershipConfig, m *metrics.Metrics) *Memberships {
	return &Memberships{pool: pool, sql: MembershipSQL(cfg.Query), cfg: cfg, metrics: m, now: time.Now,
		slots: make(chan struct{}, max(1, cfg.MaxConcurrent)), cache: make(map[[2]string]cached)}
}

// Lookup returns whether userID is a member of projectID and the proof of
// it. Unless fresh, a cached answer may be returned (Proof.Fresh false).
func (ms *Memberships) Lookup(ctx context.Context, projectID, userID string, fresh bool) (access.Proof, error) {
	key := [2]string{projectID, userID}
	if !fresh {
		ms.mu.Lock()
		c, ok := ms.cache[key]
		ms.mu.Unlock()
		if ok && ms.now().Before(c.expiry) {
			ms.metrics.MembershipLookups.WithLabelValues("hit").Inc()
			return c.proof, nil
		}
	}
	ms.metrics.MembershipLookups.WithLabelValues("miss").Inc()
	proof, err := ms.query(ctx, projectID, userID)
	if err != nil {
		return access.Proof{}, err
	}
	if ms.cfg.TTL <= 0 {
		return proof, nil
	}
	// The newest answer replaces what was cached: a "not a member" (or a
	// member answer the hub found stale and asked again for) must not
	// leave an older "member" behind.
	ms.mu.Lock()
	if proof.Member {
		if len(ms.cache) >= maxCacheEntries {
			ms.evictExpired()
		}
		c := cached{proof: proof, expiry: ms.now().Add(ms.cfg.TTL)}
		c.proof.Fresh = false
		ms.cache[key] = c
	} else {
		delete(ms.cache, key)
	}
	ms.mu.Unlock()
	return proof, nil
}

// IsMember asks the database, bypassing the cache.
func (ms *Memberships) IsMember(ctx context.Context, projectID, userID string) (bool, error) {
	p, err := ms.Lookup(ctx, projectID, userID, true)
	return p.Member, err
}

func (ms *Memberships) query(ctx context.Context, projectID, userID string) (access.Proof, error) {
	select {
	case ms.slots <- struct{}{}:
		defer func() { <-ms.slots }()
	case <-ctx.Done():
		return access.Proof{}, fmt.Errorf("membership lookup: %w", ctx.Err())
	}
	var member bool
	var snap string
	if err := ms.pool.QueryRow(ctx, ms.sql, projectID, userID).Scan(&member, &snap); err != nil {
		return access.Proof{}, fmt.Errorf("membership lookup: %w", err)
	}
	s, err := access.ParseSnapshot(snap)
	if err != nil {
		return access.Proof{}, fmt.Errorf("membership lookup: %w", err)
	}
	return access.Proof{Member: member, Snapshot: &s, Fresh: true}, nil
}

// maxCacheEntries bounds the cache; past it expired entries are swept, and
// if none had expired the cache starts over.
const maxCacheEntries = 200_000

func (ms *Memberships) evictExpired() {
	now := ms.now()
	for k, c := range ms.cache {
		if !now.Before(c.expiry) {
			delete(ms.cache, k)
		}
	}
	if len(ms.cache) >= maxCacheEntries {
		clear(ms.cache)
	}
}
