package events

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/walcast/walcast/internal/metrics"
)

func publishingMapper(t *testing.T, maxRows, maxBytes, maxPublish int) *Mapper {
	t.Helper()
	m, err := NewMapper(Options{Tables: DefaultTables(), PublishPrefix: "walcast", MaxTxnRows: maxRows, MaxTxnBytes: maxBytes, MaxPublishBytes: maxPublish})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func published(project, typ, data string) []byte {
	return []byte(`{"project_id":"` + project + `","type":"` + typ + `","data":` + data + `}`)
}

// TestMapPublishedEvents: a published event takes its place among its
// transaction's row events; one that breaks a rule is refused with its
// reason, and the transaction's other events are delivered.
func TestMapPublishedEvents(t *testing.T) {
	m := publishingMapper(t, 0, 0, 200)
	row := Change{Schema: "public", Table: "messages", Action: Insert, New: cols("id", rid, "project_id", pid)}
	for _, tc := range []struct {
		name   string
		prefix string
		body   []byte
		want   string
		reason string
	}{
		{"delivered", "walcast", published(pid, "sprint_started", `{"n":1}`), "cache_invalidate:a: message_created:a: sprint_started:a: cache_invalidate:a: message_created:a:", ""},
		{"another prefix", "other", published(pid, "sprint_started", `{}`), "cache_invalidate:a: message_created:a: cache_invalidate:a: message_created:a:", ""},
		{"gap prefix", GapPrefix, published(pid, "sprint_started", `{}`), "cache_invalidate:a: message_created:a: cache_invalidate:a: message_created:a:", ""},
		{"not JSON", "walcast", []byte(`{`), "cache_invalidate:a: message_created:a: cache_invalidate:a: message_created:a:", RefusedMalformed},
		{"not UTF-8", "walcast", published(pid, "x", `{"s":"`+"\xff"+`"}`), "cache_invalidate:a: message_created:a: cache_invalidate:a: message_created:a:", RefusedMalformed},
		{"no project", "walcast", []byte(`{"type":"x"}`), "cache_invalidate:a: message_created:a: cache_invalidate:a: message_created:a:", RefusedProjectID},
		{"bad type", "walcast", published(pid, "a b", `{}`), "cache_invalidate:a: message_created:a: cache_invalidate:a: message_created:a:", RefusedType},
		{"walcast's frame", "walcast", published(pid, "resync_required", `{}`), "cache_invalidate:a: message_created:a: cache_invalidate:a: message_created:a:", RefusedReserved},
		{"a row event", "walcast", published(pid, "task_deleted", `{}`), "cache_invalidate:a: message_created:a: cache_invalidate:a: message_created:a:", RefusedReserved},
		{"data not an object", "walcast", published(pid, "x", `[1]`), "cache_invalidate:a: message_created:a: cache_invalidate:a: message_created:a:", RefusedData},
		{"too large", "walcast", published(pid, "x", `{"pad":"`+strings.Repeat("x", 200)+`"}`), "cache_invalidate:a: message_created:a: cache_invalidate:a: message_created:a:", RefusedTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			txn := &Txn{CommitLSN: 7, CommitTime: commit}
			for _, ch := range []Change{row, {Action: Message, Prefix: tc.prefix, Content: tc.body}, row} {
				m.Retain(txn, ch)
			}
			evs, problems := m.Map(txn, nil)
			if got := strings.Join(describe(evs), " "); got != tc.want {
				t.Fatalf("events %s, want %s", got, tc.want)
			}
			var refused *PublishRefused
			switch {
			case tc.reason == "" && len(problems) != 0:
				t.Fatalf("problems %v", problems)
			case tc.reason != "" && (len(problems) != 1 || !errors.As(problems[0], &refused) || refused.Reason != tc.reason):
				t.Fatalf("problems %v, want one refusal for %s", problems, tc.reason)
			}
			for i, ev := range evs {
				if ev.Position != (Position{LSN: 7, Index: uint32(i)}) {
					t.Fatalf("event %d at %s", i, ev.Position)
				}
				if !json.Valid(ev.Payload) || !utf8.Valid(ev.Payload) {
					t.Fatalf("payload %s", ev.Payload)
				}
			}
			if tc.reason == "" && len(evs) == 5 {
				var f map[string]any
				if err := json.Unmarshal(evs[2].Payload, &f); err != nil {
					t.Fatal(err)
				}
				if !evs[2].Published || f["type"] != "sprint_started" || f["project_id"] != pid || f["position"] != evs[2].Position.String() ||
					f["timestamp"] == nil || f["data"].(map[string]any)["n"] != 1.0 {
					t.Fatalf("published frame %s (%+v)", evs[2].Payload, evs[2])
				}
			}
		})
	}
}

