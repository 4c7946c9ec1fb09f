package access

import (
	"testing"
	"time"
)

func TestParseSnapshot(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Snapshot
		bad  bool
	}{
		{in: "10:20:", want: Snapshot{Xmin: 10, Xmax: 20}},
		{in: "10:20:12,15", want: Snapshot{Xmin: 10, Xmax: 20, InProgress: []uint64{12, 15}}},
		{in: "4294967300:4294967310:4294967305", want: Snapshot{Xmin: 4294967300, Xmax: 4294967310, InProgress: []uint64{4294967305}}},
		{in: "", bad: true},
		{in: "10:20", bad: true},
		{in: "20:10:", bad: true},
		{in: "10:20:25", bad: true},
		{in: "10:20:x", bad: true},
		{in: "-1:20:", bad: true},
	} {
		got, err := ParseSnapshot(tc.in)
		if (err != nil) != tc.bad {
			t.Fatalf("%q: err %v", tc.in, err)
		}
		if tc.bad {
			continue
		}
		if got.Xmin != tc.want.Xmin || got.Xmax != tc.want.Xmax || len(got.InProgress) != len(tc.want.InProgress) {
			t.Fatalf("%q: got %+v", tc.in, got)
		}
	}
}

func FuzzParseSnapshot(f *testing.F) {
	for _, s := range []string{"10:20:", "10:20:12,15", "1:1:", "4294967300:4294967310:4294967305", "::", "1:2:3,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		snap, err := ParseSnapshot(s)
		if err != nil {
			return
		}
		// Whatever parsed must answer without panicking and agree with
		// itself: a settled id is visible.
		for _, x := range []uint32{0, 1, uint32(snap.Xmin), uint32(snap.Xmax), uint32(snap.Xmax) - 1} {
			if snap.Settled(x) && !snap.Sees(x) {
				t.Fatalf("%q: %d settled but not seen", s, x)
			}
		}
	})
}

