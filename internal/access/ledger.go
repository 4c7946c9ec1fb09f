package access

import (
	"cmp"
	"slices"
	"time"
)

// Kind is what a transition did to access.
type Kind uint8

// Transition kinds.
const (
	// Granted: a membership row for the pair appeared (INSERT, or an
	// UPDATE that re-pointed a row to the pair).
	Granted Kind = iota + 1
	// Removed: the rows that gave access are gone (DELETE, an UPDATE that
	// re-pointed the row elsewhere, TRUNCATE, the project deleted).
	Removed
	// Unknown: walcast could not tell whose access a change ended (an
	// unmappable row, a table missing from the publication) and revoked
	// every subscription it might concern.
	Unknown
)

func (k Kind) String() string {
	switch k {
	case Granted:
		return "granted"
	case Removed:
		return "removed"
	case Unknown:
		return "unknown"
	}
	return "none"
}

// Transition is a change of access the stream brought.
type Transition struct {
	// Seq orders transitions as the ledger recorded them; 0 means none.
	Seq  uint64
	Kind Kind
	// Xid is the transaction that made the change, or 0 when the source
	// does not say (the NOTIFY source hears of a change only once it is
	// visible, so a lookup begun after it was recorded sees it).
	Xid uint32
	at  time.Time
}

type pair struct{ project, user string }

// Ledger remembers recent access transitions of every (project, user)
// pair, of every project and of everything, so a membership lookup can be
// checked against what the stream has already said. Every transition a
// lookup might not see yet is kept (a newer one never hides an older
// one); the newest of each key is kept for AccessKeep besides. It is not
// safe for concurrent use: the hub guards it with the lock under which it
// publishes the same transitions to subscribers, so that a subscription
// registered before a transition is revoked by it and one registered
// after it is checked against it.
type Ledger struct {
	pairs    map[pair][]Transition
	projects map[string][]Transition
	all      []Transition
	n        int
	seq      uint64
	// horizon is the newest snapshot a lookup returned: transactions it
	// shows settled are visible to every later lookup.
	horizon Snapshot
	keep    time.Duration
	max     int
}

// NewLedger returns a ledger that keeps the newest transition of each key
// at least keep, and every transition until every later lookup must see
// it. Past max entries, the pairs' and projects' unsettled transitions are
// folded into transitions of everything, one per transaction (so what
// stays is bounded by the transactions committing at once).
func NewLedger(keep time.Duration, max int) *Ledger {
	return &Ledger{pairs: make(map[pair][]Transition), projects: make(map[string][]Transition), keep: keep, max: max}
}

// Record notes a transition of user's access to project; an empty user
// means every user of the project, an empty project every project.
func (l *Ledger) Record(project, user string, k Kind, xid uint32, now time.Time) {
	l.seq++
	t := Transition{Seq: l.seq, Kind: k, Xid: xid, at: now}
	l.n++
	switch {
	case project == "":
		l.all = append(l.all, t)
	case user == "":
		l.projects[project] = append(l.projects[project], t)
	default:
		k := pair{project, user}
		l.pairs[k] = append(l.pairs[k], t)
	}
}

// Seq is the sequence number of the newest transition.
func (l *Ledger) Seq() uint64 { return l.seq }

// Concerning appends to dst every remembered transition that concerns
// user's access to project.
func (l *Ledger) Concerning(project, user string, dst []Transition) []Transition {
	dst = append(dst, l.all...)
	dst = append(dst, l.projects[project]...)
	return append(dst, l.pairs[pair{project, user}]...)
}

// Newest is the newest remembered transition that concerns user's access
// to project.
func (l *Ledger) Newest(project, user string) Transition {
	var t Transition
	for _, list := range [][]Transition{l.all, l.projects[project], l.pairs[pair{project, user}]} {
		if len(list) > 0 && list[len(list)-1].Seq > t.Seq {
			t = list[len(list)-1]
		}
	}
	return t
}

// Observe keeps the newest snapshot a lookup returned, for Prune.
func (l *Ledger) Observe(s *Snapshot) {
	if s != nil && s.Xmin > l.horizon.Xmin {
		l.horizon = *s
	}
}

// Len is the number of remembered transitions.
func (l *Ledger) Len() int { return l.n }

// settled reports whether every later lookup sees t.
func (l *Ledger) settled(t Transition) bool {
	return t.Xid == 0 || (l.horizon.Xmax != 0 && l.horizon.Settled(t.Xid))
}

// prune keeps of list the unsettled transitions, and the newest while
// younger than keep.
func (l *Ledger) prune(list []Transition, now time.Time) []Transition {
	kept := list[:0]
	for i, t := range list {
		newest := i == len(list)-1
		if !l.settled(t) || (newest && now.Sub(t.at) < l.keep) {
			kept = append(kept, t)
		}
	}
	clear(list[len(kept):])
	l.n -= len(list) - len(kept)
	return kept
}

// Prune forgets what no later lookup needs; past the bound, it folds the
// pairs' and projects' unsettled transitions into transitions of
// everything, one per transaction, of kind Unknown: a lookup must then see
// that transaction, whoever it concerns.
func (l *Ledger) Prune(now time.Time) {
	for k, list := range l.pairs {
		if list = l.prune(list, now); len(list) == 0 {
			delete(l.pairs, k)
		} else {
			l.pairs[k] = list
		}
	}
	for k, list := range l.projects {
		if list = l.prune(list, now); len(list) == 0 {
			delete(l.projects, k)
		} else {
			l.projects[k] = list
		}
	}
	l.all = l.prune(l.all, now)
	if l.n <= l.max {
		return
	}
	folded := make(map[uint32]Transition)
	fold := func(list []Transition) {
		for _, t := range list {
			if f, ok := folded[t.Xid]; !ok || t.Seq > f.Seq {
				folded[t.Xid] = Transition{Seq: t.Seq, Kind: Unknown, Xid: t.Xid, at: t.at}
			}
		}
		l.n -= len(list)
	}
	for k, list := range l.pairs {
		fold(list)
		delete(l.pairs, k)
	}
	for k, list := range l.projects {
		fold(list)
		delete(l.projects, k)
	}
	for _, t := range folded {
		l.all = append(l.all, t)
		l.n++
	}
	slices.SortFunc(l.all, func(a, b Transition) int { return cmp.Compare(a.Seq, b.Seq) })
}
