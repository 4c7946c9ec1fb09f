package wal

import (
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/walcast/walcast/internal/events"
)

// finite maps PostgreSQL's ±infinity to the ends of what JavaScript's
// Date holds (events.JSMaxTime, JSMinTime): one representation a frontend
// can parse, and that sorts after (before) every real value.
func finite(t time.Time, inf pgtype.InfinityModifier) time.Time {
	switch inf {
	case pgtype.Infinity:
		return events.JSMaxTime
	case pgtype.NegativeInfinity:
		return events.JSMinTime
	}
	return t
}

// decodeText turns the text form of a column value, as pgoutput sends it,
// into the typed value events.Column documents. A value that does not parse
// as its type is kept as its text: nothing the WAL carried is dropped.
//
// The replication session runs with DateStyle=ISO and TimeZone=UTC (see
// connConfig), so temporal values arrive in one known form.
func decodeText(m *pgtype.Map, oid uint32, src []byte) any {
	switch oid {
	case pgtype.BoolOID:
		if len(src) == 1 {
			switch src[0] {
			case 't':
				return true
			case 'f':
				return false
			}
		}
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.OIDOID:
		if n, err := strconv.ParseInt(string(src), 10, 64); err == nil {
			return n
		}
	case pgtype.Float4OID, pgtype.Float8OID:
		if f, err := strconv.ParseFloat(string(src), 64); err == nil {
			return f
		}
	case pgtype.NumericOID:
		// Kept as its exact digits: a float64 would round large numerics.
		if isJSONNumber(src) {
			return events.Numeric(src)
		}
	case pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID, pgtype.UUIDOID:
		return string(src)
	case pgtype.JSONOID, pgtype.JSONBOID:
		if json.Valid(src) {
			return json.RawMessage(append([]byte(nil), src...))
		}
	case pgtype.TimestamptzOID:
		// The session's DateStyle=ISO, TimeZone=UTC form, parsed directly;
		// anything else goes through pgtype.
		if t, ok := parseUTCTimestamp(src); ok {
			return t
		}
		if t, err := time.Parse("2006-01-02 15:04:05.999999Z07", string(src)); err == nil {
			return t.UTC()
		}
		var ts pgtype.Timestamptz
		if err := m.Scan(oid, pgtype.TextFormatCode, src, &ts); err == nil && ts.Valid {
			return events.ClampJS(finite(ts.Time, ts.InfinityModifier))
		}
	case pgtype.TimestampOID:
		var ts pgtype.Timestamp
		if err := m.Scan(oid, pgtype.TextFormatCode, src, &ts); err == nil && ts.Valid {
			return events.FormatLocalTime(finite(ts.Time, ts.InfinityModifier))
		}
	case pgtype.DateOID:
		var d pgtype.Date
		if err := m.Scan(oid, pgtype.TextFormatCode, src, &d); err == nil && d.Valid {
			return events.FormatDate(finite(d.Time, d.InfinityModifier))
		}
	case pgtype.IntervalOID:
		var iv pgtype.Interval
		if err := m.Scan(oid, pgtype.TextFormatCode, src, &iv); err == nil && iv.Valid {
			return isoDuration(iv)
		}
	case pgtype.TimeOID:
		// PostgreSQL's own text: HH:MM:SS[.ffffff].
		return string(src)
	default:
		if dt, ok := m.TypeForOID(oid); ok {
			if v, err := dt.Codec.DecodeValue(m, oid, pgtype.TextFormatCode, src); err == nil {
				if v, ok := plainJSON(v); ok {
					return v
				}
			}
		}
	}
	return string(src)
}

