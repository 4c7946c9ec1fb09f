package events

import (
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/walcast/walcast/publish"
)

// Event is one wire event, ready to send.
type Event struct {
	Position   Position
	ProjectID  string
	Type       string
	CommitTime time.Time
	// Xid is the transaction's id: a membership lookup must see it before
	// it may grant access this event changed (package access).
	Xid uint32
	// Payload is the JSON frame, marshaled once for every subscriber.
	Payload []byte
	// Revoke is set on every event of a change that takes access away; the
	// users it names get one subscription_revoked at Revoke.At instead of
	// the change's events.
	Revoke *Revocation
	// Grant names the user a membership row now gives ProjectID to; set on
	// the last event of the change.
	Grant string
	// Published marks an event published by the application (package
	// publish): Type is the application's.
	Published bool
	// AllProjects marks an event for every project: a TRUNCATE, or a
	// change walcast could not map. Without Revoke every project is told to
	// resync at Position; with it every subscription is revoked there.
	// Payload is nil and ProjectID empty.
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
	// Conservative marks a revocation made because walcast could not tell
	// whose access the change ended (it fails closed).
	Conservative bool
}

// Revocation reasons.
const (
	ReasonMemberRemoved  = "member_removed"
	ReasonProjectDeleted = "project_deleted"
)

// Frame types walcast itself sends (docs/protocol.md): the mapper's, and
// the hub's and the socket's own.
const (
	TypeCacheInvalidate     = "cache_invalidate"
	TypeResyncRequired      = "resync_required"
	TypeSubscriptionRevoked = "subscription_revoked"
	TypeSubscribed          = "subscribed"
	TypeStreamDown          = "stream_down"
	TypeStreamUp            = "stream_up"
	TypeError               = "error"
	// TypePublished is not sent: it is the metric label of every event
	// the application published, whatever its type.
	TypePublished = "published"
)

// resolved is one change as it reaches subscribers: a row that moved to
// another project (or, in the membership table, to another user) becomes
// two, its removal from the old place and its arrival in the new one.
type resolved struct {
	table     *Table
	ch        *Change
	projectID string
	coalesce  bool
	// everyone: the change concerns every project (a TRUNCATE, a row
	// whose project cannot be known, a gap marker: table is nil).
	everyone bool
	// unsure: walcast cannot tell whose access the change ended; it
	// revokes conservatively.
	unsure bool
	// published is an event the application published (ch a Message).
	published *publish.Message
}

