package wal

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/walcast/walcast/internal/metrics"
)

// SlotStats is what the server says about the replication slot.
type SlotStats struct {
	Slot         string    `json:"slot"`
	Active       bool      `json:"active"`
	ConfirmedLSN string    `json:"confirmed_lsn"`
	RestartLSN   string    `json:"restart_lsn"`
	CurrentLSN   string    `json:"current_lsn"`
	LagBytes     int64     `json:"lag_bytes"`
	RetainedWAL  int64     `json:"retained_wal_bytes"`
	WALStatus    string    `json:"wal_status"`
	SafeWALSize  *int64    `json:"safe_wal_size"`
	ReadAt       time.Time `json:"read_at"`
}

// Monitor polls the slot's position and WAL retention and feeds the lag
// and retention gauges; /api/v1/status reads the slot fresh (Read).
type Monitor struct {
	pool     *pgxpool.Pool
	slot     string
	interval time.Duration
	warnAt   int64
	log      *slog.Logger
	metrics  *metrics.Metrics

	mu sync.Mutex
	// warned is when the retained-WAL warning was last logged: every
	// status request reads the slot, and a warning per read drowned the
	// log (the gauge says it every time).
	warned time.Time
}

// NewMonitor returns a Monitor that reads every interval and warns when the
// slot retains more than warnAt bytes of WAL (0: never).
func NewMonitor(pool *pgxpool.Pool, slot string, interval time.Duration, warnAt int64, log *slog.Logger, m *metrics.Metrics) *Monitor {
	return &Monitor{pool: pool, slot: slot, interval: interval, warnAt: warnAt, log: log, metrics: m}
}

// Run polls until ctx ends.
func (m *Monitor) Run(ctx context.Context) error {
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		_, _ = m.Read(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Read queries the slot now and updates the gauges.
func (m *Monitor) Read(ctx context.Context) (SlotStats, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	st := SlotStats{Slot: m.slot}
	var safe *int64
	err := m.pool.QueryRow(ctx, `
SELECT active,
       coalesce(confirmed_flush_lsn::text, ''), coalesce(restart_lsn::text, ''), pg_current_wal_lsn()::text,
       coalesce(pg_current_wal_lsn() - confirmed_flush_lsn, 0)::bigint,
       coalesce(pg_current_wal_lsn() - restart_lsn, 0)::bigint,
       coalesce(wal_status, ''), safe_wal_size
FROM pg_replication_slots WHERE slot_name = $1`, m.slot).Scan(
		&st.Active, &st.ConfirmedLSN, &st.RestartLSN, &st.CurrentLSN, &st.LagBytes, &st.RetainedWAL, &st.WALStatus, &safe)
	st.SafeWALSize = safe
	st.ReadAt = time.Now().UTC()
	if err != nil {
		err = fmt.Errorf("read slot %s: %w", m.slot, err)
	} else {
		m.metrics.ReplicationLagBytes.Set(float64(st.LagBytes))
		m.metrics.RetainedWALBytes.Set(float64(st.RetainedWAL))
		switch {
		case m.warnAt > 0 && st.RetainedWAL > m.warnAt:
			m.metrics.RetainedWALWarning.Set(1)
			m.mu.Lock()
			warn := time.Since(m.warned) > time.Minute
			if warn {
				m.warned = time.Now()
			}
			m.mu.Unlock()
			if warn {
				m.log.Warn("replication slot retains a lot of WAL", "slot", m.slot, "retained_wal_bytes", st.RetainedWAL,
					"threshold_bytes", m.warnAt, "wal_status", st.WALStatus, "safe_wal_size", st.SafeWALSize)
			}
		default:
			m.metrics.RetainedWALWarning.Set(0)
			m.mu.Lock()
			m.warned = time.Time{}
			m.mu.Unlock()
		}
		if st.WALStatus == "unreserved" || st.WALStatus == "lost" {
			m.log.Error("replication slot is losing WAL: events may be lost; see max_slot_wal_keep_size", "slot", m.slot, "wal_status", st.WALStatus)
		}
	}
	return st, err
}
