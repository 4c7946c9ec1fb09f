package ws

// A client's pings and pongs are read by walcast itself when they are the
// next thing on a socket that has no message in progress: the library reads
// control frames inside its read of the next message, and a goroutine that
// waits there for a message that may not come for hours holds a stack grown
// twenty calls deep. Every browser answers the server's pings, so that was
// every idle socket after its first pong. Everything else (data, close,
// malformed or incomplete frames) is left to the library, which refuses
// what RFC 6455 forbids.

const (
	opPong byte = 0xA
	// maxControlPayload is RFC 6455 §5.5's bound on a control frame's
	// payload; maxClientControl the largest such frame from a client.
	maxControlPayload = 125
	maxClientControl  = 2 + 4 + maxControlPayload
)

// parseClientControl reports the complete ping or pong frame at the start
// of b: FIN set, no reserved bits, masked (RFC 6455 §5.1: a client masks
// every frame), a payload of at most 125 bytes. It unmasks the payload into
// payload and returns the opcode, the payload's length and the frame's
// length on the wire; size is 0 when b does not start with such a frame,
// or not with all of it yet.
func parseClientControl(b []byte, payload *[maxControlPayload]byte) (op byte, n, size int) {
	if len(b) < 2 || (b[0] != 0x80|opPing && b[0] != 0x80|opPong) || b[1]&0x80 == 0 {
		return 0, 0, 0
	}
	n = int(b[1] & 0x7F)
	if n > maxControlPayload {
		return 0, 0, 0
	}
	size = 2 + 4 + n
	if len(b) < size {
		return 0, 0, 0
	}
	key := b[2:6]
	for i := range n {
		payload[i] = b[6+i] ^ key[i&3]
	}
	return b[0] & 0x0F, n, size
}

// controlPrefix reports whether b is the start of a client ping or pong
// that has not all arrived yet: every byte of it what parseClientControl
// will accept once the rest comes. Such bytes are taken and kept (see
// socket.partial) instead of being left to the library.
func controlPrefix(b []byte) bool {
	if len(b) == 0 || (b[0] != 0x80|opPing && b[0] != 0x80|opPong) {
		return false
	}
	if len(b) == 1 {
		return true
	}
	n := int(b[1] & 0x7F)
	return b[1]&0x80 != 0 && n <= maxControlPayload && len(b) < 2+4+n
}
