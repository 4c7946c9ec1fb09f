package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/walcast/walcast/internal/events"
)

// ErrProtocol marks WAL data that does not follow pgoutput's rules (a change
// outside a transaction, an unknown relation, a tuple wider than its
// relation). The stream stops at it: the transaction is never confirmed.
var ErrProtocol = errors.New("pgoutput protocol violation")

type relColumn struct {
	name string
	oid  uint32
	// key marks a column of the replica identity.
	key bool
}

type relation struct {
	schema, table string
	watched       bool
	columns       []relColumn
	// identity names the replica identity's columns (all for FULL).
	identity []string
}

// Decoder assembles pgoutput messages (protocol version 1) into committed
// transactions. It holds the relation cache of one replication connection:
// make a new Decoder for every connection, since the server resends
// relations on each.
//
// A Decoder is not safe for concurrent use.
type Decoder struct {
	watch func(schema, table string) bool
	// checkRelation, when set, is told the shape of every watched
	// relation the stream describes (at start, and after every schema
	// change), and its error is reported through relationProblem.
	checkRelation   func(schema, table string, columns, identity []string) error
	relationProblem func(schema, table string, err error)
	// retain, when set, adds a decoded change to the transaction, keeping
	// its memory bounded (events.Mapper.Retain); else every change is kept.
	retain func(txn *events.Txn, ch events.Change)
	// canonical names watched tables by their relation id, as they were
	// named when the stream started: a Relation message may carry a name
	// the table had only in between (renamed, or its schema renamed, and
	// back), which the walsender can go on using.
	canonical map[uint32][2]string
	relations map[uint32]*relation
	types     *pgtype.Map
	txn       *events.Txn
	// tuples are reused by every change: their data alias the message.
	tuples [2][]tupleColumn
	// PublishPrefix is the prefix of the logical decoding messages that
	// are published events (package publish); empty keeps none.
	PublishPrefix string
	// now stamps a message written outside a transaction, which carries
	// no commit time of its own.
	now func() time.Time
}

// tupleColumn is one column of a pgoutput TupleData: its kind ('n' null,
// 'u' unchanged TOAST, 't' text, 'b' binary) and its bytes, which alias
// the message being decoded.
type tupleColumn struct {
	kind byte
	data []byte
}

// NewDecoder returns a Decoder that keeps the changes of tables for which
// watch returns true and drops the rest.
func NewDecoder(watch func(schema, table string) bool) *Decoder {
	return &Decoder{watch: watch, relations: make(map[uint32]*relation), types: pgtype.NewMap(), now: time.Now}
}

