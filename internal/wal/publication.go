package wal

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
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
//
// Changes made while a table was out are lost. When the table is back, or
// when the publication's catalog rows changed between two checks (a table
// dropped and added back within one interval), the watch writes a gap
// marker into the WAL (events.GapPrefix): read back in order, it tells
// every project to resync at a position after everything lost, on every
// replica and after a restart too. Where the marker cannot be written, the
// hub is told directly (ResyncAll).
type PublicationWatch struct {
	pool     *pgxpool.Pool
	name     string
	tables   []events.Table
	interval time.Duration
	access   Access
	log      *slog.Logger
	metrics  *metrics.Metrics
	// gapKey signs the gap markers it writes (events.GapKey).
	gapKey []byte
	// slot, when set, is the slot whose undecoded WAL the first check
	// compares the publication's catalog rows with.
	slot string

	// restartStream, when set, makes the reader describe the tables
	// afresh after the publication or a table changed (Reader.Restart).
	restartStream func()

	mu       sync.Mutex
	problems []string
	blind    bool
	identity string
	// tail, when set, is the transaction counter when a gap was
	// signalled while transactions were open: one of them may have
	// written a lost change and commit after the marker, so a second
	// marker follows once every transaction older than tail has ended.
	tail uint64
}

// tailUnknown marks a gap signalled while the open transactions could not
// be read.
const tailUnknown = ^uint64(0)

// NewPublicationWatch returns a watch of publication name over tables;
// restartStream (nil: none) is called after the publication or a watched
// table changed. In cluster mode every replica watches and writes its own
// marker: a gap one of them sees is never left to another that may not be
// streaming, at the cost of a resync per replica.
func NewPublicationWatch(pool *pgxpool.Pool, name, slot string, tables []events.Table, interval time.Duration, gapKey []byte, a Access, restartStream func(), log *slog.Logger, m *metrics.Metrics) *PublicationWatch {
	return &PublicationWatch{pool: pool, name: name, slot: slot, tables: tables, interval: interval, gapKey: gapKey, access: a,
		restartStream: restartStream, log: log, metrics: m}
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
	wasBlind, had, known := w.blind, len(w.problems) > 0, w.identity
	w.problems, w.blind, w.identity = problems, blind, pub.Identity
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
	if len(problems) > 0 {
		return // nothing to signal before the fix: what follows is lost too
	}
	// What follows asks the database too: bounded like the read above.
	ctx = cctx
	switch {
	case had:
		w.gap(ctx, "the publication streams every watched table again; changes made meanwhile were lost")
		w.restart()
	case known != "" && known != pub.Identity:
		w.gap(ctx, "the publication or a watched table changed between two checks (dropped and added back, rebuilt?); changes made meanwhile may be lost")
		w.restart()
	case known == "" && w.slot != "":
		// First look: a change to the publication within the WAL the
		// slot will still decode happened while no walcast watched.
		changed, err := w.changedSinceSlot(cctx)
		if err != nil {
			w.log.Warn("publication check: compare with the slot", "publication", w.name, "err", err)
		} else if changed {
			w.gap(ctx, "the publication changed within the WAL the slot still holds (while walcast was not running?); changes made meanwhile may be lost")
		}
	default:
		w.catchUp(ctx)
	}
}

// restart makes the reader read the watched tables' ids afresh.
func (w *PublicationWatch) restart() {
	if w.restartStream != nil {
		w.restartStream()
	}
}

// catchUp writes the marker that follows transactions open across a gap.
func (w *PublicationWatch) catchUp(ctx context.Context) {
	w.mu.Lock()
	tail := w.tail
	w.mu.Unlock()
	if tail == tailUnknown {
		// The open transactions could not be read when the gap was
		// signalled: wait for those open now, a later bound.
		var next uint64
		if err := w.pool.QueryRow(ctx, `SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint`).Scan(&next); err != nil {
			return
		}
		w.mu.Lock()
		w.tail, tail = next, next
		w.mu.Unlock()
	}
	if tail == 0 {
		return
	}
	var oldest uint64
	if err := w.pool.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint`).Scan(&oldest); err != nil {
		w.log.Warn("publication check: read the oldest open transaction", "err", err)
		return
	}
	if oldest < tail {
		return
	}
	w.mu.Lock()
	w.tail = 0
	w.mu.Unlock()
	w.mark(ctx, "transactions open across a gap have ended; what they wrote while a table was not streamed was lost")
}

// changedSinceSlot reports whether a catalog row behind the publication
// was written by a transaction at or after the oldest one whose catalog
// the slot still needs: the publication changed within the stretch of WAL
// the slot has not been confirmed past.
func (w *PublicationWatch) changedSinceSlot(ctx context.Context) (bool, error) {
	qualified := make([]string, len(w.tables))
	for i, t := range w.tables {
		qualified[i] = pgx.Identifier{schemaOf(t), t.Name}.Sanitize()
	}
	var changed bool
	err := w.pool.QueryRow(ctx, `SELECT coalesce(bool_or(age(p.xmin) <= age(s.catalog_xmin) OR EXISTS (
			SELECT 1 FROM pg_publication_rel r WHERE r.prpubid = p.oid
			  AND r.prrelid IN (SELECT to_regclass(x) FROM unnest($3::text[]) x)
			  AND age(r.xmin) <= age(s.catalog_xmin))), false)
		FROM pg_publication p, pg_replication_slots s
		WHERE p.pubname = $1 AND s.slot_name = $2 AND s.catalog_xmin IS NOT NULL`, w.name, w.slot, qualified).Scan(&changed)
	return changed, err
}

// gap tells every project to resync after what may have been lost: through
// a marker in the WAL, or, where that fails, the hub directly. A
// transaction open now may have written a lost change and commit after
// the marker: a second marker follows once it has ended (catchUp).
func (w *PublicationWatch) gap(ctx context.Context, reason string) {
	var open bool
	var next uint64
	if err := w.pool.QueryRow(ctx, `SELECT cardinality(array(SELECT pg_snapshot_xip(s))) > 0, pg_snapshot_xmax(s)::text::bigint FROM pg_current_snapshot() s`).Scan(&open, &next); err != nil {
		w.log.Warn("publication check: read the open transactions", "err", err)
		open, next = true, tailUnknown
	}
	if open {
		w.mu.Lock()
		w.tail = max(w.tail, next)
		w.mu.Unlock()
	}
	w.mark(ctx, reason)
}

// mark writes a gap marker (or, where that fails, tells the hub).
func (w *PublicationWatch) mark(ctx context.Context, reason string) {
	w.log.Warn(reason+": every project is told to resync", "publication", w.name)
	_, err := w.pool.Exec(ctx, `SELECT pg_logical_emit_message(true, $1, $2::text)`, events.GapPrefix, string(events.GapMarker(w.gapKey, w.name, reason)))
	if err != nil {
		w.log.Error("could not write a gap marker into the WAL: this process's subscribers are told directly, but a restart or another replica will not know of the gap",
			"publication", w.name, "err", err)
		w.access.ResyncAll(time.Now())
	}
}

// Problems is what the last check found wrong, each with its fix.
func (w *PublicationWatch) Problems() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.problems
}