// TestRetainBoundsPublishedEvents: past the transaction's bound, the
// published events are let go and every project resyncs once, with one
// refusal reported.
func TestRetainBoundsPublishedEvents(t *testing.T) {
	m := publishingMapper(t, 3, 1<<20, 1<<10)
	txn := &Txn{CommitLSN: 9, CommitTime: commit}
	for range 10 {
		m.Retain(txn, Change{Action: Message, Prefix: "walcast", Content: published(pid, "tick", `{}`)})
	}
	if len(txn.Changes) != 4 {
		t.Fatalf("kept %d changes for 10 published events over a bound of 3", len(txn.Changes))
	}
	evs, problems := m.Map(txn, nil)
	if got := strings.Join(describe(evs), " "); got != "tick:a: tick:a: tick:a: resync_required:*:" {
		t.Fatalf("events %s", got)
	}
	var refused *PublishRefused
	if len(problems) != 1 || !errors.As(problems[0], &refused) || refused.Reason != RefusedOverflow {
		t.Fatalf("problems %v", problems)
	}
}

// TestDecodedNonTransactionalMessage: a message written outside a
// transaction is a transaction of its own at its LSN (wal decodes it so;
// here, how Map reads one).
func TestMapPublishedOnItsOwn(t *testing.T) {
	m := publishingMapper(t, 0, 0, 0)
	evs, problems := m.Map(&Txn{CommitLSN: 0x1234, EndLSN: 0x1235, CommitTime: commit, Changes: []Change{{Action: Message, Prefix: "walcast", Content: published(pid, "deployed", `{}`)}}}, nil)
	if len(problems) != 0 || len(evs) != 1 || evs[0].Position != (Position{LSN: 0x1234}) || evs[0].Type != "deployed" || evs[0].ProjectID != pid {
		t.Fatalf("%+v %v", evs, problems)
	}
}

func TestNewMapperRefusesTheGapPrefixForPublishing(t *testing.T) {
	if _, err := NewMapper(Options{Tables: DefaultTables(), PublishPrefix: GapPrefix}); err == nil {
		t.Fatal("accepted")
	}
}

// FuzzMapPublished: whatever a published message holds, Map delivers a
// frame that is valid JSON and UTF-8, or refuses it; it never panics.
func FuzzMapPublished(f *testing.F) {
	f.Add(published(pid, "x", `{"a":"\u2028"}`))
	f.Add([]byte(`{"project_id":"` + pid + `","type":"x","data":{"a":1} }`))
	f.Fuzz(func(t *testing.T, body []byte) {
		m, _ := NewMapper(Options{Tables: DefaultTables(), PublishPrefix: "walcast", MaxTxnRows: 10, MaxPublishBytes: 1 << 16})
		txn := &Txn{CommitLSN: 1}
		m.Retain(txn, Change{Action: Message, Prefix: "walcast", Content: body})
		evs, _ := m.Map(txn, nil)
		for _, ev := range evs {
			if !json.Valid(ev.Payload) || !utf8.Valid(ev.Payload) {
				t.Fatalf("invalid frame %q from %q", ev.Payload, body)
			}
		}
	})
}

// TestRefusalReasonsAreMetricLabels: every reason Map gives is primed as a
// label of walcast_published_refused_total.
func TestRefusalReasonsAreMetricLabels(t *testing.T) {
	want := []string{RefusedMalformed, RefusedProjectID, RefusedType, RefusedReserved, RefusedData, RefusedTooLarge, RefusedOverflow}
	if got := strings.Join(metrics.PublishRefusals, ","); got != strings.Join(want, ",") {
		t.Fatalf("metrics.PublishRefusals %s, want %s", got, strings.Join(want, ","))
	}
}

// TestRetainKeepsOneGapMarker: whatever a transaction holds under the gap
// prefix, Retain keeps one genuine marker at most (a transaction of forged
// or repeated markers costs no memory).
func TestRetainKeepsOneGapMarker(t *testing.T) {
	key := GapKey([]byte("secret"))
	m, err := NewMapper(Options{Tables: DefaultTables(), Publication: "pub", GapKey: key, MaxTxnRows: 10})
	if err != nil {
		t.Fatal(err)
	}
	txn := &Txn{CommitLSN: 1}
	for range 1000 {
		m.Retain(txn, Change{Action: Message, Prefix: GapPrefix, Content: []byte(strings.Repeat("x", 8000))})
		m.Retain(txn, Change{Action: Message, Prefix: GapPrefix, Content: GapMarker(key, "pub", "r")})
		m.Retain(txn, Change{Action: Message, Prefix: "another_app", Content: []byte("{}")})
	}
	if len(txn.Changes) != 1 {
		t.Fatalf("kept %d changes", len(txn.Changes))
	}
	evs, _ := m.Map(txn, nil)
	if got := strings.Join(describe(evs), " "); got != "resync_required:*:" {
		t.Fatalf("events %s", got)
	}
}
