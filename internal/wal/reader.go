package wal

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/walcast/walcast/internal/events"
	"github.com/walcast/walcast/internal/metrics"
)

// Config configures a Reader.
type Config struct {
	// DatabaseURL is a libpq URL or DSN; the reader adds replication=database.
	DatabaseURL string
	Slot        string
	Publication string
	// StatusInterval is how often the confirmed position is reported when it
	// moved.
	StatusInterval time.Duration
	// StandbyTimeout is the longest gap between two status updates, kept
	// well under the server's wal_sender_timeout.
	StandbyTimeout time.Duration
	// HoldBackAge and HoldBackBytes bound the window by which the confirmed
	// position trails what the hub has taken, so a restart replays it.
	HoldBackAge   time.Duration
	HoldBackBytes uint64
	// ReconnectMin and ReconnectMax bound the backoff between attempts.
	ReconnectMin time.Duration
	ReconnectMax time.Duration
	// StandbyPoll is how often a replica whose slot another replica holds
	// tries again (cluster mode); 0 means the ordinary backoff.
	StandbyPoll time.Duration
	// CheckRelation, when set, checks every watched table's shape as the
	// stream describes it (columns, replica identity); a problem is logged
	// and counted when the stream first shows it.
	CheckRelation func(schema, table string, columns, identity []string) error
	// PublishPrefix is the prefix of the logical decoding messages that are
	// published events (package publish); empty streams none.
	PublishPrefix string
	// Retain, when set, adds each decoded change to its transaction,
	// keeping the memory of a large transaction bounded.
	Retain func(txn *events.Txn, ch events.Change)
	// DownNotice is how long the stream may be down before OnDown is told
	// (0: never); OnUp is told when it is back after that.
	DownNotice time.Duration
	OnDown     func(since time.Time)
	OnUp       func()
	// OnGap, when set, is told that changes before walPos may never be
	// streamed: the slot was dropped (the reader re-creates it) or was
	// moved past what this process had received (another consumer, or a
	// re-created slot). Streaming starts only after it returned nil.
	OnGap func(ctx context.Context, walPos uint64) error
	// Tables are the watched tables: their relation ids, read when each
	// session starts, name them whatever a Relation message says.
	Tables []events.Table
	// Origin, when set, is the origin (see Origin) the server must still
	// have at every reconnect; another one ends Run with ErrOriginChanged.
	Origin string
	// Progress, when set, records how far the slot is confirmed where
	// every replica sees it (cluster mode): before each confirmation, and
	// read when streaming starts, so a replica taking the slot over knows
	// what the last leader confirmed and that a slot starting past it
	// lost changes in between.
	Progress Progress
}

// Progress records the slot's confirmed position outside PostgreSQL.
type Progress interface {
	Confirming(ctx context.Context, pos uint64) error
	Confirmed(ctx context.Context) (uint64, error)
}

// Sink takes one committed transaction. When it returns nil, the
// transaction's events are in the hub and the slot may be confirmed past it.
// An error stops the stream; the transaction is streamed again on reconnect.
type Sink func(ctx context.Context, txn *events.Txn) error

// Reader streams committed transactions from a logical replication slot.
type Reader struct {
	cfg     Config
	watch   func(schema, table string) bool
	sink    Sink
	onStart func(confirmedFlush, walEnd uint64)
	log     *slog.Logger
	metrics *metrics.Metrics
	now     func() time.Time

	live atomic.Bool
	// down tracks an outage for Config.OnDown: its timer, and whether
	// OnDown was told (so OnUp must be).
	downMu    sync.Mutex
	downTimer *time.Timer
	downTold  bool
	standby   atomic.Bool
	confirmed atomic.Uint64 // last flush position reported to the server
	received  atomic.Uint64
	// lastXid is the newest transaction id streamed (modulo 2^32).
	lastXid atomic.Uint32

	mu      sync.Mutex
	lastErr error
	// restart ends the current session (Restart).
	restart context.CancelFunc
	// relations names watched tables by relation id, across sessions
	// (knownRelations); only Run's goroutine uses it.
	relations map[uint32][2]string

	// delivered is the end LSN of the last transaction the sink took; a
	// reconnect replays from the slot's confirmed position, and transactions
	// up to delivered are skipped rather than handed on twice.
	delivered uint64
	cp        checkpointer
	// changeCounters caches WALChanges' counters: looking one up by its
	// labels for every change was 3 % of the reader's CPU. Owned by the
	// reader goroutine, as delivered is.
	changeCounters map[changeKind]prometheus.Counter
}

