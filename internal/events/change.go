package events

import "time"

// Action is the kind of a row change.
type Action uint8

// Row change kinds as they appear in the WAL.
const (
	Insert Action = iota + 1
	Update
	Delete
	Truncate
	// Message is a logical decoding message written inside a transaction
	// with pg_logical_emit_message (Change.Prefix, Change.Content).
	Message
)

// String returns the action as the protocol spells it ("INSERT", ...).
func (a Action) String() string {
	switch a {
	case Insert:
		return "INSERT"
	case Update:
		return "UPDATE"
	case Delete:
		return "DELETE"
	case Truncate:
		return "TRUNCATE"
	case Message:
		return "MESSAGE"
	}
	return "UNKNOWN"
}

// Column is one column of a row as the WAL carried it.
//
// Value holds one of: nil (SQL NULL), bool, int64, float64, string,
// json.RawMessage (json and jsonb, inline), Numeric (a finite numeric) or
// time.Time (timestamptz, in UTC). Other column types arrive as their text.
type Column struct {
	Name  string
	Value any
	// Unchanged marks a value WAL did not carry: an unchanged TOASTed column
	// of an UPDATE's new row.
	Unchanged bool
}

// Change is one row change of a committed transaction.
type Change struct {
	Schema string
	Table  string
	Action Action
	// New is the new row (INSERT, UPDATE); nil for DELETE and TRUNCATE.
	New []Column
	// Old is the old row as far as the table's replica identity carries it
	// (DELETE, and UPDATE when the identity is FULL or its key changed).
	Old []Column
	// Identity names the columns of the table's replica identity as the
	// stream's Relation message flags them (every column for FULL); nil
	// when unknown. An UPDATE without Old left these columns unchanged.
	Identity []string
	// Bulk marks a change Retain kept in place of coalesced rows: it only
	// names the project, and maps to that project's BULK invalidation. On
	// a published Message it stands for those Retain let go past the
	// transaction's bound: every project resyncs.
	Bulk bool
	// Prefix and Content are a Message's.
	Prefix  string
	Content []byte
	// Dropped marks a published Message whose content Retain let go: it
	// was over the size bound, and Map reports it refused.
	Dropped bool
}

// Txn is one committed transaction: its changes to the watched tables in
// WAL order.
type Txn struct {
	Xid uint32
	// CommitLSN is the LSN of the commit record; positions derive from it.
	CommitLSN uint64
	// EndLSN is the LSN just past the commit record: what the slot may be
	// confirmed to once the transaction's events are safe.
	EndLSN     uint64
	CommitTime time.Time
	Changes    []Change
	// summary bounds what Retain keeps of a large transaction.
	summary summary
}

// Lookup returns the value of the named column in cols and whether it was
// carried.
func Lookup(cols []Column, name string) (any, bool) {
	for i := range cols {
		if cols[i].Name == name {
			if cols[i].Unchanged {
				return nil, false
			}
			return cols[i].Value, true
		}
	}
	return nil, false
}

// Numeric is a finite numeric's exact digits, sent as a JSON number (or,
// with Options.NumbersAsStrings, a string): a float64 would round it.
type Numeric string