// plainJSON turns what a pgtype codec decoded into a value with a plain
// JSON form (arrays of them included): uuids as their text, intervals as
// ISO 8601 durations, and bytes as base64 (encoding/json's). A value of
// pgtype's own struct types (points, ranges, times) has no such form:
// not ok, and its PostgreSQL text is sent instead.
func plainJSON(v any) (any, bool) {
	switch x := v.(type) {
	case nil, bool, string, float64, float32, int64, int32, int16, int8, int, uint32, []byte:
		return x, true
	case [16]byte:
		return pgtype.UUID{Bytes: x, Valid: true}.String(), true
	case pgtype.Interval:
		if !x.Valid {
			return nil, true
		}
		return isoDuration(x), true
	case []any:
		out := make([]any, len(x))
		for i := range x {
			e, ok := plainJSON(x[i])
			if !ok {
				return nil, false
			}
			out[i] = e
		}
		return out, true
	case map[string]any, json.RawMessage, time.Time:
		return x, true
	case fmt.Stringer:
		// netip.Prefix, netip.Addr and the like: their text.
		if _, isPG := x.(interface{ Value() (driver.Value, error) }); !isPG {
			return x.String(), true
		}
	}
	return nil, false
}

// isoDuration writes an interval as an ISO 8601 duration: P1Y2M3DT4H5M6.5S
// (months as years and months, days, then the time part; a negative part
// keeps its sign, as PostgreSQL's iso_8601 style does).
func isoDuration(iv pgtype.Interval) string {
	b := []byte{'P'}
	years, months := iv.Months/12, iv.Months%12
	if years != 0 {
		b = strconv.AppendInt(b, int64(years), 10)
		b = append(b, 'Y')
	}
	if months != 0 {
		b = strconv.AppendInt(b, int64(months), 10)
		b = append(b, 'M')
	}
	if iv.Days != 0 {
		b = strconv.AppendInt(b, int64(iv.Days), 10)
		b = append(b, 'D')
	}
	us := iv.Microseconds
	if us != 0 {
		b = append(b, 'T')
		h, us := us/3_600_000_000, us%3_600_000_000
		mi, us := us/60_000_000, us%60_000_000
		if h != 0 {
			b = strconv.AppendInt(b, h, 10)
			b = append(b, 'H')
		}
		if mi != 0 {
			b = strconv.AppendInt(b, mi, 10)
			b = append(b, 'M')
		}
		if us != 0 {
			b = strconv.AppendFloat(b, float64(us)/1e6, 'f', -1, 64)
			b = append(b, 'S')
		}
	}
	if len(b) == 1 {
		return "PT0S"
	}
	return string(b)
}

// isJSONNumber reports whether b is a JSON number; numeric's NaN and
// Infinity are not.
func isJSONNumber(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	var v json.Number
	return json.Unmarshal(b, &v) == nil
}

// parseUTCTimestamp reads "YYYY-MM-DD HH:MM:SS[.f…]+00", timestamptz's text
// under DateStyle=ISO and TimeZone=UTC, without time.Parse (which
// interprets its layout on every call: 9 % of walcast's CPU under insert
// load). Anything else, other zones and BC or five-digit years among it,
// reports false and is left to the general parsers.
func parseUTCTimestamp(b []byte) (time.Time, bool) {
	if len(b) < 22 || b[4] != '-' || b[7] != '-' || b[10] != ' ' || b[13] != ':' || b[16] != ':' {
		return time.Time{}, false
	}
	var v [6]int
	for i, at := range [6]int{0, 5, 8, 11, 14, 17} {
		n := 2
		if i == 0 {
			n = 4
		}
		for _, c := range b[at : at+n] {
			if c < '0' || c > '9' {
				return time.Time{}, false
			}
			v[i] = v[i]*10 + int(c-'0')
		}
	}
	rest := b[19:]
	nsec := 0
	if rest[0] == '.' {
		digits := 0
		rest = rest[1:]
		for len(rest) > 0 && rest[0] >= '0' && rest[0] <= '9' {
			if digits == 9 {
				return time.Time{}, false
			}
			nsec = nsec*10 + int(rest[0]-'0')
			digits++
			rest = rest[1:]
		}
		if digits == 0 {
			return time.Time{}, false
		}
		for ; digits < 9; digits++ {
			nsec *= 10
		}
	}
	if string(rest) != "+00" || v[1] < 1 || v[1] > 12 || v[2] < 1 || v[2] > 31 || v[3] > 23 || v[4] > 59 || v[5] > 59 {
		return time.Time{}, false
	}
	t := time.Date(v[0], time.Month(v[1]), v[2], v[3], v[4], v[5], nsec, time.UTC)
	if t.Day() != v[2] { // 31 February and its kind
		return time.Time{}, false
	}
	return t, true
}
