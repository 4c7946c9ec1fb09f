package ws

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/walcast/walcast/internal/auth"
	"github.com/walcast/walcast/internal/clientaddr"
	"github.com/walcast/walcast/internal/config"
	"github.com/walcast/walcast/internal/events"
	"github.com/walcast/walcast/internal/eventually"
	"github.com/walcast/walcast/internal/hub"
	"github.com/walcast/walcast/internal/metrics"
)

const testSecret = "0123456789abcdef0123"

// newTestServer serves sockets that may subscribe to anything, and
// returns a socket URL with a token.
func newTestServer(t *testing.T, cfg Config, queue int) (*Server, *hub.Hub, string) {
	t.Helper()
	s, url, _ := protocolServer(t, cfg, hub.Config{QueueSize: queue}, allowAll{})
	return s, s.hub, strings.Replace(url, "http", "ws", 1) + "/?token=" + issue(t, userA, time.Hour)
}

// dialSmall opens a socket with a small receive buffer, so the server's
// writes stop fitting soon after the client stops reading. (Not smaller
// than two loopback segments of 64 KiB: below that the receiver never
// announces the window it frees, and the sender waits on its persist
// timer for seconds.)
func dialSmall(ctx context.Context, t *testing.T, url string) *websocket.Conn {
	t.Helper()
	var dialer net.Dialer
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err == nil {
			_ = c.(*net.TCPConn).SetReadBuffer(256 << 10)
		}
		return c, err
	}}}
	conn, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: client})
	if err != nil {
		t.Fatal(err)
	}
	conn.SetReadLimit(1 << 20)
	return conn
}

