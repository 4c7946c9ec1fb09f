package events

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

const (
	pid  = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
	pid2 = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
	uid  = "11111111-1111-4111-8111-111111111111"
	rid  = "cccccccc-cccc-4ccc-8ccc-cccccccccccc"
)

var commit = time.Date(2026, 11, 26, 16, 42, 0, 123456000, time.UTC)

func mapper(t *testing.T, bulk int) *Mapper {
	t.Helper()
	m, err := NewMapper(Options{Tables: DefaultTables(), BulkThreshold: bulk})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func cols(kv ...any) []Column {
	var out []Column
	for i := 0; i < len(kv); i += 2 {
		out = append(out, Column{Name: kv[i].(string), Value: kv[i+1]})
	}
	return out
}

func decode(t *testing.T, ev Event) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(ev.Payload, &m); err != nil {
		t.Fatalf("payload %s: %v", ev.Payload, err)
	}
	return m
}

func TestMapEveryTableAndAction(t *testing.T) {
	m := mapper(t, 0)
	cases := []struct {
		name     string
		ch       Change
		resource string
		action   string
		domain   string
		revoke   *Revocation
	}{
		{"message insert", Change{Table: "messages", Action: Insert, New: cols("id", rid, "project_id", pid, "content", "hi")}, "message", "INSERT", "message_created", nil},
		{"message update", Change{Table: "messages", Action: Update, New: cols("id", rid, "project_id", pid)}, "message", "UPDATE", "", nil},
		{"message delete", Change{Table: "messages", Action: Delete, Old: cols("id", rid, "project_id", pid)}, "message", "DELETE", "", nil},
		{"task insert", Change{Table: "tasks", Action: Insert, New: cols("id", rid, "project_id", pid)}, "task", "INSERT", "task_created", nil},
		{"task update", Change{Table: "tasks", Action: Update, New: cols("id", rid, "project_id", pid)}, "task", "UPDATE", "task_updated", nil},
		{"task delete", Change{Table: "tasks", Action: Delete, Old: cols("id", rid, "project_id", pid)}, "task", "DELETE", "task_deleted", nil},
		{"sprint insert", Change{Table: "sprints", Action: Insert, New: cols("id", rid, "project_id", pid)}, "sprint", "INSERT", "sprint_created", nil},
		{"sprint update", Change{Table: "sprints", Action: Update, New: cols("id", rid, "project_id", pid)}, "sprint", "UPDATE", "sprint_updated", nil},
		{"sprint delete", Change{Table: "sprints", Action: Delete, Old: cols("id", rid, "project_id", pid)}, "sprint", "DELETE", "sprint_deleted", nil},
		{"project insert", Change{Table: "projects", Action: Insert, New: cols("id", pid)}, "project", "INSERT", "", nil},
		{"project update", Change{Table: "projects", Action: Update, New: cols("id", pid)}, "project", "UPDATE", "project_updated", nil},
		{"project delete", Change{Table: "projects", Action: Delete, Old: cols("id", pid)}, "project", "DELETE", "", &Revocation{Reason: ReasonProjectDeleted}},
		{"member insert", Change{Table: "project_members", Action: Insert, New: cols("id", rid, "project_id", pid, "user_id", uid)}, "project_members", "INSERT", "member_added", nil},
		{"member update", Change{Table: "project_members", Action: Update, New: cols("id", rid, "project_id", pid, "user_id", uid)}, "project_members", "UPDATE", "", nil},
		{"member delete", Change{Table: "project_members", Action: Delete, Old: cols("id", rid, "project_id", pid, "user_id", uid)}, "project_members", "DELETE", "member_removed", &Revocation{UserID: uid, Reason: ReasonMemberRemoved}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.ch.Schema = "public"
			if c.ch.Action == Update {
				// As a replica identity FULL flags every column.
				for _, col := range c.ch.New {
					c.ch.Identity = append(c.ch.Identity, col.Name)
				}
			}
			txn := &Txn{CommitLSN: 0x100, CommitTime: commit, Changes: []Change{c.ch}}
			evs, problems := m.Map(txn, nil)
			if len(problems) > 0 {
				t.Fatal(problems)
			}
			want := 1
			if c.domain != "" {
				want = 2
			}
			if len(evs) != want {
				t.Fatalf("%d events, want %d", len(evs), want)
			}
			inv := decode(t, evs[0])
			id := rid
			if c.resource == "project" {
				id = pid
			}
			if inv["type"] != "cache_invalidate" || inv["resource"] != c.resource || inv["action"] != c.action ||
				inv["project_id"] != pid || inv["id"] != id || inv["timestamp"] != "2026-11-26T16:42:00.123456Z" ||
				inv["position"] != "0000000000000100/00000000" {
				t.Fatalf("cache_invalidate = %s", evs[0].Payload)
			}
			if want == 2 {
				d := decode(t, evs[1])
				if d["type"] != c.domain || d["project_id"] != pid || d["position"] != "0000000000000100/00000001" || d["data"] == nil {
					t.Fatalf("domain = %s", evs[1].Payload)
				}
			}
			last := evs[len(evs)-1]
			switch {
			case c.revoke == nil:
				for _, ev := range evs {
					if ev.Revoke != nil {
						t.Fatalf("unexpected revocation %+v", ev.Revoke)
					}
				}
			default:
				for _, ev := range evs {
					if ev.Revoke == nil || ev.Revoke.UserID != c.revoke.UserID || ev.Revoke.Reason != c.revoke.Reason || ev.Revoke.At != last.Position {
						t.Fatalf("revocation %+v, want %+v at %s", ev.Revoke, c.revoke, last.Position)
					}
				}
			}
		})
	}
}

