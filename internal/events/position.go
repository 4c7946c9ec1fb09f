package events

import (
	"errors"
	"fmt"
	"strconv"
)

// Position orders every event walcast emits: the commit LSN of the
// transaction, then the index of the event within that transaction's events.
// Its text form, "%016X/%08X", sorts lexicographically in commit order.
type Position struct {
	LSN   uint64
	Index uint32
}

// ErrBadPosition is returned by ParsePosition for text that is not a position.
var ErrBadPosition = errors.New("malformed position")

// positionLen is the length of the text form: 16 hex digits, '/', 8 hex digits.
const positionLen = 16 + 1 + 8

// String formats p as "%016X/%08X".
func (p Position) String() string {
	return string(p.AppendText(make([]byte, 0, positionLen)))
}

// AppendText appends the text form of p to b.
func (p Position) AppendText(b []byte) []byte {
	const hexdigits = "0123456789ABCDEF"
	var buf [positionLen]byte
	for i := 15; i >= 0; i-- {
		buf[15-i] = hexdigits[(p.LSN>>(uint(i)*4))&0xF]
	}
	buf[16] = '/'
	for i := 7; i >= 0; i-- {
		buf[17+7-i] = hexdigits[(p.Index>>(uint(i)*4))&0xF]
	}
	return append(b, buf[:]...)
}

// Compare returns -1, 0 or +1 as p sorts before, with or after q.
func (p Position) Compare(q Position) int {
	switch {
	case p.LSN < q.LSN:
		return -1
	case p.LSN > q.LSN:
		return 1
	case p.Index < q.Index:
		return -1
	case p.Index > q.Index:
		return 1
	}
	return 0
}

// IsZero reports whether p is the zero position, before every event.
func (p Position) IsZero() bool { return p == Position{} }

// ParsePosition parses the text form written by String. Lowercase hex is
// accepted; anything else is ErrBadPosition.
func ParsePosition(s string) (Position, error) {
	if len(s) != positionLen || s[16] != '/' {
		return Position{}, fmt.Errorf("%w: %q", ErrBadPosition, truncate(s, 40))
	}
	lsn, err := strconv.ParseUint(s[:16], 16, 64)
	if err != nil {
		return Position{}, fmt.Errorf("%w: %q", ErrBadPosition, truncate(s, 40))
	}
	idx, err := strconv.ParseUint(s[17:], 16, 32)
	if err != nil {
		return Position{}, fmt.Errorf("%w: %q", ErrBadPosition, truncate(s, 40))
	}
	return Position{LSN: lsn, Index: uint32(idx)}, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