// Decode consumes the payload of one XLogData message. It returns the
// transaction when the message is its Commit, and nil otherwise.
func (d *Decoder) Decode(walData []byte) (*events.Txn, error) {
	if len(walData) > 0 {
		switch walData[0] {
		case 'I', 'U', 'D':
			// Row changes are most of the stream: walcast reads them
			// itself, without pglogrepl's two allocations per column.
			return nil, d.rowChange(walData)
		case 'B':
			// Begin and Commit frame every transaction: read in place
			// too, without pglogrepl's message and decoder allocations.
			return nil, d.begin(walData)
		case 'C':
			return d.commit(walData)
		}
	}
	msg, err := parse(walData)
	if err != nil {
		return nil, err
	}
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		rel := &relation{schema: m.Namespace, table: m.RelationName, columns: make([]relColumn, len(m.Columns))}
		if name, ok := d.canonical[m.RelationID]; ok {
			rel.schema, rel.table = name[0], name[1]
		}
		rel.watched = d.watch(rel.schema, rel.table)
		names := make([]string, len(m.Columns))
		for i, c := range m.Columns {
			rel.columns[i] = relColumn{name: c.Name, oid: c.DataType, key: c.Flags&1 != 0}
			names[i] = c.Name
			if c.Flags&1 != 0 {
				rel.identity = append(rel.identity, c.Name)
			}
		}
		d.relations[m.RelationID] = rel
		if rel.watched && d.checkRelation != nil {
			if err := d.checkRelation(rel.schema, rel.table, names, rel.identity); err != nil && d.relationProblem != nil {
				d.relationProblem(rel.schema, rel.table, err)
			}
		}
	case *pglogrepl.TruncateMessage:
		if d.txn == nil {
			return nil, fmt.Errorf("%w: truncate outside a transaction", ErrProtocol)
		}
		for _, id := range m.RelationIDs {
			rel, ok := d.relations[id]
			if !ok {
				return nil, fmt.Errorf("%w: truncate of unknown relation %d", ErrProtocol, id)
			}
			if rel.watched {
				d.keep(events.Change{Schema: rel.schema, Table: rel.table, Action: events.Truncate})
			}
		}
	case *pglogrepl.LogicalDecodingMessage:
		// Kept: gap markers written inside a transaction
		// (events.GapPrefix), and published events (PublishPrefix). A
		// transactional one takes its place among its transaction's
		// changes; one written outside any transaction (pg_logical_emit_
		// message(false, …)) is streamed at once, as the record is read,
		// and becomes a transaction of its own at its LSN.
		switch {
		case m.Prefix == events.GapPrefix && m.Transactional && d.txn != nil:
		case m.Prefix != d.PublishPrefix || d.PublishPrefix == "":
			return nil, nil
		case d.txn == nil && m.Transactional:
			return nil, fmt.Errorf("%w: transactional message at %s outside a transaction", ErrProtocol, m.LSN)
		case d.txn == nil:
			// pgoutput gives a message the LSN just past its record,
			// which is where the next record starts: often a commit, whose
			// transaction's events are at that LSN. One byte before it is
			// inside the message's record, where no commit starts: a
			// position no transaction has, in WAL order with all of them.
			// Confirming the record's end keeps the message from being
			// streamed again (PostgreSQL skips a record that starts before
			// the confirmed position) and not the commit that follows it
			// (which starts there). It carries no time: the time it is
			// read stands for one.
			if m.LSN == 0 {
				return nil, fmt.Errorf("%w: message without an LSN", ErrProtocol)
			}
			txn := &events.Txn{CommitLSN: uint64(m.LSN) - 1, EndLSN: uint64(m.LSN), CommitTime: d.now().UTC()}
			d.txn = txn
			d.keep(events.Change{Action: events.Message, Prefix: m.Prefix, Content: bytes.Clone(m.Content)})
			d.txn = nil
			return txn, nil
		}
		d.keep(events.Change{Action: events.Message, Prefix: m.Prefix, Content: bytes.Clone(m.Content)})
	}
	// Type and Origin messages carry nothing walcast serves.
	return nil, nil
}

// begin reads a Begin message: 'B', the final LSN (8 bytes), the commit
// time (8) and the xid (4); bytes past them are ignored, as pglogrepl does.
func (d *Decoder) begin(b []byte) error {
	if len(b) < 21 {
		return fmt.Errorf("%w: begin message of %d bytes", ErrProtocol, len(b))
	}
	xid := binary.BigEndian.Uint32(b[17:21])
	if d.txn != nil {
		return fmt.Errorf("%w: begin of xid %d inside xid %d", ErrProtocol, xid, d.txn.Xid)
	}
	d.txn = &events.Txn{Xid: xid, CommitLSN: binary.BigEndian.Uint64(b[1:9]), CommitTime: protocolTime(b[9:17])}
	return nil
}

