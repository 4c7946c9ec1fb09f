package events

import "encoding/json"

// Retain adds ch to txn as the WAL decoder reads it, keeping what a
// transaction holds bounded by configuration (Options.MaxTxnRows and
// MaxTxnBytes), not by its size. While a transaction is small every change
// is kept and Map decides coalescing as always. Once it holds more than
// MaxTxnRows coalescable changes, or more than MaxTxnBytes, it is
// summarized: each coalescable change shrinks to
// a marker per (project, table), which Map turns into that project's BULK
// invalidation at the marker's place, and the rows are let go; past
// MaxTxnRows markers, one resync_required for every project stands for the
// rest. Changes that end or grant access are never coalesced (they revoke
// at their own positions); past MaxTxnRows of them, one conservative
// revocation of every subscription stands for the rest.
func (m *Mapper) Retain(txn *Txn, ch Change) {
	if ch.Action == Message {
		m.retainMessage(txn, ch)
		return
	}
	t, ok := m.tables[ch.Schema+"."+ch.Table]
	if !ok || m.maxRows <= 0 {
		txn.Changes = append(txn.Changes, ch)
		return
	}
	s := &txn.summary
	if !t.coalescable(&ch) {
		switch {
		case s.accessCut:
		case s.access < m.maxRows && s.bytes <= m.maxBytes:
			s.access++
			s.bytes += changeBytes(&ch)
			txn.Changes = append(txn.Changes, ch)
		default:
			// One conservative revocation of everything stands for the
			// rest, whatever this change's table: a membership change
			// with no row, in which resolve finds no project. (A stand-in
			// of a table that grants no access would only resync, and
			// the memberships ended later in the transaction would go
			// unrevoked.)
			s.accessCut = true
			txn.Changes = append(txn.Changes, m.accessStandIn(ch))
		}
		return
	}
	if !s.summarized {
		txn.Changes = append(txn.Changes, ch)
		s.bytes += changeBytes(&ch)
		if s.rows++; s.rows <= m.maxRows && s.bytes <= m.maxBytes {
			return
		}
		m.summarize(txn)
		return
	}
	m.mark(txn, t, &ch)
}

// summary is the state of a transaction Retain is bounding.
type summary struct {
	rows       int // coalescable changes kept whole
	bytes      int // what the changes kept whole hold, about
	access     int // changes that grant or end access kept
	summarized bool
	markers    map[[2]string]bool // (project, table) with a marker
	everyone   bool               // the resync of every project is in
	accessCut  bool               // the revocation of everything is in
	published  int                // published messages kept
	overflow   bool               // published messages past the bound were let go
	gapKept    bool               // a gap marker is in
}

// retainMessage keeps a logical decoding message. A published event over
// MaxPublishBytes keeps only its place (Map reports it refused); past
// MaxTxnRows published events, or MaxTxnBytes in all, the rest are let go
// and one resync of every project stands for them (none of them can be
// delivered, and their projects are not known without keeping them).
func (m *Mapper) retainMessage(txn *Txn, ch Change) {
	s := &txn.summary
	if ch.Prefix == GapPrefix {
		// One marker does all a transaction's markers would: keep the
		// first genuine one only (anyone can write messages).
		if pub, ok := ParseGapMarker(m.gapKey, ch.Content); ok && pub == m.pub && !s.gapKept {
			s.gapKept = true
			txn.Changes = append(txn.Changes, ch)
		}
		return
	}
	if ch.Prefix != m.publish || m.publish == "" {
		return // another application's
	}
	switch {
	case s.overflow:
		return
	case len(ch.Content) > m.maxPublish:
		ch.Content, ch.Dropped = nil, true
	case m.maxRows > 0 && (s.published >= m.maxRows || s.bytes+len(ch.Content) > m.maxBytes):
		s.overflow = true
		txn.Changes = append(txn.Changes, Change{Action: Message, Prefix: m.publish, Bulk: true})
		return
	}
	s.published++
	s.bytes += 64 + len(ch.Content)
	txn.Changes = append(txn.Changes, ch)
}

// summarize turns the coalescable changes kept so far into markers.
func (m *Mapper) summarize(txn *Txn) {
	s := &txn.summary
	s.summarized = true
	s.markers = make(map[[2]string]bool)
	kept := txn.Changes
	txn.Changes = make([]Change, 0, 64)
	for i := range kept {
		ch := &kept[i]
		t := m.tables[ch.Schema+"."+ch.Table]
		if t == nil || !t.coalescable(ch) {
			txn.Changes = append(txn.Changes, *ch)
			continue
		}
		m.mark(txn, t, ch)
	}
	clear(kept)
}

// mark records ch as markers for the projects it concerns.
func (m *Mapper) mark(txn *Txn, t *Table, ch *Change) {
	s := &txn.summary
	if s.everyone {
		return
	}
	rs, _ := t.resolve(ch, nil)
	for _, r := range rs {
		if r.everyone {
			// Not mappable: it already tells every project to resync.
			s.everyone = true
			txn.Changes = append(txn.Changes, Change{Schema: ch.Schema, Table: ch.Table, Action: Truncate})
			return
		}
		key := [2]string{r.projectID, t.QualifiedName()}
		if s.markers[key] {
			continue
		}
		if len(s.markers) >= m.maxRows {
			s.everyone = true
			txn.Changes = append(txn.Changes, Change{Schema: ch.Schema, Table: ch.Table, Action: Truncate})
			return
		}
		s.markers[key] = true
		txn.Changes = append(txn.Changes, Change{Schema: ch.Schema, Table: ch.Table, Action: Insert, Bulk: true,
			New: []Column{{Name: t.ProjectIDColumn, Value: r.projectID}}})
	}
}

// coalescable reports whether ch may become a BULK invalidation: it
// neither grants nor ends access.
func (t *Table) coalescable(ch *Change) bool {
	switch {
	case ch.Action == Truncate || t.UserIDColumn != "":
		return false
	case t.RevokesProject && ch.Action == Delete:
		return false
	case t.RevokesProject && ch.Action == Update:
		moved, err := t.moved(ch) // a project whose id changes is deleted
		return err == nil && !moved
	}
	return true
}

// changeBytes estimates what a kept change holds: its values and a little
// per column.
func changeBytes(ch *Change) int {
	n := 64
	for _, row := range [2][]Column{ch.New, ch.Old} {
		for i := range row {
			n += 32 + len(row[i].Name)
			switch v := row[i].Value.(type) {
			case string:
				n += len(v)
			case []byte:
				n += len(v)
			case Numeric:
				n += len(v)
			case json.RawMessage:
				n += len(v)
			}
		}
	}
	return n
}

// accessStandIn is a change that Map turns into a conservative revocation
// of every subscription: a DELETE of the membership table carrying no row.
func (m *Mapper) accessStandIn(ch Change) Change {
	for _, t := range m.tables {
		if t.UserIDColumn != "" {
			return Change{Schema: t.schema(), Table: t.Name, Action: Delete}
		}
	}
	return Change{Schema: ch.Schema, Table: ch.Table, Action: Delete}
}
