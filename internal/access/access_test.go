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
			if got := Decide(tc.t, tc.p, tc.purpose); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestLedgerLatestAndPrune(t *testing.T) {
	now := time.Unix(1000, 0)
	l := NewLedger(time.Minute, 4)
	l.Record("p", "u", Removed, 150, now)
	l.Record("p", "v", Granted, 151, now)
	if got := l.Latest("p", "u"); got.Kind != Removed || got.Xid != 150 {
		t.Fatalf("pair: %+v", got)
	}
	l.Record("p", "", Removed, 152, now)
	if got := l.Latest("p", "u"); got.Xid != 152 {
		t.Fatalf("project removal is newer: %+v", got)
	}
	l.Record("p", "u", Granted, 153, now)
	if got := l.Latest("p", "u"); got.Kind != Granted {
		t.Fatalf("re-grant is newer: %+v", got)
	}
	l.Record("", "", Unknown, 154, now)
	if got := l.Latest("q", "w"); got.Kind != Unknown {
		t.Fatalf("global: %+v", got)
	}
	if got := l.Latest("q", "w"); got.Seq != l.Seq() {
		t.Fatalf("seq %d vs %d", got.Seq, l.Seq())
	}

	// Nothing is forgotten while its commit may be invisible to a lookup.
	l.Prune(now.Add(time.Hour))
	if l.Len() != 4 {
		t.Fatalf("pruned without a horizon: %d left", l.Len())
	}
	// A lookup shows 150..152 settled: old and settled entries go.
	l.Observe(&Snapshot{Xmin: 153, Xmax: 160})
	l.Prune(now.Add(30 * time.Second))
	if l.Len() != 4 {
		t.Fatalf("pruned before keep: %d left", l.Len())
	}
	l.Prune(now.Add(time.Hour))
	if _, kept := l.pairs[pair{"p", "v"}]; l.Len() != 2 || kept || l.pairs[pair{"p", "u"}].Kind != Granted || l.Latest("q", "w").Kind != Unknown {
		t.Fatalf("after prune: %d left", l.Len())
	}
	// Past the bound, settled entries go first whatever their age, then
	// the oldest.
	l = NewLedger(time.Hour, 2)
	l.Observe(&Snapshot{Xmin: 100, Xmax: 300, InProgress: []uint64{200}})
	l.Record("p", "a", Removed, 200, now) // running: kept
	l.Record("p", "b", Removed, 50, now)  // settled
	l.Record("p", "c", Removed, 60, now)  // settled
	l.Prune(now)
	if l.Len() != 1 || l.Latest("p", "a").Seq == 0 {
		t.Fatalf("bound: %d left", l.Len())
	}
}