func TestMapDataValues(t *testing.T) {
	m := mapper(t, 0)
	ch := Change{Schema: "public", Table: "tasks", Action: Update,
		New: []Column{
			{Name: "id", Value: rid},
			{Name: "project_id", Value: pid},
			{Name: "story_points", Value: int64(5)},
			{Name: "done", Value: true},
			{Name: "ratio", Value: 0.25},
			{Name: "nan", Value: math.NaN()},
			{Name: "big", Value: json.RawMessage("12345678901234567890.5")},
			{Name: "meta", Value: json.RawMessage(`{"a":[1,2]}`)},
			{Name: "description", Value: nil},
			{Name: "created_at", Value: commit},
			{Name: "start_date", Value: "2026-12-01"},
			{Name: "title", Value: "quote \" backslash \\ newline \n tab \t nul \x00 bad \xff line \u2028"},
			{Name: "toast_carried", Unchanged: true},
			{Name: "toast_missing", Unchanged: true},
		},
		Old: cols("id", rid, "toast_carried", "from old row"),
	}
	evs, _ := m.Map(&Txn{CommitLSN: 1, CommitTime: commit, Changes: []Change{ch}}, nil)
	d := decode(t, evs[1])["data"].(map[string]any)
	want := map[string]any{
		"id": rid, "projectId": pid, "storyPoints": float64(5), "done": true, "ratio": 0.25, "nan": "NaN",
		"big": 12345678901234567890.5, "meta": map[string]any{"a": []any{float64(1), float64(2)}},
		"description": nil, "createdAt": "2026-11-26T16:42:00.123456Z", "startDate": "2026-12-01",
		"title":        "quote \" backslash \\ newline \n tab \t nul \x00 bad \ufffd line \u2028",
		"toastCarried": "from old row",
	}
	for k, v := range want {
		got, ok := d[k]
		if !ok {
			t.Errorf("data lacks %s", k)
			continue
		}
		if gb, _ := json.Marshal(got); string(gb) != string(mustJSON(v)) {
			t.Errorf("%s = %s, want %s", k, gb, mustJSON(v))
		}
	}
	if _, ok := d["toastMissing"]; ok {
		t.Error("an unchanged TOAST value the old row lacks must be left out, not sent as null")
	}
	if len(d) != len(want) {
		t.Errorf("data has %d keys, want %d: %v", len(d), len(want), d)
	}
	if !strings.Contains(string(evs[1].Payload), `\u2028`) {
		t.Error("U+2028 must be escaped")
	}
}

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

func TestMapOrderAndPositionsAcrossChanges(t *testing.T) {
	m := mapper(t, 0)
	txn := &Txn{CommitLSN: 0xABC, CommitTime: commit, Changes: []Change{
		{Schema: "public", Table: "messages", Action: Insert, New: cols("id", "m1", "project_id", pid)},
		{Schema: "public", Table: "users", Action: Insert, New: cols("id", uid)}, // unmapped table
		{Schema: "public", Table: "messages", Action: Insert, New: cols("id", "m2", "project_id", pid2)},
		{Schema: "other", Table: "messages", Action: Insert, New: cols("id", "m3", "project_id", pid)}, // other schema
	}}
	evs, problems := m.Map(txn, nil)
	if len(problems) != 0 || len(evs) != 4 {
		t.Fatalf("%d events, problems %v", len(evs), problems)
	}
	for i, ev := range evs {
		if ev.Position != (Position{LSN: 0xABC, Index: uint32(i)}) {
			t.Errorf("event %d at %s", i, ev.Position)
		}
	}
	if evs[0].ProjectID != pid || evs[2].ProjectID != pid2 {
		t.Error("project ids")
	}
}