// commit reads a Commit message: 'C', flags (1 byte), the commit LSN (8),
// the transaction's end LSN (8) and the commit time (8).
func (d *Decoder) commit(b []byte) (*events.Txn, error) {
	if len(b) < 26 {
		return nil, fmt.Errorf("%w: commit message of %d bytes", ErrProtocol, len(b))
	}
	commitLSN := binary.BigEndian.Uint64(b[2:10])
	if d.txn == nil {
		return nil, fmt.Errorf("%w: commit at %s outside a transaction", ErrProtocol, pglogrepl.LSN(commitLSN))
	}
	txn := d.txn
	d.txn = nil
	txn.CommitLSN = commitLSN
	txn.EndLSN = binary.BigEndian.Uint64(b[10:18])
	txn.CommitTime = protocolTime(b[18:26])
	return txn, nil
}

// protocolTime reads a replication protocol timestamp: microseconds since
// 2000-01-01 UTC, big-endian (pglogrepl's reading, in UTC).
func protocolTime(b []byte) time.Time {
	const unixToY2K = 946_684_800_000_000 // microseconds
	return time.Unix(0, (unixToY2K+int64(binary.BigEndian.Uint64(b)))*1000).UTC()
}

// InTransaction reports whether a Begin has been seen without its Commit.
func (d *Decoder) InTransaction() bool { return d.txn != nil }

// rowChange decodes Insert ('I' relid 'N' tuple), Update ('U' relid
// ['K'|'O' tuple] 'N' tuple) and Delete ('D' relid 'K'|'O' tuple) of
// protocol version 1.
func (d *Decoder) rowChange(b []byte) error {
	kind := b[0]
	if len(b) < 6 {
		return fmt.Errorf("%w: %q message of %d bytes", ErrProtocol, kind, len(b))
	}
	relID := binary.BigEndian.Uint32(b[1:5])
	b = b[5:]
	var newTuple, oldTuple []tupleColumn
	var err error
	hasNew, hasOld := false, false
	// A 'K' old tuple carries only the replica identity's columns; the
	// others are sent as NULL but are not known to be.
	oldKeyOnly := b[0] == 'K'
	if b[0] == 'K' || b[0] == 'O' {
		if kind == 'I' {
			return fmt.Errorf("%w: insert with an old tuple", ErrProtocol)
		}
		if oldTuple, b, err = readTuple(b[1:], d.tuples[1][:0]); err != nil {
			return err
		}
		d.tuples[1], hasOld = oldTuple, true
	}
	if kind != 'D' {
		if len(b) == 0 || b[0] != 'N' {
			return fmt.Errorf("%w: %q message without a new tuple", ErrProtocol, kind)
		}
		if newTuple, _, err = readTuple(b[1:], d.tuples[0][:0]); err != nil {
			return err
		}
		d.tuples[0], hasNew = newTuple, true
	} else if !hasOld {
		return fmt.Errorf("%w: delete without an old tuple", ErrProtocol)
	}
	action := events.Insert
	switch kind {
	case 'U':
		action = events.Update
	case 'D':
		action = events.Delete
	}
	return d.change(relID, action, newTuple, oldTuple, hasNew, hasOld, oldKeyOnly)
}