// changeKind labels a counter of WALChanges.
type changeKind struct {
	table  string
	action events.Action
}

// NewReader returns a Reader. watch selects the tables whose changes are
// kept; onStart, if not nil, is told the slot's confirmed position each time
// streaming starts, before any transaction reaches the sink.
func NewReader(cfg Config, watch func(schema, table string) bool, sink Sink, onStart func(confirmedFlush, walEnd uint64), log *slog.Logger, m *metrics.Metrics) *Reader {
	return &Reader{
		cfg: cfg, watch: watch, sink: sink, onStart: onStart, log: log, metrics: m, now: time.Now,
		cp: checkpointer{maxAge: cfg.HoldBackAge, maxBytes: cfg.HoldBackBytes},
	}
}

// Restart ends the current replication session; Run starts a new one at
// once. A new session's walsender describes every table afresh: after a
// table or its schema was renamed and renamed back, the old one may go on
// describing it under the name it had in between (and walcast would take
// its changes for another table's).
func (r *Reader) Restart() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.restart != nil {
		r.restart()
	}
}

// Live reports whether the replication stream is up.
func (r *Reader) Live() bool { return r.live.Load() }

// LastError is the error that ended the last stream, if it is down.
func (r *Reader) LastError() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastErr
}

// ConfirmedLSN is the last position reported to the server as flushed.
func (r *Reader) ConfirmedLSN() uint64 { return r.confirmed.Load() }

// ReceivedLSN is the newest WAL position the server reported sending.
func (r *Reader) ReceivedLSN() uint64 { return r.received.Load() }