// Map turns a committed transaction into its events, in commit order,
// appended to dst. Changes to unmapped tables are ignored. A change that
// cannot be mapped is reported in problems and fails closed: a change to a
// table that grants access revokes every subscription it might concern,
// any other tells every project to resync. One malformed row never stops
// the stream, and never goes unsignalled.
func (m *Mapper) Map(txn *Txn, dst []Event) (events []Event, problems []error) {
	rs := make([]resolved, 0, len(txn.Changes))
	for i := range txn.Changes {
		ch := &txn.Changes[i]
		if ch.Action == Message {
			switch {
			case ch.Prefix == GapPrefix:
				if pub, ok := ParseGapMarker(m.gapKey, ch.Content); ok && pub == m.pub {
					rs = append(rs, resolved{ch: ch, everyone: true})
				}
			case ch.Prefix == m.publish && m.publish != "" && ch.Bulk:
				// Retain's stand-in for the published events it let go.
				problems = append(problems, &PublishRefused{Reason: RefusedOverflow, Err: fmt.Errorf("over the transaction's bound in txn %d: every project resyncs", txn.Xid)})
				rs = append(rs, resolved{ch: ch, everyone: true})
			case ch.Prefix == m.publish && m.publish != "":
				msg, err := m.parsePublished(ch)
				if err != nil {
					problems = append(problems, err)
					continue
				}
				rs = append(rs, resolved{ch: ch, projectID: msg.ProjectID, published: &msg})
			}
			continue
		}
		t, ok := m.tables[ch.Schema+"."+ch.Table]
		if !ok {
			continue
		}
		n := len(rs)
		var err error
		if rs, err = t.resolve(ch, rs); err != nil {
			problems = append(problems, fmt.Errorf("%s %s in txn %d: %w", t.QualifiedName(), ch.Action, txn.Xid, err))
		}
		if ch.Bulk {
			for k := n; k < len(rs); k++ {
				rs[k].coalesce = true
			}
		}
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
		base := Event{ProjectID: r.projectID, CommitTime: txn.CommitTime, Xid: txn.Xid}
		switch {
		case r.published != nil:
			ev := base
			ev.Type, ev.Published = r.published.Type, true
			ev.Position = next()
			ev.Payload = appendPublished(make([]byte, 0, 128+len(r.published.Data)), r.published, ts, ev.Position)
			dst = append(dst, ev)
			continue
		case r.everyone:
			base.AllProjects = true
			base.ProjectID = ""
			base.Position = next()
			base.Type = TypeResyncRequired
			if t != nil && t.GrantsAccess() {
				reason := ReasonMemberRemoved
				if t.RevokesProject {
					reason = ReasonProjectDeleted
				}
				base.Type = TypeSubscriptionRevoked
				base.Revoke = &Revocation{Reason: reason, At: base.Position, Conservative: r.unsure}
			}
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

		if rev := t.revocation(ch, r.unsure); rev != nil {
			rev.At = dst[len(dst)-1].Position
			for j := first; j < len(dst); j++ {
				dst[j].Revoke = rev
			}
		}
		if ch.Action == Insert && t.UserIDColumn != "" {
			if uid, ok := Lookup(ch.New, t.UserIDColumn); ok && uid != nil {
				dst[len(dst)-1].Grant = textOf(uid)
			}
		}
	}
	return dst, problems
}

// resolve appends what ch becomes to rs. A row whose project is NULL
// belongs to no project and reaches no one. A change whose project (or,
// for the membership table, user) is not carried at all is appended as
// one for every project, and reported.
func (t *Table) resolve(ch *Change, rs []resolved) ([]resolved, error) {
	if ch.Action == Truncate {
		return append(rs, resolved{table: t, ch: ch, everyone: true}), nil
	}
	unmappable := func(err error) ([]resolved, error) {
		return append(rs, resolved{table: t, ch: ch, everyone: true, unsure: true}), err
	}
	if ch.Action != Update {
		row := ch.New
		if ch.Action == Delete {
			row = ch.Old
		}
		pid, err := t.projectIn(row)
		switch {
		case err != nil:
			return unmappable(err)
		case pid == "":
			return rs, nil
		}
		r := resolved{table: t, ch: ch, projectID: pid}
		if ch.Action == Delete && t.UserIDColumn != "" {
			if _, err := t.userIn(row); err != nil {
				// The project is known, the user is not: the whole
				// project is revoked.
				r.unsure = true
				return append(rs, r), err
			}
		}
		return append(rs, r), nil
	}

	pid, err := t.projectIn(ch.New)
	if err != nil {
		// An unchanged TOASTed project id: the old row has it.
		if pid, err = t.projectIn(ch.Old); err != nil {
			return unmappable(err)
		}
	}
	moved, err := t.moved(ch)
	if err != nil {
		if t.GrantsAccess() {
			return unmappable(err)
		}
		// Whether the row left another project cannot be known: the
		// project it is in now is told as always, and every project
		// resyncs (the one it may have left among them).
		if pid != "" {
			rs = append(rs, resolved{table: t, ch: ch, projectID: pid})
		}
		return append(rs, resolved{table: t, ch: ch, everyone: true, unsure: true}), err
	}
	if !moved {
		if pid == "" {
			return rs, nil
		}
		return append(rs, resolved{table: t, ch: ch, projectID: pid}), nil
	}
	// The row left its old project (or its old user): that place sees it
	// deleted, the new one sees it arrive.
	if oldPid, _ := t.projectIn(ch.Old); oldPid != "" {
		gone := &Change{Schema: ch.Schema, Table: ch.Table, Action: Delete, Old: ch.Old, Identity: ch.Identity}
		rs = append(rs, resolved{table: t, ch: gone, projectID: oldPid})
	}
	if pid != "" {
		arrived := ch
		if t.UserIDColumn != "" {
			arrived = &Change{Schema: ch.Schema, Table: ch.Table, Action: Insert, New: ch.New, Old: ch.Old, Identity: ch.Identity}
		}
		rs = append(rs, resolved{table: t, ch: arrived, projectID: pid})
	}
	return rs, nil
}

// moved reports whether an UPDATE took the row out of its old project or,
// in the membership table, from its old user. Without an old row, the
// replica identity says: columns it covers did not change (PostgreSQL
// sends the old key whenever they do); columns it does not cover might
// have.
func (t *Table) moved(ch *Change) (bool, error) {
	keys := []string{t.ProjectIDColumn}
	if t.UserIDColumn != "" {
		keys = append(keys, t.UserIDColumn)
	}
	for _, k := range keys {
		oldV, ok := Lookup(ch.Old, k)
		if !ok {
			if !slices.Contains(ch.Identity, k) {
				return false, fmt.Errorf("%w: an UPDATE without the old %s (the replica identity does not cover it)", ErrUnmappable, k)
			}
			continue
		}
		newV, ok := Lookup(ch.New, k)
		if !ok {
			continue // unchanged TOAST: the old value stands
		}
		if (oldV == nil) != (newV == nil) || textOf(oldV) != textOf(newV) {
			return true, nil
		}
	}
	return false, nil
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
	// A published event is never coalesced: it is not a row to refetch.
	if r.everyone || r.published != nil || r.table.UserIDColumn != "" {
		return false
	}
	return !(r.table.RevokesProject && r.ch.Action == Delete)
}

// GrantsAccess reports whether rows of t decide who sees a project: the
// membership table and the project table.
func (t Table) GrantsAccess() bool { return t.UserIDColumn != "" || t.RevokesProject }

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

// revocation is what a DELETE of a project or a membership takes away;
// unsure makes it the whole project's, when the user is not known.
func (t *Table) revocation(ch *Change, unsure bool) *Revocation {
	if ch.Action != Delete {
		return nil
	}
	if t.RevokesProject {
		return &Revocation{Reason: ReasonProjectDeleted}
	}
	if t.UserIDColumn != "" {
		if uid, err := t.userIn(ch.Old); err == nil && !unsure {
			return &Revocation{UserID: uid, Reason: ReasonMemberRemoved}
		}
		return &Revocation{Reason: ReasonMemberRemoved, Conservative: true}
	}
	return nil
}

// projectIn returns the row's project id, "" for NULL, or an error when
// the row does not carry the column.
func (t *Table) projectIn(row []Column) (string, error) {
	v, ok := Lookup(row, t.ProjectIDColumn)
	if !ok {
		return "", fmt.Errorf("%w (column %s; is the replica identity FULL?)", ErrNoProject, t.ProjectIDColumn)
	}
	return textOf(v), nil
}

func (t *Table) userIn(row []Column) (string, error) {
	v, ok := Lookup(row, t.UserIDColumn)
	if !ok || v == nil {
		return "", fmt.Errorf("%w: column %s not carried (is the replica identity FULL?)", ErrUnmappable, t.UserIDColumn)
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