// A socket that stops reading fills its kernel buffer: the write worker's
// write then takes only part of a batch, hands the rest to the socket's
// goroutine, and goes on with other sockets. When the client reads again
// every frame arrives once, whole, and in order.
func TestWorkerHandsAFullSocketToItsGoroutine(t *testing.T) {
	s, h, url := newTestServer(t, Config{WriteTimeout: 10 * time.Second, WriteWorkers: 1}, 1<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := dialSmall(ctx, t, url)
	defer conn.CloseNow()
	const project = "22222222-2222-4222-8222-222222222222"
	if err := conn.Write(ctx, websocket.MessageText, []byte(`{"action":"subscribe","project_id":"`+project+`"}`)); err != nil {
		t.Fatal(err)
	}
	if _, b, err := conn.Read(ctx); err != nil || !strings.Contains(string(b), `"subscribed"`) {
		t.Fatalf("subscribe: %s %v", b, err)
	}

	// ~8 MB, far more than the socket buffers on both ends hold.
	const n = 8000
	pad := strings.Repeat("x", 1000)
	for i := range n {
		p := events.Position{LSN: 0x1000 + uint64(i), Index: 0}
		h.Publish([]events.Event{{Position: p, ProjectID: project, Type: "message_created", CommitTime: time.Now(),
			Payload: fmt.Appendf(nil, `{"type":"message_created","seq":%d,"pad":%q}`, i, pad)}})
	}
	if !eventually.Poll(10*time.Second, func() bool { return s.workers[0].handedOver.Load() > 0 }) {
		t.Fatal("the worker never met a full socket; the test does not exercise the hand-over")
	}
	for i := range n {
		_, b, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if want := fmt.Sprintf(`"seq":%d,`, i); !strings.Contains(string(b), want) {
			t.Fatalf("frame %d is %.60s…, want %s", i, b, want)
		}
	}
}

// running runs s's write workers for the test: stopped, and waited for,
// at its end.
func running(t *testing.T, s *Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// withDefaults fills what a test leaves zero from config.Default(), the
// one source of defaults (NewServer takes its values as they are). The
// connect and forbidden limits stay off unless a test sets them.
func withDefaults(c Config) Config {
	d := config.Default().WS
	if c.WriteTimeout == 0 {
		c.WriteTimeout = d.WriteTimeout
	}
	if c.ReadLimit == 0 {
		c.ReadLimit = d.ReadLimit
	}
	if c.FrameRate == 0 {
		c.FrameRate, c.FrameBurst = d.FrameRate, d.FrameBurst
	}
	if c.ClientIP == nil {
		none, _ := clientaddr.New(nil)
		c.ClientIP = none.ClientIP
	}
	if c.EphemeralRate == 0 {
		c.EphemeralRate, c.EphemeralBurst = d.EphemeralRate, d.EphemeralBurst
	}
	if c.MaxEphemeralBytes == 0 {
		c.MaxEphemeralBytes = d.EphemeralMaxBytes
	}
	return c
}

// An idle socket holds one goroutine, its reader: the writer runs only
// while it has something to do, and a ping waits for its pong without
// one. At tens of thousands of idle sockets each goroutine's stack is
// kilobytes of memory per socket.
func TestAnIdleSocketHoldsOneGoroutine(t *testing.T) {
	const sockets = 40
	_, _, url := newTestServer(t, Config{PingInterval: 20 * time.Millisecond, WriteTimeout: 5 * time.Second}, 64)
	before := runtime.NumGoroutine()
	for range sockets {
		c := dialRaw(t, url)
		defer c.conn.Close()
		if err := c.frame(0x1, []byte(`{"action":"subscribe","project_id":"`+projectA+`"}`)); err != nil {
			t.Fatal(err)
		}
		_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for { // pings may come before the reply
			op, p, err := c.next()
			if err != nil {
				t.Fatal(err)
			}
			if op == 0x9 {
				_ = c.pong(p)
				continue
			}
			if !strings.Contains(string(p), `"subscribed"`) {
				t.Fatalf("got %s; want subscribed", p)
			}
			break
		}
	}
	// Pings keep coming (every 20 ms) and are not answered from here on;
	// the write timeout is far.
	idle := func() bool { return runtime.NumGoroutine()-before <= sockets+sockets/4 }
	eventually.True(t, 5*time.Second, "one goroutine per idle socket", idle)
}

// TestAnIdleSocketThatAnswersPingsWaitsShallow (found by an attack): the
// library reads pings and pongs inside its read of the next message, so a
// socket whose client answered a ping waited for its next message twenty
// calls deep, and every browser answers pings. Now an idle socket's only
// goroutine waits in waitReadable, pongs and pings included, and a
// client's ping is answered with its payload.
func TestAnIdleSocketThatAnswersPingsWaitsShallow(t *testing.T) {
	const sockets = 20
	_, _, url := newTestServer(t, Config{PingInterval: 20 * time.Millisecond, WriteTimeout: 5 * time.Second}, 64)
	var clients []*rawClient
	for range sockets {
		c := dialRaw(t, url)
		defer c.conn.Close()
		clients = append(clients, c)
		if err := c.frame(0x1, []byte(`{"action":"subscribe","project_id":"`+projectA+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	// Each client answers three pings, sends one of its own and takes
	// the pong.
	for i, c := range clients {
		_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		pings, ponged := 0, false
		for pings < 3 || !ponged {
			op, p, err := c.next()
			if err != nil {
				t.Fatal(err)
			}
			switch op {
			case 0x9:
				if pings++; pings == 2 {
					if err := c.frame(0x9, []byte(fmt.Sprintf("client %d", i))); err != nil {
						t.Fatal(err)
					}
				}
				if err := c.pong(p); err != nil {
					t.Fatal(err)
				}
			case 0xA:
				if string(p) != fmt.Sprintf("client %d", i) {
					t.Fatalf("pong %q", p)
				}
				ponged = true
			}
		}
	}
	// Pings keep coming and are no longer answered; the write timeout is
	// far. Every socket's goroutine waits in waitReadable.
	eventually.True(t, 5*time.Second, "every reader waits shallow", func() bool {
		shallow, deep := readers()
		return shallow == sockets && deep == 0
	})
}

// readers counts the sockets whose goroutine waits in waitReadable, and
// the messages being read in the library's read.
func readers() (shallow, deep int) {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "(*socket).readFrame") {
			deep++
		}
		if strings.Contains(g, "(*socket).readLoop") && strings.Contains(g, "waitReadable") {
			shallow++
		}
	}
	return shallow, deep
}

// TestSplitPingsAndPongsAreReadShallow (found by an attack): a pong that
// straddles the end of the read buffer behind a message, or a ping whose
// bytes come in two writes, was left to the library, which then read every
// later pong inside its read of the next message, deep. Now the first
// bytes are kept until the rest comes, and the socket waits shallow.
func TestSplitPingsAndPongsAreReadShallow(t *testing.T) {
	_, _, url := newTestServer(t, Config{PingInterval: 20 * time.Millisecond, WriteTimeout: 5 * time.Second}, 64)
	c := dialRaw(t, url)
	defer c.conn.Close()
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	// nextNonPing answers the server's pings until another frame comes.
	nextNonPing := func() (byte, []byte) {
		t.Helper()
		for {
			op, p, err := c.next()
			if err != nil {
				t.Fatal(err)
			}
			if op != 0x9 {
				return op, p
			}
			if err := c.pong(p); err != nil {
				t.Fatal(err)
			}
		}
	}
	var p []byte
	for op := byte(0); op != 0x9; {
		if op, p, _ = c.next(); op == 0 && p == nil {
			t.Fatal("no ping")
		}
	}
	// A 508-byte message, then the pong: 4 of its bytes end the
	// 512-byte read buffer.
	msg := `{"action":"ping"` + strings.Repeat(" ", 500-17) + `}`
	if n := len(maskedText(msg)); n != 508 {
		t.Fatalf("message frame of %d bytes", n)
	}
	if _, err := c.conn.Write(append(maskedText(msg), masked(0x8A, p, [4]byte{9, 8, 7, 6})...)); err != nil {
		t.Fatal(err)
	}
	if op, f := nextNonPing(); op != 0x1 || !strings.Contains(string(f), `"pong"`) {
		t.Fatalf("got %d %s, want the pong message", op, f)
	}
	eventually.True(t, 5*time.Second, "waits shallow after the split pong", func() bool {
		shallow, deep := readers()
		return shallow == 1 && deep == 0
	})
	// A ping of the client's own in two writes, the second once the
	// server has taken the first and waits.
	ping := masked(0x89, []byte("split"), [4]byte{1, 2, 3, 4})
	if _, err := c.conn.Write(ping[:3]); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 5*time.Second, "waits shallow with half a ping", func() bool {
		shallow, deep := readers()
		return shallow == 1 && deep == 0
	})
	if _, err := c.conn.Write(ping[3:]); err != nil {
		t.Fatal(err)
	}
	if op, f := nextNonPing(); op != 0xA || string(f) != "split" {
		t.Fatalf("got %d %q, want the pong of the split ping", op, f)
	}
	eventually.True(t, 5*time.Second, "waits shallow after the split ping", func() bool {
		shallow, deep := readers()
		return shallow == 1 && deep == 0
	})
}

// plainListener hides the connections' descriptors, as a wrapping listener
// (PROXY protocol, accounting) or TLS in the process does.
type plainListener struct{ net.Listener }

type plainConn struct{ net.Conn }

func (l plainListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return plainConn{c}, nil
}

// TestASocketWithoutADescriptorWaitsInTheLibrary (found by an attack):
// with no descriptor to wait on, the socket's goroutine found nothing to
// take and looked again at once, a core per idle socket. It leaves such a
// socket's reading to the library: answered, and parked.
func TestASocketWithoutADescriptorWaitsInTheLibrary(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry())
	h := hub.New(hub.Config{QueueSize: 64, AccessWait: time.Second}, m)
	h.SetFloor(1)
	v, _ := auth.NewVerifier([]byte(testSecret), "HS256", 0)
	s := NewServer(withDefaults(Config{}), h, v, allowAll{}, slog.New(slog.DiscardHandler), m)
	running(t, s)
	srv := httptest.NewUnstartedServer(s)
	srv.Listener = plainListener{srv.Listener}
	srv.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		srv.Close()
	})
	c := dialRaw(t, strings.Replace(srv.URL, "http", "ws", 1)+"/?token="+issue(t, userA, time.Hour))
	defer c.conn.Close()
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := c.frame(0x1, []byte(`{"action":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	if op, p, err := c.next(); err != nil || op != 0x1 || !strings.Contains(string(p), `"pong"`) {
		t.Fatalf("got %d %s %v", op, p, err)
	}
	if err := c.frame(0x9, []byte("plain")); err != nil {
		t.Fatal(err)
	}
	if op, p, err := c.next(); err != nil || op != 0xA || string(p) != "plain" {
		t.Fatalf("got %d %q %v", op, p, err)
	}
	eventually.True(t, 5*time.Second, "the socket's goroutine parked, waiting for its message", func() bool {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "(*socket).readLoop") && strings.HasPrefix(g[strings.Index(g, "["):], "[chan receive") {
				return true
			}
		}
		return false
	})
}