// Run streams until ctx ends, reconnecting with jittered exponential backoff
// whenever the connection or the stream fails. It returns nil when ctx ends.
func (r *Reader) Run(ctx context.Context) error {
	// An outage clock still running when Run ends must not tell anyone.
	defer r.stopDownClock()
	backoff := r.cfg.ReconnectMin
	for {
		started := r.now()
		sctx, cancel := context.WithCancel(ctx)
		r.mu.Lock()
		r.restart = cancel
		r.mu.Unlock()
		err := r.stream(sctx)
		restarted := sctx.Err() != nil // before cancel: only Restart (or ctx) ended it
		cancel()
		r.live.Store(false)
		r.metrics.WALConnected.Set(0)
		if r.cfg.StandbyPoll > 0 {
			r.metrics.ClusterLeader.Set(0)
		}
		if ctx.Err() != nil {
			return nil
		}
		if restarted && !errors.Is(err, ErrWALBehind) && !errors.Is(err, ErrOriginChanged) {
			// Restart: a new session, at once.
			r.log.Info("replication stream restarted: the tables' descriptions are read afresh", "slot", r.cfg.Slot)
			continue
		}
		r.wentDown()
		if errors.Is(err, ErrWALBehind) || errors.Is(err, ErrOriginChanged) {
			return err // a fresh start resumes clients with resync_required
		}
		r.mu.Lock()
		r.lastErr = err
		r.mu.Unlock()
		if r.cfg.StandbyPoll > 0 && slotBusy(err) {
			// Another replica streams from the slot: stand by, quietly.
			if !r.standby.Swap(true) {
				r.log.Info("replication slot held by another replica; standing by", "slot", r.cfg.Slot)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(r.cfg.StandbyPoll/2 + rand.N(r.cfg.StandbyPoll/2+1)):
			}
			continue
		}
		r.metrics.WALReconnects.Inc()
		if r.now().Sub(started) > 30*time.Second {
			backoff = r.cfg.ReconnectMin
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		r.log.Error("replication stream lost; reconnecting", "slot", r.cfg.Slot, "err", err, "retry_in", wait.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(backoff*2, r.cfg.ReconnectMax)
	}
}

// wentDown starts the outage clock: past Config.DownNotice, OnDown is told.
func (r *Reader) wentDown() {
	if r.cfg.DownNotice <= 0 || r.cfg.OnDown == nil {
		return
	}
	r.downMu.Lock()
	defer r.downMu.Unlock()
	if r.downTimer != nil {
		return // already counting this outage
	}
	since := r.now()
	r.downTimer = time.AfterFunc(r.cfg.DownNotice, func() {
		r.downMu.Lock()
		defer r.downMu.Unlock()
		if r.downTimer == nil {
			return // came up meanwhile
		}
		r.downTold = true
		r.log.Error("replication stream down past its notice: subscribers are told (stream_down)", "since", since, "slot", r.cfg.Slot)
		r.cfg.OnDown(since)
	})
}

func (r *Reader) stopDownClock() {
	r.downMu.Lock()
	defer r.downMu.Unlock()
	if r.downTimer != nil {
		r.downTimer.Stop()
		r.downTimer = nil
	}
}

// cameUp ends the outage clock, and tells OnUp if OnDown was told.
func (r *Reader) cameUp() {
	r.downMu.Lock()
	defer r.downMu.Unlock()
	if r.downTimer != nil {
		r.downTimer.Stop()
		r.downTimer = nil
	}
	if r.downTold {
		r.downTold = false
		if r.cfg.OnUp != nil {
			r.cfg.OnUp()
		}
	}
}

// replicationConfig is the configuration of a replication connection.
func replicationConfig(databaseURL string) (*pgconn.Config, error) {
	cfg, err := pgconn.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = "walcast"
	// Values arrive as text from the output functions of this session:
	// fix their form so decodeText reads them the same on every server.
	cfg.RuntimeParams["DateStyle"] = "ISO, MDY"
	cfg.RuntimeParams["TimeZone"] = "UTC"
	cfg.RuntimeParams["IntervalStyle"] = "iso_8601"
	cfg.RuntimeParams["extra_float_digits"] = "3"
	cfg.DialFunc = rawReads(cfg.DialFunc)
	return cfg, nil
}

func (r *Reader) stream(ctx context.Context) error {
	cfg, err := replicationConfig(r.cfg.DatabaseURL)
	if err != nil {
		return err
	}
	connectCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	conn, err := pgconn.ConnectConfig(connectCtx, cfg)
	cancel()
	if err != nil {
		return fmt.Errorf("connect for replication: %w", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()

	if r.cfg.Origin != "" {
		origin, err := identify(ctx, conn, r.cfg.Slot)
		if err != nil {
			return err
		}
		if origin != r.cfg.Origin {
			return fmt.Errorf("%w: it is %s, walcast started on %s; restart walcast to follow it (clients then resume with resync_required)",
				ErrOriginChanged, origin, r.cfg.Origin)
		}
	}
	if err := r.checkXidCounter(ctx, conn); err != nil {
		return err
	}
	confirmedFlush, walEnd, err := slotConfirmedFlush(ctx, conn, r.cfg.Slot)
	received := r.received.Load()
	if r.cfg.Progress != nil {
		// What the last leader (maybe this process) confirmed was
		// received: a slot past it was moved by someone else.
		recorded, perr := r.cfg.Progress.Confirmed(ctx)
		if perr != nil {
			return fmt.Errorf("read the slot's recorded progress: %w", perr)
		}
		received = max(received, recorded)
	}
	if errors.Is(err, ErrNoSlot) && received > 0 {
		// Dropped while walcast streamed from it: what was committed
		// since is gone. Re-create it and say so; the gap is signalled
		// below.
		if _, cerr := pglogrepl.CreateReplicationSlot(ctx, conn, r.cfg.Slot, "pgoutput",
			pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication}); cerr != nil {
			return fmt.Errorf("replication slot %s was dropped and could not be re-created: %w", r.cfg.Slot, cerr)
		}
		r.log.Error("replication slot was dropped while walcast streamed from it: re-created; changes committed meanwhile are lost and every project is told to resync", "slot", r.cfg.Slot)
		confirmedFlush, walEnd, err = slotConfirmedFlush(ctx, conn, r.cfg.Slot)
	}
	if err != nil {
		return err
	}
	if confirmedFlush == 0 {
		// The slot is being created (by an operator, or another
		// replica): its position is not known yet.
		return fmt.Errorf("replication slot %s has no confirmed position yet (being created)", r.cfg.Slot)
	}
	if received > 0 && walEnd > 0 && walEnd < received {
		// The server's WAL ends before what this process received: it is
		// another cluster (a restore, a blue/green switch). The hub's
		// positions and its clients' belong to the old one; carrying on
		// would take every new change for one already published.
		return fmt.Errorf("%w: the server's WAL ends at %s, before %s that walcast received; restart walcast to follow the new cluster (clients then resume with resync_required)",
			ErrWALBehind, pglogrepl.LSN(walEnd), pglogrepl.LSN(received))
	}
	if received > 0 && confirmedFlush > received {
		r.log.Error("replication slot starts past what walcast received (re-created, or consumed by another client): changes in between are lost; every project is told to resync",
			"slot", r.cfg.Slot, "received_lsn", pglogrepl.LSN(received).String(), "slot_confirmed_lsn", pglogrepl.LSN(confirmedFlush).String())
		if r.cfg.OnGap != nil {
			if err := r.cfg.OnGap(ctx, confirmedFlush); err != nil {
				// Not signalled, so not streamed past: the next attempt
				// finds the same gap.
				return fmt.Errorf("signal the gap before %s: %w", pglogrepl.LSN(confirmedFlush), err)
			}
		}
	}
	canonical, err := r.knownRelations(ctx, conn)
	if err != nil {
		return err
	}
	if r.onStart != nil {
		r.onStart(confirmedFlush, walEnd)
	}
	err = pglogrepl.StartReplication(ctx, conn, r.cfg.Slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: pluginArgs(conn, r.cfg.Publication),
	})
	if err != nil {
		return fmt.Errorf("start replication on slot %s: %w", r.cfg.Slot, err)
	}
	if r.cfg.Progress != nil {
		// Only now that this process streams the slot: where it takes
		// the slot up is confirmed as far as the next leader can know
		// (a standby's attempt must not overwrite the leader's record).
		if err := r.cfg.Progress.Confirming(ctx, confirmedFlush); err != nil {
			return fmt.Errorf("record the slot's progress: %w", err)
		}
	}
	r.live.Store(true)
	r.cameUp()
	if r.standby.Swap(false) {
		r.log.Info("took over the replication slot", "slot", r.cfg.Slot)
	}
	r.metrics.WALConnected.Set(1)
	if r.cfg.StandbyPoll > 0 {
		r.metrics.ClusterLeader.Set(1) // cluster mode: this replica streams the slot
	}
	r.mu.Lock()
	r.lastErr = nil
	r.mu.Unlock()
	r.log.Info("replication stream started", "slot", r.cfg.Slot, "publication", r.cfg.Publication, "confirmed_lsn", pglogrepl.LSN(confirmedFlush).String())
	if confirmedFlush > r.confirmed.Load() {
		r.confirmed.Store(confirmedFlush)
	}

	s := &session{r: r, conn: conn, dec: NewDecoder(r.watch), lastFlushSent: confirmedFlush}
	s.dec.canonical = canonical
	s.dec.checkRelation = r.cfg.CheckRelation
	s.dec.retain = r.cfg.Retain
	s.dec.PublishPrefix = r.cfg.PublishPrefix
	s.dec.relationProblem = func(schema, table string, err error) {
		r.metrics.SchemaProblems.Inc()
		r.log.Error("watched table changed shape; its changes fail closed until fixed", "table", schema+"."+table, "err", err)
	}
	err = s.loop(ctx)
	if ctx.Err() != nil {
		// Shutting down: report the last confirmable position once more.
		if serr := s.sendStatus(statusFinal); serr != nil {
			r.log.Warn("final standby status update", "err", serr)
		}
		return ctx.Err()
	}
	return err
}

// session is one replication connection's streaming state.
type session struct {
	r             *Reader
	conn          *pgconn.PgConn
	dec           *Decoder
	openTxn       uint64 // commit LSN of the transaction being read
	txnStart      uint64 // first WAL position of the transaction being read
	lastStatus    time.Time
	lastFlushSent uint64
}

func (s *session) loop(ctx context.Context) error {
	r := s.r
	// Receives are bounded by a read deadline on the socket, set once per
	// status tick, rather than by a context per message: pgconn watches a
	// cancellable context with a goroutine and a timer on every receive,
	// which at tens of thousands of messages a second is most of the
	// reader's cost. Shutdown moves the deadline to now.
	netConn := s.conn.Conn()
	stop := context.AfterFunc(ctx, func() { _ = netConn.SetReadDeadline(time.Now()) })
	defer stop()
	defer func() { _ = netConn.SetReadDeadline(time.Time{}) }()
	nextTick := r.now().Add(r.cfg.StatusInterval)
	if err := netConn.SetReadDeadline(nextTick); err != nil {
		return err
	}
	for {
		if !r.now().Before(nextTick) {
			if err := s.sendStatus(statusTick); err != nil {
				return err
			}
			nextTick = r.now().Add(r.cfg.StatusInterval)
			if ctx.Err() == nil {
				if err := netConn.SetReadDeadline(nextTick); err != nil {
					return err
				}
			}
		}
		raw, err := s.conn.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pgconn.Timeout(err) || isNetTimeout(err) {
				continue
			}
			return fmt.Errorf("receive: %w", err)
		}
		switch msg := raw.(type) {
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("server: %w", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone:
			return errors.New("server ended the replication stream")
		case *pgproto3.CopyData:
			if err := s.handleCopyData(ctx, msg.Data); err != nil {
				return err
			}
		}
	}
}

func (s *session) handleCopyData(ctx context.Context, data []byte) error {
	r := s.r
	if len(data) == 0 {
		return fmt.Errorf("%w: empty CopyData", ErrProtocol)
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("parse keepalive: %w", err)
		}
		s.noteReceived(uint64(ka.ServerWALEnd))
		if ka.ReplyRequested {
			return s.sendStatus(statusReply)
		}
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("parse xlogdata: %w", err)
		}
		wasOpen := s.dec.InTransaction()
		txn, err := s.dec.Decode(xld.WALData)
		if err != nil {
			r.metrics.WALDecodeErrors.Inc()
			return fmt.Errorf("decode WAL at %s: %w", xld.WALStart, err)
		}
		if s.dec.InTransaction() {
			s.openTxn = s.dec.txn.CommitLSN
			if !wasOpen {
				// pgoutput writes Begin at the transaction's first LSN.
				s.txnStart = uint64(xld.WALStart)
			}
		} else {
			s.openTxn = 0
		}
		if txn != nil {
			if err := s.deliver(ctx, txn); err != nil {
				return err
			}
		}
		s.noteReceived(uint64(xld.ServerWALEnd))
	}
	return nil
}

