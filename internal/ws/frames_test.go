package ws

import (
	"errors"
	"strings"
	"testing"

	"github.com/walcast/walcast/internal/events"
)

const pid = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"

func TestParseFrame(t *testing.T) {
	since := events.Position{LSN: 0x16B3748, Index: 2}
	cases := []struct {
		in   string
		want Command
		err  bool
	}{
		{`{"action":"ping"}`, Command{Action: "ping"}, false},
		{`{"action":"subscribe","project_id":"` + pid + `"}`, Command{Action: "subscribe", ProjectID: pid}, false},
		{`{"action":"subscribe","project_id":"AAAAAAAA-AAAA-4AAA-8AAA-AAAAAAAAAAAA"}`, Command{Action: "subscribe", ProjectID: pid}, false},
		{`{"action":"subscribe","project_id":"` + pid + `","since":"00000000016B3748/00000002"}`, Command{Action: "subscribe", ProjectID: pid, Since: &since}, false},
		{`{"action":"unsubscribe","project_id":"` + pid + `"}`, Command{Action: "unsubscribe", ProjectID: pid}, false},
		{`{"action":"subscribe","project_id":"` + pid + `","extra":1}`, Command{Action: "subscribe", ProjectID: pid}, false},
		{`{"action":"refresh_token","token":"a.b.c"}`, Command{Action: "refresh_token"}, false},
		{`{"action":"refresh_token"}`, Command{}, true},
		{`not json`, Command{}, true},
		{`[]`, Command{}, true},
		{`{}`, Command{}, true},
		{`{"action":"dance"}`, Command{}, true},
		{`{"action":"subscribe"}`, Command{}, true},
		{`{"action":"subscribe","project_id":"1; DROP TABLE messages"}`, Command{}, true},
		{`{"action":"subscribe","project_id":123}`, Command{}, true},
		{`{"action":"subscribe","project_id":"` + pid + `","since":"yesterday"}`, Command{}, true},
		{`{"action":"unsubscribe","project_id":"` + pid + `","since":"00000000016B3748/00000002"}`, Command{}, true},
		{`{"action":"subscribe","project_id":"` + pid + `","since":"00000000016B3748/00000002","origin":"7312.1.walcast"}`, Command{Action: "subscribe", ProjectID: pid, Since: &since, Origin: "7312.1.walcast"}, false},
		{`{"action":"subscribe","project_id":"` + pid + `","origin":"7312.1.walcast"}`, Command{}, true},
		{`{"action":"subscribe","project_id":"` + pid + `","since":"00000000016B3748/00000002","origin":"` + strings.Repeat("x", 129) + `"}`, Command{}, true},
		{`{"action":"subscribe","project_id":"` + pid + `","since":"00000000016B3748/00000002","origin":7}`, Command{}, true},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got, err := ParseFrame([]byte(c.in))
			if c.err {
				if !errors.Is(err, ErrBadFrame) {
					t.Fatalf("err = %v, want ErrBadFrame", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Action != c.want.Action || got.ProjectID != c.want.ProjectID || got.Origin != c.want.Origin || (got.Since == nil) != (c.want.Since == nil) ||
				(got.Since != nil && *got.Since != *c.want.Since) {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func FuzzParseFrame(f *testing.F) {
	f.Add([]byte(`{"action":"subscribe","project_id":"` + pid + `","since":"00000000016B3748/00000002"}`))
	f.Add([]byte(`{"action":"ping"}`))
	f.Add([]byte(`{"action":"subscribe","project_id":"` + pid + `","since":"00000000016B3748/00000002","origin":"7312.1.walcast"}`))
	f.Add([]byte(`{"action":"unsubscribe","project_id":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		cmd, err := ParseFrame(b)
		if err != nil {
			if !errors.Is(err, ErrBadFrame) {
				t.Fatalf("error %v is not ErrBadFrame", err)
			}
			return
		}
		switch cmd.Action {
		case ActionPing, ActionSubscribe, ActionUnsubscribe, ActionRefreshToken:
		default:
			t.Fatalf("accepted action %q", cmd.Action)
		}
	})
}