// readTuple reads a TupleData into dst and returns the rest of b.
func readTuple(b []byte, dst []tupleColumn) ([]tupleColumn, []byte, error) {
	if len(b) < 2 {
		return nil, nil, fmt.Errorf("%w: tuple without a column count", ErrProtocol)
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	for i := 0; i < n; i++ {
		if len(b) < 1 {
			return nil, nil, fmt.Errorf("%w: tuple ends at column %d of %d", ErrProtocol, i, n)
		}
		c := tupleColumn{kind: b[0]}
		b = b[1:]
		switch c.kind {
		case 'n', 'u':
		case 't', 'b':
			if len(b) < 4 {
				return nil, nil, fmt.Errorf("%w: column %d without a length", ErrProtocol, i)
			}
			l := binary.BigEndian.Uint32(b)
			if uint64(l) > uint64(len(b)-4) {
				return nil, nil, fmt.Errorf("%w: column %d claims %d bytes, %d left", ErrProtocol, i, l, len(b)-4)
			}
			c.data, b = b[4:4+l], b[4+l:]
		default:
			return nil, nil, fmt.Errorf("%w: column %d has tuple type %q", ErrProtocol, i, c.kind)
		}
		dst = append(dst, c)
	}
	return dst, b, nil
}

func (d *Decoder) change(relID uint32, action events.Action, newTuple, oldTuple []tupleColumn, hasNew, hasOld, oldKeyOnly bool) error {
	if d.txn == nil {
		return fmt.Errorf("%w: %s on relation %d outside a transaction", ErrProtocol, action, relID)
	}
	rel, ok := d.relations[relID]
	if !ok {
		return fmt.Errorf("%w: %s on unknown relation %d", ErrProtocol, action, relID)
	}
	if !rel.watched {
		return nil
	}
	ch := events.Change{Schema: rel.schema, Table: rel.table, Action: action, Identity: rel.identity}
	var err error
	if hasNew {
		if ch.New, err = d.row(rel, newTuple, false); err != nil {
			return fmt.Errorf("%s %s.%s new row: %w", action, rel.schema, rel.table, err)
		}
	}
	if hasOld {
		if ch.Old, err = d.row(rel, oldTuple, oldKeyOnly); err != nil {
			return fmt.Errorf("%s %s.%s old row: %w", action, rel.schema, rel.table, err)
		}
	}
	if action != events.Delete && ch.New == nil {
		return fmt.Errorf("%w: %s on %s.%s without a new row", ErrProtocol, action, rel.schema, rel.table)
	}
	d.keep(ch)
	return nil
}

func (d *Decoder) keep(ch events.Change) {
	if d.retain != nil {
		d.retain(d.txn, ch)
		return
	}
	d.txn.Changes = append(d.txn.Changes, ch)
}

// row decodes tuple; keyOnly keeps only the replica identity's columns
// (an old key tuple: the rest are placeholders, not values).
func (d *Decoder) row(rel *relation, tuple []tupleColumn, keyOnly bool) ([]events.Column, error) {
	if len(tuple) > len(rel.columns) {
		return nil, fmt.Errorf("%w: tuple has %d columns, relation %d", ErrProtocol, len(tuple), len(rel.columns))
	}
	cols := make([]events.Column, 0, len(tuple))
	for i, c := range tuple {
		rc := rel.columns[i]
		if keyOnly && !rc.key {
			continue
		}
		col := events.Column{Name: rc.name}
		switch c.kind {
		case pglogrepl.TupleDataTypeNull:
		case pglogrepl.TupleDataTypeToast:
			col.Unchanged = true
		case pglogrepl.TupleDataTypeText:
			col.Value = decodeText(d.types, rc.oid, c.data)
		case pglogrepl.TupleDataTypeBinary:
			// walcast never asks for binary; a value in it is kept as bytes' text.
			col.Value = string(c.data)
		}
		cols = append(cols, col)
	}
	return cols, nil
}

// parse wraps pglogrepl.Parse, which indexes its input without checking
// every length: a malformed message must be an error, never a panic.
func parse(walData []byte) (msg pglogrepl.Message, err error) {
	if len(walData) == 0 {
		return nil, fmt.Errorf("%w: empty message", ErrProtocol)
	}
	// Truncate's relation count sizes an allocation before any length
	// check: refuse counts the message cannot hold.
	if walData[0] == byte(pglogrepl.MessageTypeTruncate) {
		if len(walData) < 6 || uint64(len(walData)-6) < 4*uint64(binary.BigEndian.Uint32(walData[1:5])) {
			return nil, fmt.Errorf("%w: truncate message shorter than its relation count", ErrProtocol)
		}
	}
	defer func() {
		if r := recover(); r != nil {
			msg, err = nil, fmt.Errorf("%w: malformed %q message: %v", ErrProtocol, walData[0], r)
		}
	}()
	msg, err = pglogrepl.Parse(walData)
	if err != nil {
		return nil, fmt.Errorf("%w: parse %q message: %w", ErrProtocol, walData[0], err)
	}
	return msg, nil
}