func (s *session) noteReceived(lsn uint64) {
	if lsn > s.r.received.Load() {
		s.r.received.Store(lsn)
	}
}

// changeCounter returns the counter of table's changes of action.
func (r *Reader) changeCounter(table string, action events.Action) prometheus.Counter {
	k := changeKind{table, action}
	c, ok := r.changeCounters[k]
	if !ok {
		if r.changeCounters == nil {
			r.changeCounters = make(map[changeKind]prometheus.Counter)
		}
		c = r.metrics.WALChanges.WithLabelValues(table, action.String())
		r.changeCounters[k] = c
	}
	return c
}

func (s *session) deliver(ctx context.Context, txn *events.Txn) error {
	r := s.r
	if txn.EndLSN <= r.delivered {
		// Replayed after a reconnect: the hub has it already.
		return nil
	}
	r.metrics.WALReceiveLatency.Observe(r.now().Sub(txn.CommitTime).Seconds())
	for i := range txn.Changes {
		c := &txn.Changes[i]
		r.changeCounter(c.Table, c.Action).Inc()
	}
	if err := r.sink(ctx, txn); err != nil {
		return fmt.Errorf("hand on txn %d at %s: %w", txn.Xid, pglogrepl.LSN(txn.CommitLSN), err)
	}
	r.delivered = txn.EndLSN
	if last := r.lastXid.Load(); last == 0 || int32(txn.Xid-last) > 0 {
		r.lastXid.Store(txn.Xid)
	}
	// Aged from its commit, not from when this process read it: a
	// restart replays the window, and must not restart its clock (the
	// window would grow with every restart). A server clock ahead of ours
	// counts as now.
	at := r.now()
	if txn.CommitTime.Before(at) {
		at = txn.CommitTime
	}
	r.cp.delivered(s.txnStart, txn.CommitLSN, txn.EndLSN, at)
	r.metrics.WALTransactions.Inc()
	r.metrics.LastEventTimestamp.Set(float64(txn.CommitTime.UnixNano()) / 1e9)
	return nil
}

