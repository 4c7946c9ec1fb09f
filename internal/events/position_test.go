package events

import (
	"errors"
	"sort"
	"testing"
)

func TestPositionText(t *testing.T) {
	cases := []struct {
		pos  Position
		text string
	}{
		{Position{}, "0000000000000000/00000000"},
		{Position{LSN: 0x16B3748, Index: 1}, "00000000016B3748/00000001"},
		{Position{LSN: ^uint64(0), Index: ^uint32(0)}, "FFFFFFFFFFFFFFFF/FFFFFFFF"},
		{Position{LSN: 0xABCDEF0123456789, Index: 0x10}, "ABCDEF0123456789/00000010"},
	}
	for _, c := range cases {
		t.Run(c.text, func(t *testing.T) {
			if got := c.pos.String(); got != c.text {
				t.Fatalf("String() = %q, want %q", got, c.text)
			}
			back, err := ParsePosition(c.text)
			if err != nil || back != c.pos {
				t.Fatalf("ParsePosition(%q) = %v, %v", c.text, back, err)
			}
		})
	}
}

func TestParsePositionRejects(t *testing.T) {
	for _, s := range []string{
		"", "0/0", "00000000016B3748", "00000000016B3748/0000001", "00000000016B3748-00000001",
		"0000000G016B3748/00000001", "+000000000000001/00000001", "00000000016B3748/0000000x",
		"00000000016B3748/000000001", " 0000000016B3748/00000001",
	} {
		if _, err := ParsePosition(s); !errors.Is(err, ErrBadPosition) {
			t.Errorf("ParsePosition(%q) err = %v, want ErrBadPosition", s, err)
		}
	}
	if p, err := ParsePosition("00000000016b3748/0000000a"); err != nil || p != (Position{LSN: 0x16B3748, Index: 10}) {
		t.Errorf("lowercase: %v %v", p, err)
	}
}

// Text order must equal numeric order: clients compare positions as strings.
func TestPositionTextSortsLikeCompare(t *testing.T) {
	ps := []Position{{5, 0}, {1, 7}, {1, 0}, {0x100000000, 0}, {0xFF, 0xFFFFFFFF}, {0, 1}}
	texts := make([]string, len(ps))
	for i, p := range ps {
		texts[i] = p.String()
	}
	sort.Strings(texts)
	sort.Slice(ps, func(i, j int) bool { return ps[i].Compare(ps[j]) < 0 })
	for i := range ps {
		if ps[i].String() != texts[i] {
			t.Fatalf("order differs at %d: %s vs %s", i, ps[i], texts[i])
		}
	}
}

func FuzzParsePosition(f *testing.F) {
	f.Add("00000000016B3748/00000001")
	f.Add("FFFFFFFFFFFFFFFF/FFFFFFFF")
	f.Add("0/0")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePosition(s)
		if err != nil {
			return
		}
		back, err := ParsePosition(p.String())
		if err != nil || back != p {
			t.Fatalf("round trip of %q: %v %v", s, back, err)
		}
	})
}