// TestMapUnmappableChangeFailsClosed: a change whose project (or, for
// the membership table, user) the stream does not carry is never dropped
// silently: a table that grants access revokes everything it might
// concern, any other tells every project to resync. A NULL project is no
// project: nobody is told.
func TestMapUnmappableChangeFailsClosed(t *testing.T) {
	m := mapper(t, 0)
	for _, tc := range []struct {
		name     string
		ch       Change
		problems int
		want     []string // type:project:revoke
	}{
		{"message delete without project", Change{Table: "messages", Action: Delete, Old: cols("id", rid)}, 1,
			[]string{"resync_required:*:"}},
		{"message with NULL project", Change{Table: "messages", Action: Insert, New: cols("id", rid, "project_id", nil)}, 0, nil},
		{"member delete without project (identity DEFAULT)", Change{Table: "project_members", Action: Delete, Old: cols("id", rid)}, 1,
			[]string{"subscription_revoked:*:all/member_removed/conservative"}},
		{"member delete without user", Change{Table: "project_members", Action: Delete, Old: cols("id", rid, "project_id", pid)}, 1,
			[]string{"cache_invalidate:a:all/member_removed/conservative", "member_removed:a:all/member_removed/conservative"}},
		{"member delete, user column renamed", Change{Table: "project_members", Action: Delete, Old: cols("id", rid, "project_id", pid, "member_id", uid)}, 1,
			[]string{"cache_invalidate:a:all/member_removed/conservative", "member_removed:a:all/member_removed/conservative"}},
		{"member update, identity does not cover the pair", Change{Table: "project_members", Action: Update, New: cols("id", rid, "project_id", pid, "user_id", uid), Identity: []string{"id"}}, 1,
			[]string{"subscription_revoked:*:all/member_removed/conservative"}},
		{"member update, identity covers the pair", Change{Table: "project_members", Action: Update, New: cols("id", rid, "project_id", pid, "user_id", uid), Identity: []string{"project_id", "user_id"}}, 0,
			[]string{"cache_invalidate:a:"}},
		{"project delete without id", Change{Table: "projects", Action: Delete, Old: cols("name", "x")}, 1,
			[]string{"subscription_revoked:*:all/project_deleted/conservative"}},
		// It may have left another project: every project resyncs.
		{"task update without old row, identity without project", Change{Table: "tasks", Action: Update, New: cols("id", rid, "project_id", pid), Identity: []string{"id"}}, 1,
			[]string{"cache_invalidate:a:", "task_updated:a:", "resync_required:*:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.ch.Schema = "public"
			evs, problems := m.Map(&Txn{CommitLSN: 1, CommitTime: commit, Changes: []Change{tc.ch}}, nil)
			if len(problems) != tc.problems {
				t.Fatalf("problems %v", problems)
			}
			if got := describe(evs); strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Fatalf("events %v, want %v", got, tc.want)
			}
		})
	}
}

// describe renders events as type:project:revocation for comparison; the
// project is its first letter ("*" for all).
func describe(evs []Event) []string {
	var out []string
	for _, ev := range evs {
		p := "*"
		if !ev.AllProjects {
			p = ev.ProjectID[:1]
		}
		r := ""
		if ev.Revoke != nil {
			who := ev.Revoke.UserID
			if who == "" {
				who = "all"
			} else {
				who = who[:1]
			}
			r = who + "/" + ev.Revoke.Reason
			if ev.Revoke.Conservative {
				r += "/conservative"
			}
		}
		if ev.Grant != "" {
			r += "+" + ev.Grant[:1]
		}
		out = append(out, ev.Type+":"+p+":"+r)
	}
	return out
}

