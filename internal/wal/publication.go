package wal

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/walcast/walcast/internal/events"
	"github.com/walcast/walcast/internal/metrics"
)

// Access is told when access changes can no longer be followed through
// the stream and when they can again (the hub: Suspend and Resume), and
// when changes of a watched table may have been lost (ResyncAll).
type Access interface {
	Suspend(reason string)
	Resume()
	ResyncAll(at time.Time)
}

// PublicationWatch checks the publication every interval. A table dropped
// from a publication streams nothing and the stream says nothing of it, so
// this is the only way walcast can know. While a table that grants access
// is not streamed, access is suspended (every subscription revoked, none
// granted); any problem makes walcast unready, with the fix.
type PublicationWatch struct {
	pool     *pgxpool.Pool
	name     string
	tables   []events.Table
	interval time.Duration
	access   Access
	log      *slog.Logger
	metrics  *metrics.Metrics

	mu       sync.Mutex
	problems []string
	blind    bool
}

// NewPublicationWatch returns a watch of publication name over tables.
func NewPublicationWatch(pool *pgxpool.Pool, name string, tables []events.Table, interval time.Duration, a Access, log *slog.Logger, m *metrics.Metrics) *PublicationWatch {
	return &PublicationWatch{pool: pool, name: name, tables: tables, interval: interval, access: a, log: log, metrics: m}
}

// Run checks until ctx ends.
func (w *PublicationWatch) Run(ctx context.Context) error {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		w.check(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (w *PublicationWatch) check(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, max(w.interval, 2*time.Second))
	defer cancel()
	pub, err := ReadPublication(cctx, w.pool, w.name, w.tables)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Warn("publication check", "publication", w.name, "err", err)
		}
		return // the database is away: readiness says so already
	}
	problems, blind := pub.Problems(w.tables), pub.AccessBlind()
	w.mu.Lock()
	wasBlind, had := w.blind, len(w.problems) > 0
	w.problems, w.blind = problems, blind
	w.mu.Unlock()
	switch {
	case blind && !wasBlind:
		w.metrics.AccessFailClosed.WithLabelValues(metrics.FailClosedPublication).Inc()
		w.log.Error("access changes are not streamed: every subscription revoked, none granted until fixed",
			"publication", w.name, "problem", strings.Join(problems, "; "))
		w.access.Suspend(strings.Join(problems, "; "))
	case !blind && wasBlind:
		w.log.Info("access changes are streamed again: subscriptions may be granted", "publication", w.name)
		w.access.Resume()
	}
	if len(problems) > 0 && !blind && !had {
		w.log.Error("changes of a watched table are not streamed", "publication", w.name, "problem", strings.Join(problems, "; "))
	}
	if had && len(problems) == 0 {
		// The changes made meanwhile were never streamed: every project
		// refetches (a resume from before now cannot be served either).
		w.log.Warn("the publication streams every watched table again; changes made meanwhile were lost: every project is told to resync", "publication", w.name)
		w.access.ResyncAll(time.Now())
	}
}

// Problems is what the last check found wrong, each with its fix.
func (w *PublicationWatch) Problems() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.problems
}
