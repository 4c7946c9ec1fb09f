package auth

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/walcast/walcast/internal/metrics"
)

// MembershipQuery describes where membership lives.
type MembershipQuery struct {
	// Table is the membership table, schema-qualified or not.
	Table           string
	ProjectIDColumn string
	UserIDColumn    string
}

// Memberships answers "is user U a member of project P", cached.
type Memberships struct {
	pool    *pgxpool.Pool
	sql     string
	ttl     time.Duration
	metrics *metrics.Metrics
	now     func() time.Time

	mu    sync.Mutex
	cache map[[2]string]time.Time // (project, user) -> expiry
	gen   uint64                  // bumped by every Forget
}

// NewMemberships returns a cache over q. ttl bounds how long a positive
// answer is trusted without a removal seen on the stream.
func NewMemberships(pool *pgxpool.Pool, q MembershipQuery, ttl time.Duration, m *metrics.Metrics) *Memberships {
	ident := func(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
	table := q.Table
	if schema, name, ok := strings.Cut(table, "."); ok {
		table = ident(schema) + "." + ident(name)
	} else {
		table = ident(table)
	}
	sql := fmt.Sprintf("SELECT EXISTS (SELECT 1 FROM %s WHERE %s::text = $1 AND %s::text = $2)", table, ident(q.ProjectIDColumn), ident(q.UserIDColumn))
	return &Memberships{pool: pool, sql: sql, ttl: ttl, metrics: m, now: time.Now, cache: make(map[[2]string]time.Time)}
}

// IsMember reports whether userID is a member of projectID.
func (ms *Memberships) IsMember(ctx context.Context, projectID, userID string) (bool, error) {
	key := [2]string{projectID, userID}
	ms.mu.Lock()
	exp, ok := ms.cache[key]
	gen := ms.gen
	ms.mu.Unlock()
	if ok && ms.now().Before(exp) {
		ms.metrics.MembershipLookups.WithLabelValues("hit").Inc()
		return true, nil
	}
	ms.metrics.MembershipLookups.WithLabelValues("miss").Inc()
	var member bool
	if err := ms.pool.QueryRow(ctx, ms.sql, projectID, userID).Scan(&member); err != nil {
		return false, fmt.Errorf("membership lookup: %w", err)
	}
	if member && ms.ttl > 0 {
		ms.mu.Lock()
		// A removal seen since the query began may postdate its answer.
		if ms.gen == gen {
			if len(ms.cache) >= maxCacheEntries {
				ms.evictExpired()
			}
			ms.cache[key] = ms.now().Add(ms.ttl)
		}
		ms.mu.Unlock()
	}
	return member, nil
}

// Forget drops cached answers for projectID: userID's, or everyone's when
// userID is empty (the project was deleted).
func (ms *Memberships) Forget(projectID, userID string) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	ms.gen++
	if userID != "" {
		delete(ms.cache, [2]string{projectID, userID})
		return
	}
	for k := range ms.cache {
		if k[0] == projectID {
			delete(ms.cache, k)
		}
	}
}

// maxCacheEntries bounds the cache; past it expired entries are swept, and
// if none had expired the cache starts over.
const maxCacheEntries = 200_000

func (ms *Memberships) evictExpired() {
	now := ms.now()
	for k, exp := range ms.cache {
		if !now.Before(exp) {
			delete(ms.cache, k)
		}
	}
	if len(ms.cache) >= maxCacheEntries {
		clear(ms.cache)
	}
}