// TestMapTruncate: a TRUNCATE of a table that grants access revokes every
// subscription (the rows are gone); of any other table, every project
// resyncs.
func TestMapTruncate(t *testing.T) {
	m := mapper(t, 0)
	evs, problems := m.Map(&Txn{CommitLSN: 1, CommitTime: commit, Xid: 42, Changes: []Change{
		{Schema: "public", Table: "messages", Action: Truncate},
		{Schema: "public", Table: "project_members", Action: Truncate},
		{Schema: "public", Table: "projects", Action: Truncate},
	}}, nil)
	if len(problems) != 0 {
		t.Fatal(problems)
	}
	want := "resync_required:*: subscription_revoked:*:all/member_removed subscription_revoked:*:all/project_deleted"
	if got := strings.Join(describe(evs), " "); got != want {
		t.Fatalf("got %s", got)
	}
	for i, ev := range evs {
		if ev.Xid != 42 || ev.Position.Index != uint32(i) || (ev.Revoke != nil && ev.Revoke.At != ev.Position) {
			t.Fatalf("event %d: %+v", i, ev)
		}
	}
}

// TestMapRowThatChangesProjectOrUser: an UPDATE that re-points a row is a
// removal from its old place and an arrival in the new one: both projects'
// subscribers hear of it, and a re-pointed membership revokes the old user
// and grants the new one.
func TestMapRowThatChangesProjectOrUser(t *testing.T) {
	uid2 := "22222222-2222-4222-8222-222222222222"
	for _, tc := range []struct {
		name string
		ch   Change
		want []string
	}{
		{"task moved", Change{Table: "tasks", Action: Update,
			Old: cols("id", rid, "project_id", pid, "title", "t"), New: cols("id", rid, "project_id", pid2, "title", "t")},
			[]string{"cache_invalidate:a:", "task_deleted:a:", "cache_invalidate:b:", "task_updated:b:"}},
		{"task not moved", Change{Table: "tasks", Action: Update,
			Old: cols("id", rid, "project_id", pid, "title", "t"), New: cols("id", rid, "project_id", pid, "title", "u")},
			[]string{"cache_invalidate:a:", "task_updated:a:"}},
		{"sprint moved", Change{Table: "sprints", Action: Update,
			Old: cols("id", rid, "project_id", pid), New: cols("id", rid, "project_id", pid2)},
			[]string{"cache_invalidate:a:", "sprint_deleted:a:", "cache_invalidate:b:", "sprint_updated:b:"}},
		{"membership to another user", Change{Table: "project_members", Action: Update,
			Old: cols("id", rid, "project_id", pid, "user_id", uid), New: cols("id", rid, "project_id", pid, "user_id", uid2)},
			[]string{"cache_invalidate:a:1/member_removed", "member_removed:a:1/member_removed", "cache_invalidate:a:", "member_added:a:+2"}},
		{"membership to another project", Change{Table: "project_members", Action: Update,
			Old: cols("id", rid, "project_id", pid, "user_id", uid), New: cols("id", rid, "project_id", pid2, "user_id", uid)},
			[]string{"cache_invalidate:a:1/member_removed", "member_removed:a:1/member_removed", "cache_invalidate:b:", "member_added:b:+1"}},
		{"membership role changed", Change{Table: "project_members", Action: Update,
			Old: cols("id", rid, "project_id", pid, "user_id", uid, "role", "member"), New: cols("id", rid, "project_id", pid, "user_id", uid, "role", "owner")},
			[]string{"cache_invalidate:a:"}},
		{"project id changed", Change{Table: "projects", Action: Update,
			Old: cols("id", pid, "name", "x"), New: cols("id", pid2, "name", "x")},
			[]string{"cache_invalidate:a:all/project_deleted", "cache_invalidate:b:", "project_updated:b:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, bulk := range []int{0, 1000} {
				tc.ch.Schema = "public"
				evs, problems := mapper(t, bulk).Map(&Txn{CommitLSN: 1, CommitTime: commit, Changes: []Change{tc.ch}}, nil)
				if len(problems) != 0 {
					t.Fatal(problems)
				}
				if got := describe(evs); strings.Join(got, " ") != strings.Join(tc.want, " ") {
					t.Fatalf("bulk %d: events %v, want %v", bulk, got, tc.want)
				}
			}
		})
	}
	// Coalesced, a moved row still reaches both projects.
	var changes []Change
	for i := 0; i < 3; i++ {
		changes = append(changes, Change{Schema: "public", Table: "tasks", Action: Update,
			Old: cols("id", rid, "project_id", pid), New: cols("id", rid, "project_id", pid2)})
	}
	evs, _ := mapper(t, 2).Map(&Txn{CommitLSN: 1, CommitTime: commit, Changes: changes}, nil)
	if got := strings.Join(describe(evs), " "); got != "cache_invalidate:a: cache_invalidate:b:" {
		t.Fatalf("coalesced move: %s", got)
	}
}

