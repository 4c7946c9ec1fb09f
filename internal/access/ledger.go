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

// Ledger remembers, for a bounded time, the newest access transition of
// every (project, user) pair, of every project and of everything, so a
// membership lookup can be checked against what the stream has already
// said. It is not safe for concurrent use: the hub guards it with the lock
// under which it publishes the same transitions to subscribers, so that a
// subscription registered before a transition is revoked by it and one
// registered after it is checked against it.
type Ledger struct {
	pairs    map[pair]Transition
	projects map[string]Transition
	all      Transition
	seq      uint64
	// horizon is the newest snapshot a lookup returned: transactions it
	// shows settled are visible to every later lookup.
	horizon Snapshot
	keep    time.Duration
	max     int
}

// NewLedger returns a ledger that keeps a transition at least keep, and
// until every later lookup must see it; past max entries it drops settled
// ones first, then the oldest.
func NewLedger(keep time.Duration, max int) *Ledger {
	return &Ledger{pairs: make(map[pair]Transition), projects: make(map[string]Transition), keep: keep, max: max}
}

func (l *Ledger) next(k Kind, xid uint32, now time.Time) Transition {
	l.seq++
	return Transition{Seq: l.seq, Kind: k, Xid: xid, at: now}
}

// Record notes a transition of user's access to project; an empty user
// means every user of the project, an empty project every project.
func (l *Ledger) Record(project, user string, k Kind, xid uint32, now time.Time) {
	t := l.next(k, xid, now)
	switch {
	case project == "":
		l.all = t
	case user == "":
		l.projects[project] = t
	default:
		l.pairs[pair{project, user}] = t
	}
}

// Seq is the sequence number of the newest transition.
func (l *Ledger) Seq() uint64 { return l.seq }

// Latest is the newest transition that concerns user's access to project.
func (l *Ledger) Latest(project, user string) Transition {
	t := l.all
	if p, ok := l.projects[project]; ok && p.Seq > t.Seq {
		t = p
	}
	if p, ok := l.pairs[pair{project, user}]; ok && p.Seq > t.Seq {
		t = p
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
func (l *Ledger) Len() int {
	n := len(l.pairs) + len(l.projects)
	if l.all.Seq != 0 {
		n++
	}
	return n
}

// Prune forgets transitions older than the keep time that every later
// lookup is known to see, and, past the size bound, settled ones of any
// age and then the oldest. A transition whose commit may still be
// invisible is kept however old it is, unless the bound forces it out.
func (l *Ledger) Prune(now time.Time) {
	settled := func(t Transition) bool {
		return t.Xid == 0 || (l.horizon.Xmax != 0 && l.horizon.Settled(t.Xid))
	}
	old := func(t Transition) bool { return now.Sub(t.at) >= l.keep && settled(t) }
	over := l.Len() > l.max
	for k, t := range l.pairs {
		if old(t) || (over && settled(t)) {
			delete(l.pairs, k)
		}
	}
	for k, t := range l.projects {
		if old(t) || (over && settled(t)) {
			delete(l.projects, k)
		}
	}
	if l.all.Seq != 0 && (old(l.all) || (over && settled(l.all))) {
		l.all = Transition{}
	}
	if excess := l.Len() - l.max; excess > 0 && len(l.pairs) > 0 {
		keys := make([]pair, 0, len(l.pairs))
		for k := range l.pairs {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b pair) int { return cmp.Compare(l.pairs[a].Seq, l.pairs[b].Seq) })
		for _, k := range keys[:min(excess, len(keys))] {
			delete(l.pairs, k)
		}
	}
}
