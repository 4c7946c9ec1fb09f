package notify

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/walcast/walcast/internal/events"
	"github.com/walcast/walcast/internal/metrics"
)

const pid = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"

func listener() *Listener {
	return NewListener("", "cache_invalidate", "project_members", "project", func([]events.Event) {}, nil, nil,
		slog.New(slog.NewTextHandler(io.Discard, nil)), metrics.New(prometheus.NewRegistry()))
}

func TestEventFromPayload(t *testing.T) {
	l := listener()
	cases := []struct {
		payload string
		ok      bool
	}{
		{`{"type":"cache_invalidate","resource":"message","id":"m1","action":"INSERT","project_id":"` + pid + `","timestamp":"2026-11-26T16:42:00.123456Z"}`, true},
		{`{"resource":"task","id":"t1","action":"DELETE","project_id":"` + pid + `","timestamp":"not a time"}`, true},
		{`not json`, false},
		{`{"resource":"message","action":"TRUNCATE","project_id":"` + pid + `"}`, false},
		{`{"resource":"message","action":"INSERT","project_id":"1; DROP"}`, false},
		{`{"action":"INSERT","project_id":"` + pid + `"}`, false},
	}
	var last events.Position
	for _, c := range cases {
		ev, err := l.event(c.payload)
		if !c.ok {
			if !errors.Is(err, ErrPayload) {
				t.Errorf("%s: err = %v, want ErrPayload", c.payload, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.payload, err)
		}
		var frame map[string]any
		if err := json.Unmarshal(ev.Payload, &frame); err != nil {
			t.Fatalf("payload %s: %v", ev.Payload, err)
		}
		if frame["type"] != "cache_invalidate" || frame["project_id"] != pid || frame["position"] != ev.Position.String() {
			t.Fatalf("frame %v", frame)
		}
		if ev.Position.Compare(last) <= 0 {
			t.Fatalf("positions must increase: %s after %s", ev.Position, last)
		}
		last = ev.Position
	}
}

func FuzzEventFromPayload(f *testing.F) {
	f.Add(`{"type":"cache_invalidate","resource":"message","id":"m1","action":"INSERT","project_id":"` + pid + `","timestamp":"2026-11-26T16:42:00Z"}`)
	f.Fuzz(func(t *testing.T, payload string) {
		ev, err := listener().event(payload)
		if err == nil && !json.Valid(ev.Payload) {
			t.Fatalf("invalid frame %s", ev.Payload)
		}
	})
}