// TestMapGapMarkers: a gap marker of the stream's publication tells every
// project to resync at its position among the transaction's events;
// another publication's marker, or another prefix, is not walcast's.
func TestMapGapMarkers(t *testing.T) {
	key := GapKey([]byte("the deployment's secret"))
	m, err := NewMapper(Options{Tables: DefaultTables(), Publication: "walcast_pub", GapKey: key})
	if err != nil {
		t.Fatal(err)
	}
	forged := GapMarker(GapKey([]byte("guessed")), "walcast_pub", "x")
	for _, tc := range []struct {
		name   string
		prefix string
		body   []byte
		want   string
	}{
		{"ours", GapPrefix, GapMarker(key, "walcast_pub", "table back"), "cache_invalidate:a: message_created:a: resync_required:*:"},
		{"another deployment's", GapPrefix, GapMarker(key, "other_pub", "table back"), "cache_invalidate:a: message_created:a:"},
		{"another prefix", "app", GapMarker(key, "walcast_pub", "x"), "cache_invalidate:a: message_created:a:"},
		{"forged from SQL", GapPrefix, forged, "cache_invalidate:a: message_created:a:"},
		{"unsigned", GapPrefix, []byte(`{"publication":"walcast_pub","reason":"x"}`), "cache_invalidate:a: message_created:a:"},
		{"oversized", GapPrefix, []byte(`{"publication":"walcast_pub","reason":"` + strings.Repeat("x", 2000) + `"}`), "cache_invalidate:a: message_created:a:"},
		{"not JSON", GapPrefix, []byte("{"), "cache_invalidate:a: message_created:a:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs, problems := m.Map(&Txn{CommitLSN: 1, CommitTime: commit, Changes: []Change{
				{Schema: "public", Table: "messages", Action: Insert, New: cols("id", rid, "project_id", pid)},
				{Action: Message, Prefix: tc.prefix, Content: tc.body},
			}}, nil)
			if len(problems) != 0 {
				t.Fatal(problems)
			}
			if got := strings.Join(describe(evs), " "); got != tc.want {
				t.Fatalf("events %s, want %s", got, tc.want)
			}
		})
	}
}

func TestMapBulkCoalescing(t *testing.T) {
	m := mapper(t, 3)
	var changes []Change
	for i := 0; i < 5; i++ { // 5 messages of pid: over the threshold
		changes = append(changes, Change{Schema: "public", Table: "messages", Action: Insert, New: cols("id", "m", "project_id", pid)})
	}
	changes = append(changes,
		Change{Schema: "public", Table: "project_members", Action: Delete, Old: cols("id", "x", "project_id", pid, "user_id", uid)},
		Change{Schema: "public", Table: "tasks", Action: Update, Old: cols("id", "t", "project_id", pid), New: cols("id", "t", "project_id", pid)},
		Change{Schema: "public", Table: "messages", Action: Insert, New: cols("id", "m", "project_id", pid2)}, // pid2: 1 row, untouched
	)
	evs, _ := m.Map(&Txn{CommitLSN: 9, CommitTime: commit, Changes: changes}, nil)
	var got []string
	for _, ev := range evs {
		d := decode(t, ev)
		got = append(got, d["type"].(string)+":"+str(d["resource"])+":"+str(d["action"])+":"+ev.ProjectID[:1])
		if d["action"] == "BULK" {
			if _, hasID := d["id"]; hasID {
				t.Error("BULK invalidation must carry no id")
			}
		}
	}
	want := []string{
		"cache_invalidate:message:BULK:a",
		"cache_invalidate:project_members:DELETE:a", "member_removed:::a",
		"cache_invalidate:task:BULK:a",
		"cache_invalidate:message:INSERT:b", "message_created:::b",
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("got  %v\nwant %v", got, want)
	}
	for i, ev := range evs {
		if ev.Position.Index != uint32(i) {
			t.Fatalf("positions not consecutive: %v", ev.Position)
		}
	}
}

func str(v any) string { s, _ := v.(string); return s }

