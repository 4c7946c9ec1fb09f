package ws

import (
	"context"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/walcast/walcast/internal/hub"
)

// rawRead returns the next text frame's bytes.
func rawRead(t *testing.T, c *websocket.Conn) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rawDial(t *testing.T, url, tok string) *websocket.Conn {
	t.Helper()
	conn, _, err := websocket.Dial(context.Background(), strings.Replace(url, "http", "ws", 1)+"/?token="+tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetReadLimit(1 << 20)
	t.Cleanup(func() { _ = conn.CloseNow() })
	return conn
}

func rawSend(t *testing.T, c *websocket.Conn, b []byte) {
	t.Helper()
	if err := c.Write(context.Background(), websocket.MessageText, b); err != nil {
		t.Fatal(err)
	}
}

// TestAttackInvalidUTF8Relayed: a member broadcasts a payload (and sets a
// meta) holding bytes that are not UTF-8 inside a JSON string. walcast
// relays them verbatim in a text frame: a browser fails the WebSocket
// (1007) on a text frame that is not UTF-8, so one member disconnects
// every browser subscribed to the project, and with a meta, every browser
// that asks for presence_state afterwards.
func TestInvalidUTF8IsNeverRelayed(t *testing.T) {
	members := memberSet{projectA + "/" + userA: true, projectA + "/" + userB: true}
	_, url, _ := protocolServer(t, Config{}, hub.Config{}, members)
	a, b := rawDial(t, url, issue(t, userA, time.Hour)), rawDial(t, url, issue(t, userB, time.Hour))
	rawSend(t, a, []byte(`{"action":"subscribe","project_id":"`+projectA+`"}`))
	rawRead(t, a)
	rawSend(t, b, []byte(`{"action":"subscribe","project_id":"`+projectA+`","presence":true}`))
	rawRead(t, b)
	rawRead(t, b) // presence_state
	// Refused (bad_request to the sender), relayed to nobody: b's next
	// frame is the next valid broadcast.
	bad := append([]byte(`{"action":"broadcast","project_id":"`+projectA+`","event":"typing","payload":{"x":"`), 0xff, 0xfe, '"', '}', '}')
	rawSend(t, a, bad)
	if got := rawRead(t, a); !strings.Contains(string(got), `"bad_request"`) {
		t.Fatalf("the sender got %q", got)
	}
	meta := append([]byte(`{"action":"presence","project_id":"`+projectA+`","meta":{"x":"`), 0xc3, '"', '}', '}')
	rawSend(t, a, meta)
	if got := rawRead(t, a); !strings.Contains(string(got), `"bad_request"`) {
		t.Fatalf("the sender got %q", got)
	}
	rawSend(t, a, []byte(`{"action":"broadcast","project_id":"`+projectA+`","event":"typing","payload":{"x":"ok"}}`))
	if got := rawRead(t, b); !utf8.Valid(got) || !strings.Contains(string(got), `"ok"`) {
		t.Fatalf("b got %q", got)
	}
}

// TestAttackHTMLEscapeAmplifies: the payload bound counts the client's
// bytes; json.Marshal of the RawMessage escapes '<', '>', '&' (and
// U+2028/9) to six bytes each, so each relayed frame can be about six
// times ephemeral_max_bytes.
func TestRelayedFramesAreNotHTMLEscaped(t *testing.T) {
	members := memberSet{projectA + "/" + userA: true, projectA + "/" + userB: true}
	_, url, _ := protocolServer(t, Config{}, hub.Config{}, members)
	a, b := rawDial(t, url, issue(t, userA, time.Hour)), rawDial(t, url, issue(t, userB, time.Hour))
	rawSend(t, a, []byte(`{"action":"subscribe","project_id":"`+projectA+`"}`))
	rawRead(t, a)
	rawSend(t, b, []byte(`{"action":"subscribe","project_id":"`+projectA+`"}`))
	rawRead(t, b)
	max := withDefaults(Config{}).MaxEphemeralBytes
	payload := `{"x":"` + strings.Repeat("<", max-8) + `"}`
	rawSend(t, a, []byte(`{"action":"broadcast","project_id":"`+projectA+`","event":"e","payload":`+payload+`}`))
	got := rawRead(t, b)
	t.Logf("payload %d bytes (bound %d) -> frame %d bytes", len(payload), max, len(got))
	if len(got) > 2*max {
		t.Errorf("relayed frame is %d bytes for a payload of %d", len(got), len(payload))
	}
}

// TestExpiredTokenLeavesPresenceAtOnce: a socket whose token expires
// leaves presence (and its subscriptions) when walcast decides to close
// it, not when the peer answers the close: alice's client never reads, so
// the close handshake never ends.
func TestExpiredTokenLeavesPresenceAtOnce(t *testing.T) {
	members := memberSet{projectA + "/" + userA: true, projectA + "/" + userB: true}
	s, url, _ := protocolServer(t, Config{WriteTimeout: 8 * time.Second}, hub.Config{}, members)
	clk := &fakeClock{now: time.Now()}
	s.clock = clk
	a := rawDial(t, url, issue(t, userA, time.Hour))
	rawSend(t, a, []byte(`{"action":"subscribe","project_id":"`+projectA+`"}`))
	rawRead(t, a) // and never again: the close is not answered
	b := dialJSON(t, url, issue(t, userB, 3*time.Hour))
	b.send(`{"action":"subscribe","project_id":"` + projectA + `","presence":true}`)
	b.must(5 * time.Second)
	if f := b.must(5 * time.Second); f["type"] != "presence_state" || len(f["users"].(map[string]any)) != 2 {
		t.Fatalf("state %v", f)
	}
	clk.advance(2 * time.Hour)
	if f := b.must(2 * time.Second); f["type"] != "presence_diff" || f["leaves"].(map[string]any)[userA] == nil {
		t.Fatalf("after alice's token expired: %v", f)
	}
}
