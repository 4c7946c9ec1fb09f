package ws

import (
	"bytes"
	"testing"
)

// masked builds a client frame: first byte, payload masked with key.
func masked(first byte, payload []byte, key [4]byte) []byte {
	b := []byte{first, 0x80 | byte(len(payload)), key[0], key[1], key[2], key[3]}
	for i, c := range payload {
		b = append(b, c^key[i&3])
	}
	return b
}

func TestParseClientControl(t *testing.T) {
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	pong := masked(0x8A, []byte("hello"), key)
	full125 := masked(0x89, bytes.Repeat([]byte{'p'}, 125), key)
	for _, tc := range []struct {
		name    string
		in      []byte
		op      byte
		payload string
		size    int
	}{
		{"pong", pong, opPong, "hello", len(pong)},
		{"pong then more", append(append([]byte{}, pong...), 0x81, 0x80), opPong, "hello", len(pong)},
		{"empty ping", masked(0x89, nil, key), opPing, "", 6},
		{"ping of 125 bytes", full125, opPing, string(bytes.Repeat([]byte{'p'}, 125)), 131},
		{"incomplete payload", pong[:len(pong)-1], 0, "", 0},
		{"incomplete key", pong[:4], 0, "", 0},
		{"one byte", pong[:1], 0, "", 0},
		{"nothing", nil, 0, "", 0},
		{"unmasked", []byte{0x8A, 0x00}, 0, "", 0},
		{"no FIN", masked(0x0A, nil, key), 0, "", 0},
		{"reserved bit", masked(0xCA, nil, key), 0, "", 0},
		{"close", masked(0x88, []byte{0x03, 0xE8}, key), 0, "", 0},
		{"text", masked(0x81, []byte("{}"), key), 0, "", 0},
		{"continuation", masked(0x00, nil, key), 0, "", 0},
		{"extended length", []byte{0x89, 0x80 | 126, 0, 200, 1, 2, 3, 4}, 0, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p [maxControlPayload]byte
			op, n, size := parseClientControl(tc.in, &p)
			if op != tc.op || size != tc.size || string(p[:n]) != tc.payload {
				t.Fatalf("got op %#x payload %q size %d, want op %#x payload %q size %d", op, p[:n], size, tc.op, tc.payload, tc.size)
			}
		})
	}
}

// FuzzParseClientControl: never past the input, and a frame it accepts is
// exactly a masked ping or pong of the payload it returns.
func FuzzParseClientControl(f *testing.F) {
	key := [4]byte{1, 2, 3, 4}
	f.Add(masked(0x8A, []byte("hello"), key))
	f.Add(masked(0x89, nil, key))
	f.Add([]byte{0x89, 0xFE, 0, 200})
	f.Add(masked(0x81, []byte("{}"), key))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p [maxControlPayload]byte
		op, n, size := parseClientControl(b, &p)
		if size == 0 {
			return
		}
		if size > len(b) || (op != opPing && op != opPong) {
			t.Fatalf("op %#x size %d of %d bytes", op, size, len(b))
		}
		if again := masked(0x80|op, p[:n], [4]byte(b[2:6])); !bytes.Equal(again, b[:size]) {
			t.Fatalf("accepted % x, which is not % x", b[:size], again)
		}
	})
}