func TestNewMapperRejects(t *testing.T) {
	cases := map[string]Options{
		"no tables":       {},
		"no name":         {Tables: []Table{{Resource: "r", ProjectIDColumn: "p"}}},
		"no resource":     {Tables: []Table{{Name: "t", ProjectIDColumn: "p"}}},
		"no project col":  {Tables: []Table{{Name: "t", Resource: "r"}}},
		"bad event name":  {Tables: []Table{{Name: "t", Resource: "r", ProjectIDColumn: "p", OnInsert: "Bad-Name"}}},
		"duplicate":       {Tables: []Table{{Name: "t", Resource: "r", ProjectIDColumn: "p"}, {Name: "t", Resource: "r", ProjectIDColumn: "p"}}},
		"negative thresh": {Tables: DefaultTables(), BulkThreshold: -1},
	}
	for name, opts := range cases {
		if _, err := NewMapper(opts); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestCamelCase(t *testing.T) {
	for in, want := range map[string]string{
		"id": "id", "project_id": "projectId", "message_type": "messageType", "created_at": "createdAt",
		"a_b_c": "aBC", "_leading": "leading", "trailing_": "trailing", "double__under": "doubleUnder", "x2_y": "x2Y",
	} {
		if got := CamelCase(in); got != want {
			t.Errorf("CamelCase(%q) = %q, want %q", in, got, want)
		}
	}
}

// Every string appendString writes must be valid JSON that decodes back to
// the same text (after invalid UTF-8 becomes U+FFFD).
func FuzzAppendString(f *testing.F) {
	f.Add("plain")
	f.Add("quote \" slash \\ \n \x00 \xff \u2028")
	f.Fuzz(func(t *testing.T, s string) {
		b := appendString(nil, s)
		var back string
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("invalid JSON %q for %q: %v", b, s, err)
		}
		want := strings.ToValidUTF8(s, "\ufffd")
		if back != want && !strings.Contains(s, "\ufffd") {
			// ToValidUTF8 folds runs of bad bytes into one U+FFFD; encoding/json
			// writes one per byte, as appendString does.
			var std string
			sb, _ := json.Marshal(s)
			_ = json.Unmarshal(sb, &std)
			if back != std {
				t.Fatalf("round trip %q -> %q, encoding/json gives %q", s, back, std)
			}
		}
	})
}

func FuzzMap(f *testing.F) {
	f.Add("messages", uint8(1), "id", "p", "project_id", int64(3))
	f.Fuzz(func(t *testing.T, table string, action uint8, c1, v1, c2 string, n int64) {
		m, _ := NewMapper(Options{Tables: DefaultTables(), BulkThreshold: 1})
		row := []Column{{Name: c1, Value: v1}, {Name: c2, Value: n}, {Name: "project_id", Value: v1}}
		txn := &Txn{CommitLSN: uint64(n), Changes: []Change{{Schema: "public", Table: table, Action: Action(action % 5), New: row, Old: row}}}
		evs, _ := m.Map(txn, nil)
		for _, ev := range evs {
			if ev.Payload != nil && !json.Valid(ev.Payload) {
				t.Fatalf("invalid payload %s", ev.Payload)
			}
		}
	})
}

// TestNumbersAsStrings: past ±(2^53 − 1) integers, and every numeric, are
// strings with the option, numbers without it; safe integers stay numbers.
func TestNumbersAsStrings(t *testing.T) {
	row := Change{Schema: "public", Table: "tasks", Action: Insert, New: cols("id", rid, "project_id", pid,
		"story_points", int64(9007199254740993), "small", int64(9007199254740991), "negative", int64(-9007199254740993), "estimate", Numeric("12345678901234567890.5"))}
	for _, c := range []struct {
		on   bool
		want string
	}{
		{false, `"storyPoints":9007199254740993,"small":9007199254740991,"negative":-9007199254740993,"estimate":12345678901234567890.5`},
		{true, `"storyPoints":"9007199254740993","small":9007199254740991,"negative":"-9007199254740993","estimate":"12345678901234567890.5"`},
	} {
		m, err := NewMapper(Options{Tables: DefaultTables(), NumbersAsStrings: c.on})
		if err != nil {
			t.Fatal(err)
		}
		evs, _ := m.Map(&Txn{CommitLSN: 1, CommitTime: commit, Changes: []Change{row}}, nil)
		if len(evs) != 2 || !strings.Contains(string(evs[1].Payload), c.want) {
			t.Fatalf("option %v: %s", c.on, evs[len(evs)-1].Payload)
		}
	}
}
