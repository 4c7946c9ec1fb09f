package events

import (
	"encoding/json"
	"errors"
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

func TestMapMissingProjectIsReportedNotFatal(t *testing.T) {
	m := mapper(t, 0)
	txn := &Txn{CommitLSN: 1, CommitTime: commit, Changes: []Change{
		{Schema: "public", Table: "messages", Action: Delete, Old: cols("id", rid)}, // identity lacks project_id
		{Schema: "public", Table: "messages", Action: Insert, New: cols("id", rid, "project_id", nil)},
		{Schema: "public", Table: "messages", Action: Insert, New: cols("id", rid, "project_id", pid)},
	}}
	evs, problems := m.Map(txn, nil)
	if len(problems) != 2 || !errors.Is(problems[0], ErrNoProject) {
		t.Fatalf("problems %v", problems)
	}
	if len(evs) != 2 || evs[0].Position.Index != 0 {
		t.Fatalf("events %v", evs)
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
		Change{Schema: "public", Table: "tasks", Action: Update, New: cols("id", "t", "project_id", pid)},
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

func TestMapTruncate(t *testing.T) {
	m := mapper(t, 0)
	evs, _ := m.Map(&Txn{CommitLSN: 2, CommitTime: commit, Changes: []Change{{Schema: "public", Table: "messages", Action: Truncate}}}, nil)
	if len(evs) != 1 || !evs[0].AllProjects || evs[0].Type != TypeResyncRequired {
		t.Fatalf("truncate: %+v", evs)
	}
}

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
