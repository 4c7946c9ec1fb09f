package cluster

import (
	"errors"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/events"
)

// TestEnvelopeRoundTrip: every kind of event the relay publishes comes
// out of the stream as it went in.
func TestEnvelopeRoundTrip(t *testing.T) {
	at := events.Position{LSN: 0x1234, Index: 2}
	commit := time.Date(2026, 11, 27, 12, 0, 0, 123456000, time.UTC)
	for _, ev := range []events.Event{
		{Position: events.Position{LSN: 0x1234, Index: 1}, ProjectID: "p", Type: "message_created", CommitTime: commit, Xid: 9, Payload: []byte(`{"type":"message_created"}`)},
		{Position: at, ProjectID: "p", Type: "member_removed", CommitTime: commit, Xid: 9, Payload: []byte(`{}`),
			Revoke: &events.Revocation{UserID: "u", Reason: events.ReasonMemberRemoved, At: at}},
		{Position: at, AllProjects: true, Type: events.TypeSubscriptionRevoked, CommitTime: commit,
			Revoke: &events.Revocation{Reason: events.ReasonMemberRemoved, At: at, Conservative: true}},
		{Position: events.Position{LSN: 0x8FF, Index: ^uint32(0)}, AllProjects: true, Type: events.TypeResyncRequired, CommitTime: commit},
		{Position: at, ProjectID: "p", Type: "member_added", CommitTime: commit, Grant: "u", Payload: []byte(`{}`)},
		{Position: at, ProjectID: "p", Type: "sprint_started", CommitTime: commit, Xid: 10, Published: true, Payload: []byte(`{"type":"sprint_started"}`)},
	} {
		b, err := encode(&ev)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decode(b)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if got.Position != ev.Position || got.ProjectID != ev.ProjectID || got.Type != ev.Type || !got.CommitTime.Equal(ev.CommitTime) ||
			got.AllProjects != ev.AllProjects || got.Published != ev.Published || got.Xid != ev.Xid || got.Grant != ev.Grant || string(got.Payload) != string(ev.Payload) ||
			(got.Revoke == nil) != (ev.Revoke == nil) || (got.Revoke != nil && *got.Revoke != *ev.Revoke) {
			t.Fatalf("round trip of %+v gave %+v", ev, got)
		}
	}
}

// FuzzDecode: whatever a stream holds (another program's messages, a
// truncated write), decode answers an event or ErrEnvelope, never panics,
// and an event it accepts has a project or concerns every project.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"p":"0000000000001234/00000001","pid":"p","t":"message_created","ct":1,"f":{"type":"x"}}`))
	f.Add([]byte(`{"p":"00000000000008FF/FFFFFFFF","t":"resync_required","ct":1,"all":true}`))
	f.Add([]byte(`{"p":"0000000000001234/00000002","t":"subscription_revoked","all":true,"rv":{"r":"member_removed","at":"0000000000001234/00000002","c":true}}`))
	f.Add([]byte(`{"p":"x"}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := decode(b)
		if err != nil {
			if !errors.Is(err, ErrEnvelope) {
				t.Fatalf("error %v is not ErrEnvelope", err)
			}
			return
		}
		if !ev.AllProjects && (ev.ProjectID == "" || len(ev.Payload) == 0) {
			t.Fatalf("accepted an event for no project: %+v", ev)
		}
	})
}
