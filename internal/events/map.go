package events

import (
	"fmt"
	"strconv"
	"time"
)

// Event is one wire event, ready to send.
type Event struct {
	Position   Position
	ProjectID  string
	Type       string
	CommitTime time.Time
	// Payload is the JSON frame, marshaled once for every subscriber.
	Payload []byte
	// Revoke is set on every event of a change that takes access away; the
	// users it names get one subscription_revoked at Revoke.At instead of
	// the change's events.
	Revoke *Revocation
	// AllProjects marks a TRUNCATE of a watched table: no row ids exist, so
	// every project is told to resync at Position. Payload is nil and
	// ProjectID empty.
	AllProjects bool
}

// Revocation takes a project away from one user or from everyone.
type Revocation struct {
	// UserID is the user who lost access; empty means every subscriber.
	UserID string
	// Reason is "member_removed" or "project_deleted".
	Reason string
	// At is the position of the change's last event, where the revocation
	// takes effect.
	At Position
}

// Revocation reasons.
const (
	ReasonMemberRemoved  = "member_removed"
	ReasonProjectDeleted = "project_deleted"
)

// Event types the mapper itself emits.
const (
	TypeCacheInvalidate = "cache_invalidate"
	TypeResyncRequired  = "resync_required"
)

type resolved struct {
	table     *Table
	ch        *Change
	projectID string
	coalesce  bool
}

// Map turns a committed transaction into its events, in commit order,
// appended to dst. Changes to unmapped tables are ignored; a change whose
// project cannot be resolved is left out and reported in problems, so one
// malformed row never stops the stream.
func (m *Mapper) Map(txn *Txn, dst []Event) (events []Event, problems []error) {
	rs := make([]resolved, 0, len(txn.Changes))
	for i := range txn.Changes {
		ch := &txn.Changes[i]
		t, ok := m.tables[ch.Schema+"."+ch.Table]
		if !ok {
			continue
		}
		r := resolved{table: t, ch: ch}
		if ch.Action != Truncate {
			pid, err := t.projectOf(ch)
			if err != nil {
				problems = append(problems, fmt.Errorf("%s %s in txn %d: %w", t.QualifiedName(), ch.Action, txn.Xid, err))
				continue
			}
			r.projectID = pid
		}
		rs = append(rs, r)
	}
	if m.bulk > 0 {
		m.markBulk(rs)
	}

	ts := appendTime(make([]byte, 0, 32), txn.CommitTime)
	var idx uint32
	next := func() Position {
		p := Position{LSN: txn.CommitLSN, Index: idx}
		idx++
		return p
	}
	bulkSent := map[[2]string]bool(nil)
	for i := range rs {
		r := &rs[i]
		t, ch := r.table, r.ch
		base := Event{ProjectID: r.projectID, CommitTime: txn.CommitTime}
		switch {
		case ch.Action == Truncate:
			base.AllProjects = true
			base.Type = TypeResyncRequired
			base.Position = next()
			dst = append(dst, base)
			continue
		case r.coalesce:
			key := [2]string{r.projectID, t.Resource}
			if bulkSent[key] {
				continue
			}
			if bulkSent == nil {
				bulkSent = make(map[[2]string]bool)
			}
			bulkSent[key] = true
			ev := base
			ev.Type = TypeCacheInvalidate
			ev.Position = next()
			ev.Payload = appendInvalidate(make([]byte, 0, 192), t.Resource, "", "BULK", r.projectID, ts, ev.Position)
			dst = append(dst, ev)
			continue
		}

		row := ch.New
		if ch.Action == Delete {
			row = ch.Old
		}
		id, _ := Lookup(row, t.idColumn())
		if id == nil && ch.Action == Update {
			id, _ = Lookup(ch.Old, t.idColumn())
		}
		inv := base
		inv.Type = TypeCacheInvalidate
		inv.Position = next()
		inv.Payload = appendInvalidate(make([]byte, 0, 256), t.Resource, textOf(id), ch.Action.String(), r.projectID, ts, inv.Position)
		first := len(dst)
		dst = append(dst, inv)

		if name := t.domainEvent(ch.Action); name != "" {
			ev := base
			ev.Type = name
			ev.Position = next()
			ev.Payload = m.appendDomain(make([]byte, 0, 192+rowSize(ch)), name, r.projectID, ts, ev.Position, ch)
			dst = append(dst, ev)
		}

		if rev := t.revocation(ch); rev != nil {
			rev.At = dst[len(dst)-1].Position
			for j := first; j < len(dst); j++ {
				dst[j].Revoke = rev
			}
		}
	}
	return dst, problems
}

// markBulk flags the coalescable changes of every project the transaction
// touches more than m.bulk times. Membership and project deletions are never
// coalesced: their revocations must happen at their own positions.
func (m *Mapper) markBulk(rs []resolved) {
	if len(rs) <= m.bulk {
		return
	}
	counts := make(map[string]int)
	for i := range rs {
		if rs[i].coalescable() {
			counts[rs[i].projectID]++
		}
	}
	for i := range rs {
		if rs[i].coalescable() && counts[rs[i].projectID] > m.bulk {
			rs[i].coalesce = true
		}
	}
}

func (r *resolved) coalescable() bool {
	if r.ch.Action == Truncate || r.table.UserIDColumn != "" {
		return false
	}
	return !(r.table.RevokesProject && r.ch.Action == Delete)
}

func (t *Table) domainEvent(a Action) string {
	switch a {
	case Insert:
		return t.OnInsert
	case Update:
		return t.OnUpdate
	case Delete:
		return t.OnDelete
	}
	return ""
}

func (t *Table) revocation(ch *Change) *Revocation {
	if ch.Action != Delete {
		return nil
	}
	if t.RevokesProject {
		return &Revocation{Reason: ReasonProjectDeleted}
	}
	if t.UserIDColumn != "" {
		if uid, ok := Lookup(ch.Old, t.UserIDColumn); ok && uid != nil {
			return &Revocation{UserID: textOf(uid), Reason: ReasonMemberRemoved}
		}
	}
	return nil
}

func (t *Table) projectOf(ch *Change) (string, error) {
	var v any
	var ok bool
	if ch.Action != Delete {
		v, ok = Lookup(ch.New, t.ProjectIDColumn)
	}
	if !ok {
		v, ok = Lookup(ch.Old, t.ProjectIDColumn)
	}
	if !ok || v == nil {
		return "", fmt.Errorf("%w (column %s; is the replica identity FULL?)", ErrNoProject, t.ProjectIDColumn)
	}
	return textOf(v), nil
}

// textOf renders an id-like value as the string the protocol sends.
func textOf(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	case []byte:
		return string(x)
	}
	return fmt.Sprint(v)
}

// rowSize estimates the JSON size of a change's row, to size its buffer once.
func rowSize(ch *Change) int {
	row := ch.New
	if ch.Action == Delete {
		row = ch.Old
	}
	n := 2
	for i := range row {
		n += len(row[i].Name) + 8
		switch v := row[i].Value.(type) {
		case string:
			n += len(v) + len(v)/8
		case []byte:
			n += len(v)
		default:
			n += 32
		}
	}
	return n
}
