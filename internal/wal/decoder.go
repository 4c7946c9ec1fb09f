package wal

import (
	"encoding/binary"
	"errors"
	"fmt"

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
}

type relation struct {
	schema, table string
	watched       bool
	columns       []relColumn
}

// Decoder assembles pgoutput messages (protocol version 1) into committed
// transactions. It holds the relation cache of one replication connection:
// make a new Decoder for every connection, since the server resends
// relations on each.
//
// A Decoder is not safe for concurrent use.
type Decoder struct {
	watch     func(schema, table string) bool
	relations map[uint32]*relation
	types     *pgtype.Map
	txn       *events.Txn
}

// NewDecoder returns a Decoder that keeps the changes of tables for which
// watch returns true and drops the rest.
func NewDecoder(watch func(schema, table string) bool) *Decoder {
	return &Decoder{watch: watch, relations: make(map[uint32]*relation), types: pgtype.NewMap()}
}

// Decode consumes the payload of one XLogData message. It returns the
// transaction when the message is its Commit, and nil otherwise.
func (d *Decoder) Decode(walData []byte) (*events.Txn, error) {
	msg, err := parse(walData)
	if err != nil {
		return nil, err
	}
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		rel := &relation{schema: m.Namespace, table: m.RelationName, columns: make([]relColumn, len(m.Columns))}
		rel.watched = d.watch(rel.schema, rel.table)
		for i, c := range m.Columns {
			rel.columns[i] = relColumn{name: c.Name, oid: c.DataType}
		}
		d.relations[m.RelationID] = rel
	case *pglogrepl.BeginMessage:
		if d.txn != nil {
			return nil, fmt.Errorf("%w: begin of xid %d inside xid %d", ErrProtocol, m.Xid, d.txn.Xid)
		}
		d.txn = &events.Txn{Xid: m.Xid, CommitLSN: uint64(m.FinalLSN), CommitTime: m.CommitTime.UTC()}
	case *pglogrepl.CommitMessage:
		if d.txn == nil {
			return nil, fmt.Errorf("%w: commit at %s outside a transaction", ErrProtocol, m.CommitLSN)
		}
		txn := d.txn
		d.txn = nil
		txn.CommitLSN = uint64(m.CommitLSN)
		txn.EndLSN = uint64(m.TransactionEndLSN)
		txn.CommitTime = m.CommitTime.UTC()
		return txn, nil
	case *pglogrepl.InsertMessage:
		return nil, d.change(m.RelationID, events.Insert, m.Tuple, nil)
	case *pglogrepl.UpdateMessage:
		return nil, d.change(m.RelationID, events.Update, m.NewTuple, m.OldTuple)
	case *pglogrepl.DeleteMessage:
		return nil, d.change(m.RelationID, events.Delete, nil, m.OldTuple)
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
				d.txn.Changes = append(d.txn.Changes, events.Change{Schema: rel.schema, Table: rel.table, Action: events.Truncate})
			}
		}
	}
	// Type, Origin and logical decoding messages carry nothing walcast serves.
	return nil, nil
}

// InTransaction reports whether a Begin has been seen without its Commit.
func (d *Decoder) InTransaction() bool { return d.txn != nil }

func (d *Decoder) change(relID uint32, action events.Action, newTuple, oldTuple *pglogrepl.TupleData) error {
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
	ch := events.Change{Schema: rel.schema, Table: rel.table, Action: action}
	var err error
	if ch.New, err = d.row(rel, newTuple); err != nil {
		return fmt.Errorf("%s %s.%s new row: %w", action, rel.schema, rel.table, err)
	}
	if ch.Old, err = d.row(rel, oldTuple); err != nil {
		return fmt.Errorf("%s %s.%s old row: %w", action, rel.schema, rel.table, err)
	}
	if action != events.Delete && ch.New == nil {
		return fmt.Errorf("%w: %s on %s.%s without a new row", ErrProtocol, action, rel.schema, rel.table)
	}
	d.txn.Changes = append(d.txn.Changes, ch)
	return nil
}

func (d *Decoder) row(rel *relation, tuple *pglogrepl.TupleData) ([]events.Column, error) {
	if tuple == nil {
		return nil, nil
	}
	if len(tuple.Columns) > len(rel.columns) {
		return nil, fmt.Errorf("%w: tuple has %d columns, relation %d", ErrProtocol, len(tuple.Columns), len(rel.columns))
	}
	cols := make([]events.Column, 0, len(tuple.Columns))
	for i, c := range tuple.Columns {
		rc := rel.columns[i]
		col := events.Column{Name: rc.name}
		switch c.DataType {
		case pglogrepl.TupleDataTypeNull:
		case pglogrepl.TupleDataTypeToast:
			col.Unchanged = true
		case pglogrepl.TupleDataTypeText:
			col.Value = decodeText(d.types, rc.oid, c.Data)
		case pglogrepl.TupleDataTypeBinary:
			// walcast never asks for binary; a value in it is kept as bytes' text.
			col.Value = string(c.Data)
		default:
			return nil, fmt.Errorf("%w: column %s has tuple type %q", ErrProtocol, rc.name, c.DataType)
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