// statusKind says why a standby status update is considered.
type statusKind uint8

const (
	statusTick  statusKind = iota // periodic: advance the slot if the target moved
	statusReply                   // the server asked for a reply
	statusFinal                   // shutting down: report the target once more
)

// sendStatus reports write = what was received and, only to advance the slot
// (or once more at shutdown), a valid flush position. Every other update
// carries an invalid flush: at shutdown a walsender waits until the reported
// flush (or, when invalid, write) position reaches what it sent, so a flush
// held back by the window would make PostgreSQL's shutdown hang.
func (s *session) sendStatus(kind statusKind) error {
	r := s.r
	now := r.now()
	received := r.received.Load()
	target := r.cp.target(now, received, s.openTxn)
	flush := uint64(0)
	switch kind {
	case statusTick:
		if target > s.lastFlushSent {
			flush = target
		} else if now.Sub(s.lastStatus) < r.cfg.StandbyTimeout/2 {
			return nil
		}
	case statusFinal:
		flush = max(target, s.lastFlushSent)
	}
	if flush != 0 && flush > s.lastFlushSent && r.cfg.Progress != nil {
		pctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := r.cfg.Progress.Confirming(pctx, flush)
		cancel()
		if err != nil {
			// Not recorded, not confirmed: the slot keeps the window.
			r.log.Warn("could not record the slot's progress; not confirming it this time", "err", err)
			flush = 0
		}
	}
	if err := sendStandbyStatus(s.conn, received, flush, now); err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	s.lastStatus = now
	if flush != 0 {
		s.lastFlushSent = flush
		r.confirmed.Store(flush)
	}
	return nil
}

