package wal

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/walcast/walcast/internal/events"
)

func TestParseUTCTimestamp(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2026-11-26 21:20:01.668649+00", time.Date(2026, 11, 26, 21, 20, 1, 668649000, time.UTC), true},
		{"2026-11-26 21:20:01+00", time.Date(2026, 11, 26, 21, 20, 1, 0, time.UTC), true},
		{"2026-11-26 21:20:01.5+00", time.Date(2026, 11, 26, 21, 20, 1, 500000000, time.UTC), true},
		{"0001-01-01 00:00:00+00", time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), true},
		{"2024-02-29 12:00:00+00", time.Date(2024, 2, 29, 12, 0, 0, 0, time.UTC), true},
		{"2026-02-29 12:00:00+00", time.Time{}, false}, // not a leap year
		{"2026-11-26 21:20:01.668649+01", time.Time{}, false},
		{"2026-11-26 21:20:01.668649+05:30", time.Time{}, false},
		{"2026-11-26 21:20:01.+00", time.Time{}, false},
		{"2026-11-26 21:20:01.1234567890+00", time.Time{}, false},
		{"2026-11-26 24:00:00+00", time.Time{}, false},
		{"2026-13-26 21:20:01+00", time.Time{}, false},
		{"0044-03-15 12:00:00+00 BC", time.Time{}, false},
		{"12026-11-26 21:20:01+00", time.Time{}, false},
		{"2026-11-26T21:20:01+00", time.Time{}, false},
		{"2026-1a-26 21:20:01+00", time.Time{}, false},
		{"infinity", time.Time{}, false},
		{"", time.Time{}, false},
	} {
		got, ok := parseUTCTimestamp([]byte(c.in))
		if ok != c.ok || !got.Equal(c.want) {
			t.Errorf("parseUTCTimestamp(%q) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

// Where the fast path answers, it must agree with time.Parse.
func FuzzParseUTCTimestamp(f *testing.F) {
	f.Add("2026-11-26 21:20:01.668649+00")
	f.Add("2026-02-29 12:00:00+00")
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseUTCTimestamp([]byte(s))
		if !ok {
			return
		}
		want, err := time.Parse("2006-01-02 15:04:05.999999999Z07", s)
		if err != nil || !got.Equal(want) {
			t.Fatalf("parseUTCTimestamp(%q) = %v; time.Parse: %v, %v", s, got, want, err)
		}
	})
}

// TestDatesJavaScriptCanRead: every temporal value reaches the frontend in
// a form `new Date(value)` parses: years outside 0000–9999 in ISO 8601's
// expanded form (±YYYYYY), values past what Date holds, and ±infinity, as
// the ends of Date's range (so they still sort). (Each form below was
// checked with Node's Date; "infinity", sent before, is NaN there.)
func TestDatesJavaScriptCanRead(t *testing.T) {
	m := pgtype.NewMap()
	for _, c := range []struct {
		oid  uint32
		in   string
		want string
	}{
		{pgtype.TimestamptzOID, "2026-11-26 21:20:01.5+00", `"2026-11-26T21:20:01.500000Z"`},
		{pgtype.TimestamptzOID, "0001-01-01 00:00:00+00", `"0001-01-01T00:00:00.000000Z"`},
		{pgtype.TimestamptzOID, "0044-03-15 12:00:00+00 BC", `"-000043-03-15T12:00:00.000000Z"`},
		{pgtype.TimestamptzOID, "12026-11-26 21:20:01+00", `"+012026-11-26T21:20:01.000000Z"`},
		{pgtype.TimestamptzOID, "294276-12-31 23:59:59.999999+00", `"+275760-09-13T00:00:00.000000Z"`},
		{pgtype.TimestamptzOID, "infinity", `"+275760-09-13T00:00:00.000000Z"`},
		{pgtype.TimestamptzOID, "-infinity", `"-271821-04-20T00:00:00.000000Z"`},
		{pgtype.TimestampOID, "2026-11-26 21:20:01", `"2026-11-26T21:20:01"`},
		{pgtype.TimestampOID, "0044-03-15 12:00:00 BC", `"-000043-03-15T12:00:00"`},
		{pgtype.TimestampOID, "infinity", `"+275760-09-12T00:00:00"`}, // a day inside: read in local time
		{pgtype.TimestampOID, "-infinity", `"-271821-04-21T00:00:00"`},
		{pgtype.DateOID, "2026-11-26", `"2026-11-26"`},
		{pgtype.DateOID, "0044-03-15 BC", `"-000043-03-15"`},
		{pgtype.DateOID, "12026-11-26", `"+012026-11-26"`},
		{pgtype.DateOID, "5874897-12-31", `"+275760-09-13"`},
		{pgtype.DateOID, "infinity", `"+275760-09-13"`},
		{pgtype.DateOID, "-infinity", `"-271821-04-20"`},
	} {
		if got := string(events.AppendValue(nil, decodeText(m, c.oid, []byte(c.in)))); got != c.want {
			t.Errorf("%d %q: %s, want %s", c.oid, c.in, got, c.want)
		}
	}
}
