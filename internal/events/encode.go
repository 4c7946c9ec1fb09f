package events

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// appendTime writes t as RFC 3339 in UTC with microseconds, clamped to
// what JavaScript's Date holds (ClampJS, appendDate). It is written digit
// by digit: AppendFormat interprets its layout on every call, and
// formatting two timestamps per change was 8 % of walcast's CPU under
// insert load.
func appendTime(b []byte, t time.Time) []byte {
	t = ClampJS(t)
	b = appendDate(b, t)
	h, mi, s := t.Clock()
	b = append(b, 'T')
	b = appendDigits(b, h, 2)
	b = append(b, ':')
	b = appendDigits(b, mi, 2)
	b = append(b, ':')
	b = appendDigits(b, s, 2)
	b = append(b, '.')
	b = appendDigits(b, t.Nanosecond()/1000, 6)
	return append(b, 'Z')
}

// JavaScript's Date holds ±8.64e15 ms around the Unix epoch; PostgreSQL's
// timestamps reach further (to 294276 AD) and have ±infinity.
var (
	JSMaxTime = time.UnixMilli(8_640_000_000_000_000).UTC()  // +275760-09-13
	JSMinTime = time.UnixMilli(-8_640_000_000_000_000).UTC() // -271821-04-20
)

// jsMaxLocal and jsMinLocal are a day inside JSMaxTime and JSMinTime: a
// local time is read in any time zone.
var (
	jsMaxLocal = JSMaxTime.AddDate(0, 0, -1)
	jsMinLocal = JSMinTime.AddDate(0, 0, 1)
)

// ClampJS bounds t to what JavaScript's Date holds: a value past either
// end (and ±infinity, which the decoder maps to the ends) is sent as that
// end, so that `new Date(value)` is never NaN and values still sort.
func ClampJS(t time.Time) time.Time {
	switch t = t.UTC(); {
	case t.After(JSMaxTime):
		return JSMaxTime
	case t.Before(JSMinTime):
		return JSMinTime
	}
	return t
}

// appendDate writes t's date as YYYY-MM-DD, or, for a year outside
// 0000–9999, in ISO 8601's expanded form with a sign and six digits
// (+010000-01-01, -000043-03-15: astronomical years, 0 is 1 BC), which
// is what JavaScript's Date parses.
func appendDate(b []byte, t time.Time) []byte {
	y, mo, d := t.Date()
	switch {
	case y < 0:
		b = append(b, '-')
		b = appendDigits(b, -y, 6)
	case y > 9999:
		b = append(b, '+')
		b = appendDigits(b, y, 6)
	default:
		b = appendDigits(b, y, 4)
	}
	b = append(b, '-')
	b = appendDigits(b, int(mo), 2)
	b = append(b, '-')
	return appendDigits(b, d, 2)
}

// FormatDate is a date column's JSON string (see appendDate), clamped to
// what JavaScript's Date holds.
func FormatDate(t time.Time) string { return string(appendDate(nil, ClampJS(t))) }

// FormatLocalTime is a timestamp-without-time-zone column's JSON string:
// the date as appendDate writes it, then THH:MM:SS and up to six fraction
// digits, no offset, clamped a day inside what JavaScript's Date holds
// (Date reads it in the browser's time zone, up to 14 h either way).
func FormatLocalTime(t time.Time) string {
	switch t = t.UTC(); {
	case t.After(jsMaxLocal):
		t = jsMaxLocal
	case t.Before(jsMinLocal):
		t = jsMinLocal
	}
	b := appendDate(make([]byte, 0, 32), t)
	return string(t.AppendFormat(b, "T15:04:05.999999"))
}

// appendDigits writes v, 0 <= v < 10^n, as exactly n decimal digits.
func appendDigits(b []byte, v, n int) []byte {
	b = append(b, make([]byte, n)...)
	for i := len(b) - 1; i >= len(b)-n; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return b
}

func appendInvalidate(b []byte, resource, id, action, projectID string, ts []byte, pos Position) []byte {
	b = append(b, `{"type":"cache_invalidate","resource":`...)
	b = appendString(b, resource)
	if id != "" {
		b = append(b, `,"id":`...)
		b = appendString(b, id)
	}
	b = append(b, `,"action":`...)
	b = appendString(b, action)
	b = append(b, `,"project_id":`...)
	b = appendString(b, projectID)
	b = append(b, `,"timestamp":"`...)
	b = append(b, ts...)
	b = append(b, `","position":"`...)
	b = pos.AppendText(b)
	return append(b, `"}`...)
}

