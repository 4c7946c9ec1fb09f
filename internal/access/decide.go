package access

import "errors"

// ErrUnsettled is returned when every membership answer within the wait
// was older than an access change already streamed: the check fails
// closed and the client may try again.
var ErrUnsettled = errors.New("membership is changing; try again")

// Proof is what a membership lookup found, and when.
type Proof struct {
	Member bool
	// Snapshot is the lookup's MVCC snapshot, taken by the same statement
	// that read the membership; nil when the source has none.
	Snapshot *Snapshot
	// Fresh is false for an answer from a cache.
	Fresh bool
	// After is the ledger's Seq when the lookup began: a transition
	// without a transaction id recorded by then is one it sees.
	After uint64
}

// Sees reports whether the lookup's answer already reflects t.
func (p Proof) Sees(t Transition) bool {
	if t.Xid == 0 {
		return p.Fresh && t.Seq <= p.After
	}
	return p.Snapshot != nil && p.Snapshot.Sees(t.Xid)
}

// Verdict is the outcome of Decide.
type Verdict uint8

// Verdicts.
const (
	Deny Verdict = iota
	Allow
	// Retry: the answer is older than what the stream has said; ask the
	// database again (soon the commit is visible, or the stream catches up).
	Retry
)

func (v Verdict) String() string {
	switch v {
	case Allow:
		return "allow"
	case Retry:
		return "retry"
	}
	return "deny"
}

// Purpose says what a decision is for.
type Purpose uint8

// Purposes.
const (
	// ForSubscribe: the subscription goes live at the hub's position, so
	// the stream must have reached the grant the lookup saw.
	ForSubscribe Purpose = iota
	// ForRead: the request reads committed state through the database, so
	// a visible grant is enough.
	ForRead
)

// Decide judges a lookup against ts, every remembered transition that
// concerns the same user and project (Ledger.Concerning). Never is a
// lookup older than a transition it races allowed to grant access:
//
//   - it does not see one of them (its commit was streamed but is not
//     visible yet, or came while the lookup ran): an unseen removal is
//     final (Deny: it is committed); anything else unseen is asked again;
//   - it sees them all and says "not a member": Deny;
//   - it sees them all, says "member", and the newest removed access: the
//     row that grants it is newer than the removal and the stream has not
//     brought it yet. A read may go on (the database already shows it); a
//     subscription waits for the stream, or it would receive the events
//     between the removal and the grant.
func Decide(ts []Transition, p Proof, purpose Purpose) Verdict {
	var newest Transition
	unseenRemoval, unseen := false, false
	for _, t := range ts {
		if t.Seq > newest.Seq {
			newest = t
		}
		if !p.Sees(t) {
			unseen = true
			unseenRemoval = unseenRemoval || t.Kind == Removed
		}
	}
	switch {
	case unseen && !p.Fresh:
		return Retry // a cached answer: ask the database
	case unseenRemoval:
		return Deny
	case unseen:
		return Retry
	case !p.Member:
		return Deny
	case purpose == ForSubscribe && newest.Kind == Removed && newest.Xid != 0:
		return Retry
	}
	return Allow
}