// pgEpoch is PostgreSQL's epoch for protocol timestamps.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// sendStandbyStatus writes a Standby Status Update. pglogrepl's
// SendStandbyStatusUpdate replaces a zero flush position with the write
// position, which would report the held-back window as flushed; walcast
// needs an invalid flush on routine updates, so it encodes the message itself.
func sendStandbyStatus(conn *pgconn.PgConn, write, flush uint64, now time.Time) error {
	data := make([]byte, 34)
	data[0] = pglogrepl.StandbyStatusUpdateByteID
	binary.BigEndian.PutUint64(data[1:], write)
	binary.BigEndian.PutUint64(data[9:], flush)
	binary.BigEndian.PutUint64(data[17:], 0) // apply: walcast applies nothing
	binary.BigEndian.PutUint64(data[25:], uint64(now.Sub(pgEpoch).Microseconds()))
	data[33] = 0
	buf, err := (&pgproto3.CopyData{Data: data}).Encode(nil)
	if err != nil {
		return err
	}
	return conn.Frontend().SendUnbufferedEncodedCopyData(buf)
}

// slotConfirmedFlush reads the slot's confirmed position and the server's
// WAL end (what was committed before the stream starts).
func slotConfirmedFlush(ctx context.Context, conn *pgconn.PgConn, slot string) (confirmed, walEnd uint64, err error) {
	res, err := conn.Exec(ctx, "SELECT confirmed_flush_lsn::text, (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text FROM pg_replication_slots WHERE slot_name = "+quoteLiteral(slot)).ReadAll()
	if err != nil {
		return 0, 0, fmt.Errorf("read slot %s: %w", slot, err)
	}
	if len(res) == 0 || len(res[0].Rows) == 0 {
		return 0, 0, fmt.Errorf("%w: %s", ErrNoSlot, slot)
	}
	row := res[0].Rows[0]
	parse := func(v []byte) (uint64, error) {
		if v == nil {
			return 0, nil
		}
		lsn, err := pglogrepl.ParseLSN(string(v))
		return uint64(lsn), err
	}
	if len(row) < 2 {
		return 0, 0, fmt.Errorf("read slot %s: short row", slot)
	}
	if confirmed, err = parse(row[0]); err != nil {
		return 0, 0, fmt.Errorf("parse confirmed_flush_lsn of %s: %w", slot, err)
	}
	if walEnd, err = parse(row[1]); err != nil {
		return 0, 0, fmt.Errorf("parse the WAL end: %w", err)
	}
	return confirmed, walEnd, nil
}

