package wal

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

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
			return json.RawMessage(append([]byte(nil), src...))
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
		if t, err := time.Parse("2006-01-02 15:04:05.999999Z07", string(src)); err == nil {
			return t.UTC()
		}
		var ts pgtype.Timestamptz
		if err := m.Scan(oid, pgtype.TextFormatCode, src, &ts); err == nil && ts.Valid && ts.InfinityModifier == pgtype.Finite {
			return ts.Time.UTC()
		}
	case pgtype.TimestampOID:
		var ts pgtype.Timestamp
		if err := m.Scan(oid, pgtype.TextFormatCode, src, &ts); err == nil && ts.Valid && ts.InfinityModifier == pgtype.Finite {
			return ts.Time.Format("2006-01-02T15:04:05.999999")
		}
	case pgtype.DateOID:
		var d pgtype.Date
		if err := m.Scan(oid, pgtype.TextFormatCode, src, &d); err == nil && d.Valid && d.InfinityModifier == pgtype.Finite {
			return d.Time.Format(time.DateOnly)
		}
	default:
		if dt, ok := m.TypeForOID(oid); ok {
			if v, err := dt.Codec.DecodeValue(m, oid, pgtype.TextFormatCode, src); err == nil {
				if _, err := json.Marshal(v); err == nil {
					return v
				}
			}
		}
	}
	return string(src)
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