func (m *Mapper) appendDomain(b []byte, typ, projectID string, ts []byte, pos Position, ch *Change) []byte {
	b = append(b, `{"type":`...)
	b = appendString(b, typ)
	b = append(b, `,"project_id":`...)
	b = appendString(b, projectID)
	b = append(b, `,"position":"`...)
	b = pos.AppendText(b)
	b = append(b, `","timestamp":"`...)
	b = append(b, ts...)
	b = append(b, `","data":`...)
	b = m.appendRow(b, ch)
	return append(b, '}')
}

// appendRow writes the row of a change as a JSON object with camelCase keys:
// the new row, with unchanged TOAST values taken from the old row where it
// carries them and left out otherwise; the old row for DELETE.
func (m *Mapper) appendRow(b []byte, ch *Change) []byte {
	row := ch.New
	if ch.Action == Delete {
		row = ch.Old
	}
	b = append(b, '{')
	n := 0
	for i := range row {
		c := &row[i]
		v := c.Value
		if c.Unchanged {
			old, ok := Lookup(ch.Old, c.Name)
			if !ok {
				continue
			}
			v = old
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = appendString(b, m.jsonKey(c.Name))
		b = append(b, ':')
		b = m.appendValue(b, v)
	}
	return append(b, '}')
}

// maxSafeInteger is the largest integer a JavaScript number holds exactly
// (Number.MAX_SAFE_INTEGER).
const maxSafeInteger = 1<<53 - 1

// appendValue is AppendValue, with numbers JavaScript cannot hold exactly
// sent as strings when the mapper is set to (Options.NumbersAsStrings):
// integers past ±(2^53 − 1) and every numeric.
func (m *Mapper) appendValue(b []byte, v any) []byte {
	if m.numStrings {
		switch x := v.(type) {
		case int64:
			if x > maxSafeInteger || x < -maxSafeInteger {
				b = append(b, '"')
				b = strconv.AppendInt(b, x, 10)
				return append(b, '"')
			}
		case Numeric:
			return appendString(b, string(x))
		}
	}
	return AppendValue(b, v)
}

// AppendValue appends the JSON form of a column value (see Column.Value).
func AppendValue(b []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...)
	case bool:
		return strconv.AppendBool(b, x)
	case int64:
		return strconv.AppendInt(b, x, 10)
	case int32:
		return strconv.AppendInt(b, int64(x), 10)
	case float64:
		return appendFloat(b, x)
	case string:
		return appendString(b, x)
	case json.RawMessage:
		if len(x) == 0 {
			return append(b, "null"...)
		}
		return append(b, x...)
	case Numeric:
		return append(b, x...)
	case time.Time:
		b = append(b, '"')
		b = appendTime(b, x)
		return append(b, '"')
	}
	out, err := json.Marshal(v)
	if err != nil {
		return appendString(b, fmt.Sprint(v))
	}
	return append(b, out...)
}

// appendFloat writes finite floats as JSON numbers and NaN and ±Infinity,
// which JSON cannot hold, as the strings PostgreSQL prints for them.
func appendFloat(b []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(b, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(b, `"Infinity"`...)
	case math.IsInf(f, -1):
		return append(b, `"-Infinity"`...)
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	return strconv.AppendFloat(b, f, format, -1, 64)
}

const hex = "0123456789abcdef"

// plain8 reports whether the eight bytes packed in x are all ASCII that
// JSON carries unescaped: none below 0x20, none '"' or '\\', none 0x80 or
// above (the bit tricks of "Bit Twiddling Hacks": hasless and haszero,
// exact for the question "is there any").
func plain8(x uint64) bool {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	ctrl := (x - 0x20*lo) &^ x & hi
	q := x ^ ('"' * lo)
	q = (q - lo) &^ q & hi
	bs := x ^ ('\\' * lo)
	bs = (bs - lo) &^ bs & hi
	return ctrl|q|bs|(x&hi) == 0
}

// appendString writes s as a JSON string. Invalid UTF-8 becomes U+FFFD, as
// encoding/json does; U+2028 and U+2029 are escaped so the frame is safe to
// embed in a script.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		// Most text is plain ASCII: skip it eight bytes at a time.
		for i+8 <= len(s) && plain8(uint64(s[i])|uint64(s[i+1])<<8|uint64(s[i+2])<<16|uint64(s[i+3])<<24|
			uint64(s[i+4])<<32|uint64(s[i+5])<<40|uint64(s[i+6])<<48|uint64(s[i+7])<<56) {
			i += 8
		}
		if i == len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