// checkXidCounter refuses a server whose next transaction id is not past
// every transaction walcast has streamed from it. Crash recovery never
// moves the counter back (what was streamed was flushed); a restore from a
// file-level snapshot with the same identity and timeline does, and may
// have written other changes at positions walcast already published.
func (r *Reader) checkXidCounter(ctx context.Context, conn *pgconn.PgConn) error {
	last := r.lastXid.Load()
	if last == 0 {
		return nil
	}
	res, err := conn.Exec(ctx, "SELECT pg_snapshot_xmax(pg_current_snapshot())::text").ReadAll()
	if err != nil {
		return fmt.Errorf("read the transaction counter: %w", err)
	}
	if len(res) == 0 || len(res[0].Rows) == 0 || len(res[0].Rows[0]) == 0 {
		return errors.New("read the transaction counter: no row")
	}
	next, err := strconv.ParseUint(string(res[0].Rows[0][0]), 10, 64)
	if err != nil {
		return fmt.Errorf("read the transaction counter: %w", err)
	}
	if int32(uint32(next)-last) <= 0 {
		return fmt.Errorf("%w: its next transaction id %d is not past transaction %d that walcast streamed from it (restored from a snapshot?); restart walcast to follow it (clients then resume with resync_required)",
			ErrOriginChanged, next, last)
	}
	return nil
}

// knownRelations names the watched tables by relation id: the ids read now
// and those of earlier sessions (a session that starts while a table is
// renamed away finds no id under its name, and the walsender describes it
// under the other one). A watched table neither found nor known stops the
// session from starting: its changes would be taken for another table's
// and dropped.
func (r *Reader) knownRelations(ctx context.Context, conn *pgconn.PgConn) (map[uint32][2]string, error) {
	found, err := relationIDs(ctx, conn, r.cfg.Tables)
	if err != nil {
		return nil, err
	}
	if r.relations == nil {
		r.relations = make(map[uint32][2]string)
	}
	maps.Copy(r.relations, found)
	for _, t := range r.cfg.Tables {
		name := [2]string{t.SchemaName(), t.Name}
		known := false
		for _, n := range r.relations {
			known = known || n == name
		}
		if !known {
			return nil, fmt.Errorf("watched table %s.%s not found (renamed or dropped?): streaming waits for it", name[0], name[1])
		}
	}
	return maps.Clone(r.relations), nil
}

// relationIDs reads the relation id of each watched table that exists.
func relationIDs(ctx context.Context, conn *pgconn.PgConn, tables []events.Table) (map[uint32][2]string, error) {
	ids := make(map[uint32][2]string, len(tables))
	if len(tables) == 0 {
		return ids, nil
	}
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = quoteLiteral(pgx.Identifier{t.SchemaName(), t.Name}.Sanitize())
	}
	res, err := conn.Exec(ctx, "SELECT to_regclass(x)::oid::text FROM unnest(ARRAY["+strings.Join(names, ",")+"]::text[]) WITH ORDINALITY AS u(x, i) ORDER BY i").ReadAll()
	if err != nil {
		return nil, fmt.Errorf("read the watched tables' ids: %w", err)
	}
	if len(res) == 0 || len(res[0].Rows) != len(tables) {
		return nil, errors.New("read the watched tables' ids: short answer")
	}
	for i, row := range res[0].Rows {
		if len(row) == 0 || row[0] == nil {
			continue // missing: the start-up checks say so
		}
		id, err := strconv.ParseUint(string(row[0]), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("read the watched tables' ids: %w", err)
		}
		ids[uint32(id)] = [2]string{tables[i].SchemaName(), tables[i].Name}
	}
	return ids, nil
}

// pluginArgs are pgoutput's options: protocol 1, the publication, and,
// from PostgreSQL 14 on, logical decoding messages (walcast's gap markers
// and published events).
func pluginArgs(conn *pgconn.PgConn, publication string) []string {
	args := []string{"proto_version '1'", "publication_names " + quoteLiteral(publication)}
	if v, err := strconv.Atoi(strings.SplitN(conn.ParameterStatus("server_version"), ".", 2)[0]); err == nil && v >= 14 {
		args = append(args, "messages 'true'")
	}
	return args
}

// ErrWALBehind reports a server whose WAL ends before what walcast had
// received from it: another cluster. Run returns it; walcast stops.
var ErrWALBehind = errors.New("the database's WAL went backwards")

// ErrNoSlot reports that the configured replication slot does not exist.
var ErrNoSlot = errors.New("replication slot does not exist")

func isNetTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// slotBusy reports whether err is the server refusing a slot another
// connection streams from (SQLSTATE 55006, object_in_use).
func slotBusy(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "55006"
}

// quoteLiteral quotes s as an SQL string literal. The replication protocol
// takes no bind parameters; config already restricts the names, and this
// keeps the reader safe on its own.
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