func TestSnapshotSees(t *testing.T) {
	epoch := uint64(1) << 32
	for _, tc := range []struct {
		name          string
		snap          Snapshot
		xid           uint32
		sees, settled bool
	}{
		{"finished before xmin", Snapshot{Xmin: 100, Xmax: 110}, 99, true, true},
		{"finished between, not running", Snapshot{Xmin: 100, Xmax: 110, InProgress: []uint64{105}}, 104, true, false},
		{"still running (streamed, not visible)", Snapshot{Xmin: 100, Xmax: 110, InProgress: []uint64{105}}, 105, false, false},
		{"xmin itself is running", Snapshot{Xmin: 100, Xmax: 110, InProgress: []uint64{100}}, 100, false, false},
		{"at xmax: began after the snapshot", Snapshot{Xmin: 100, Xmax: 110}, 110, false, false},
		{"after xmax", Snapshot{Xmin: 100, Xmax: 110}, 200, false, false},
		{"across the 32-bit wrap", Snapshot{Xmin: epoch + 5, Xmax: epoch + 10}, 4294967290, true, true},
		{"running across the wrap", Snapshot{Xmin: epoch - 10, Xmax: epoch + 10, InProgress: []uint64{epoch - 3}}, 4294967293, false, false},
		{"future across the wrap", Snapshot{Xmin: epoch - 10, Xmax: epoch - 5}, 3, false, false},
		{"before any id existed", Snapshot{Xmin: 3, Xmax: 5}, 4294967000, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.snap.Sees(tc.xid); got != tc.sees {
				t.Fatalf("Sees(%d) = %v", tc.xid, got)
			}
			if got := tc.snap.Settled(tc.xid); got != tc.settled {
				t.Fatalf("Settled(%d) = %v", tc.xid, got)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	seen := &Snapshot{Xmin: 100, Xmax: 200}                              // sees xid 150
	unseen := &Snapshot{Xmin: 100, Xmax: 200, InProgress: []uint64{150}} // 150 still running
	removed := Transition{Seq: 7, Kind: Removed, Xid: 150}
	granted := Transition{Seq: 7, Kind: Granted, Xid: 150}
	unknown := Transition{Seq: 7, Kind: Unknown, Xid: 150}
	notified := Transition{Seq: 7, Kind: Removed} // NOTIFY source: no xid
	for _, tc := range []struct {
		name    string
		t       Transition
		p       Proof
		purpose Purpose
		want    Verdict
	}{
		{"no transition, member", Transition{}, Proof{Member: true, Snapshot: seen, Fresh: true}, ForSubscribe, Allow},
		{"no transition, not a member", Transition{}, Proof{Snapshot: seen, Fresh: true}, ForSubscribe, Deny},
		{"removal streamed, not visible: the race", removed, Proof{Member: true, Snapshot: unseen, Fresh: true}, ForSubscribe, Deny},
		{"removal streamed, not visible, REST", removed, Proof{Member: true, Snapshot: unseen, Fresh: true}, ForRead, Deny},
		{"removal visible", removed, Proof{Snapshot: seen, Fresh: true}, ForSubscribe, Deny},
		{"removal visible, re-added, not streamed: subscribe waits", removed, Proof{Member: true, Snapshot: seen, Fresh: true}, ForSubscribe, Retry},
		{"removal visible, re-added: REST reads committed state", removed, Proof{Member: true, Snapshot: seen, Fresh: true}, ForRead, Allow},
		{"cached answer older than a removal", removed, Proof{Member: true, Snapshot: unseen}, ForSubscribe, Retry},
		{"cached answer without snapshot", removed, Proof{Member: true}, ForSubscribe, Retry},
		{"grant not visible yet", granted, Proof{Snapshot: unseen, Fresh: true}, ForSubscribe, Retry},
		{"grant visible", granted, Proof{Member: true, Snapshot: seen, Fresh: true}, ForSubscribe, Allow},
		{"grant visible, removed since", granted, Proof{Snapshot: seen, Fresh: true}, ForSubscribe, Deny},
		{"fail-closed revocation not visible", unknown, Proof{Member: true, Snapshot: unseen, Fresh: true}, ForSubscribe, Retry},
		{"fail-closed revocation visible, still a member", unknown, Proof{Member: true, Snapshot: seen, Fresh: true}, ForSubscribe, Allow},
		{"notify removal before the lookup began", notified, Proof{Member: true, Fresh: true, After: 7}, ForSubscribe, Allow},
		{"notify removal during the lookup", notified, Proof{Member: true, Fresh: true, After: 6}, ForSubscribe, Deny},
		{"notify removal, cached answer", notified, Proof{Member: true, After: 9}, ForSubscribe, Retry},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ts []Transition
			if tc.t.Seq != 0 {
				ts = append(ts, tc.t)
			}
			if got := Decide(ts, tc.p, tc.purpose); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestDecideAgainstEveryTransition: a newer transition the lookup sees
// never hides an older one it does not (a removal held invisible by a
// synchronous standby, then a fail-closed revocation of everything that is
// visible at once).
func TestDecideAgainstEveryTransition(t *testing.T) {
	snap := &Snapshot{Xmin: 100, Xmax: 200, InProgress: []uint64{150}} // 150 running
	held := Transition{Seq: 1, Kind: Removed, Xid: 150}
	for _, tc := range []struct {
		name string
		ts   []Transition
		want Verdict
	}{
		{"held removal, then a visible revocation of everything", []Transition{held, {Seq: 2, Kind: Unknown, Xid: 160}}, Deny},
		{"held removal, then a visible re-grant", []Transition{held, {Seq: 2, Kind: Granted, Xid: 161}}, Deny},
		{"held grant, then a visible removal", []Transition{{Seq: 1, Kind: Granted, Xid: 150}, {Seq: 2, Kind: Removed, Xid: 161}}, Retry},
		{"all seen, newest a grant", []Transition{{Seq: 1, Kind: Removed, Xid: 120}, {Seq: 2, Kind: Granted, Xid: 161}}, Allow},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Decide(tc.ts, Proof{Member: true, Fresh: true, Snapshot: snap}, ForSubscribe); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestLedgerKeepsWhatALookupMightNotSee(t *testing.T) {
	now := time.Unix(1000, 0)
	l := NewLedger(time.Minute, 100)
	l.Record("p", "u", Removed, 150, now)
	l.Record("p", "v", Granted, 151, now)
	l.Record("p", "", Removed, 152, now)
	l.Record("p", "u", Granted, 153, now)
	l.Record("", "", Unknown, 154, now)
	l.Record("", "", Unknown, 155, now)
	if got := l.Newest("p", "u"); got.Xid != 155 || got.Seq != l.Seq() {
		t.Fatalf("newest %+v", got)
	}
	if got := l.Concerning("p", "u", nil); len(got) != 5 {
		t.Fatalf("concerning p/u: %+v", got)
	}
	if got := l.Concerning("q", "w", nil); len(got) != 2 {
		t.Fatalf("concerning q/w: %+v", got)
	}

	// Nothing is forgotten while its commit may be invisible to a lookup.
	l.Prune(now.Add(time.Hour))
	if l.Len() != 6 {
		t.Fatalf("pruned without a horizon: %d left", l.Len())
	}
	// A lookup shows up to 152 settled: settled entries go, except the
	// newest of each key while younger than keep.
	l.Observe(&Snapshot{Xmin: 153, Xmax: 160})
	l.Prune(now.Add(30 * time.Second))
	if got := l.Concerning("p", "u", nil); len(got) != 4 { // all: 154, 155; project: 152; pair: 153
		t.Fatalf("after an early prune: %+v", got)
	}
	l.Prune(now.Add(time.Hour))
	if got := l.Concerning("p", "u", nil); len(got) != 3 || l.Len() != 3 {
		t.Fatalf("after prune: %d left, %+v", l.Len(), got)
	}
}

// TestLedgerFoldsPastItsBound: one transaction that grants or removes
// more memberships than the bound is folded into one transition of
// everything; nothing a lookup might not see is lost.
func TestLedgerFoldsPastItsBound(t *testing.T) {
	now := time.Unix(1000, 0)
	l := NewLedger(time.Minute, 10)
	l.Observe(&Snapshot{Xmin: 100, Xmax: 300, InProgress: []uint64{150, 200}})
	l.Record("p", "bob", Removed, 150, now) // held invisible
	for i := range 60 {
		l.Record("q", string(rune('a'+i)), Granted, 200, now) // one import, running
	}
	l.Prune(now.Add(time.Hour))
	if l.Len() != 2 {
		t.Fatalf("%d left, want one per transaction", l.Len())
	}
	got := l.Concerning("p", "bob", nil)
	if len(got) != 2 || Decide(got, Proof{Member: true, Fresh: true, Snapshot: &Snapshot{Xmin: 100, Xmax: 300, InProgress: []uint64{150}}}, ForSubscribe) != Retry {
		t.Fatalf("bob's held removal was lost: %+v", got)
	}
}
