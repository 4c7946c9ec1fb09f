package ws

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/walcast/walcast/internal/access"
	"github.com/walcast/walcast/internal/auth"
	"github.com/walcast/walcast/internal/events"
	"github.com/walcast/walcast/internal/hub"
	"github.com/walcast/walcast/internal/metrics"
)

// frame writes one masked client frame.
func (c *rawClient) frame(opcode byte, payload []byte) error {
	b := []byte{0x80 | opcode}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	default:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	}
	key := [4]byte{1, 2, 3, 4}
	b = append(b, key[:]...)
	for i, p := range payload {
		b = append(b, p^key[i%4])
	}
	_, err := c.conn.Write(b)
	return err
}

// TestPingFloodHurtsNoOtherSocket: a client that floods pings and never
// reads fills its own socket with pongs. Nothing it does may hold up the
// write workers that serve every other socket: the victims receive every
// frame, in order, and none is closed; the flooder is closed.
func TestPingFloodHurtsNoOtherSocket(t *testing.T) {
	_, h, url := newTestServer(t, Config{WriteTimeout: 2 * time.Second, WriteWorkers: 2, FrameRate: 1e6, FrameBurst: 1e6}, 256)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const victimsProject, attackerProject = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"

	// Two flooders: subscribed to a busy project of their own, reading
	// nothing, pinging with the largest control frames as fast as they can
	// (the frame rate is set out of the way: the write path is on trial).
	var flooders sync.WaitGroup
	attackers := make([]*rawClient, 2)
	for i := range attackers {
		a := dialRawBuffer(t, url, 4096)
		defer a.conn.Close()
		attackers[i] = a
		if err := a.frame(0x1, []byte(`{"action":"subscribe","project_id":"`+attackerProject+`"}`)); err != nil {
			t.Fatal(err)
		}
		flooders.Add(1)
		go func() {
			defer flooders.Done()
			ping := bytes.Repeat([]byte{'p'}, 125)
			// Until the server closes the socket: how many pings that
			// takes depends on the kernels' buffers, which grow on a
			// loaded machine.
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
				if a.frame(0x9, ping) != nil {
					return // closed by the server
				}
			}
		}()
	}

	const victims, txns = 10, 1500
	conns := make([]*websocket.Conn, victims)
	for i := range conns {
		c, _, err := websocket.Dial(ctx, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"action":"subscribe","project_id":"`+victimsProject+`"}`)); err != nil {
			t.Fatal(err)
		}
		if _, b, err := c.Read(ctx); err != nil || !strings.Contains(string(b), `"subscribed"`) {
			t.Fatalf("victim subscribe: %s %v", b, err)
		}
		conns[i] = c
	}
	errs := make(chan error, victims)
	for i, c := range conns {
		go func() {
			for n := range txns {
				_, b, err := c.Read(ctx)
				if err != nil {
					errs <- fmt.Errorf("victim %d at frame %d: %w", i, n, err)
					return
				}
				if want := fmt.Sprintf(`"seq":%d}`, n); !strings.Contains(string(b), want) {
					errs <- fmt.Errorf("victim %d: frame %d is %s", i, n, b)
					return
				}
			}
			errs <- nil
		}()
	}

	// Both projects busy, paced: a burst would overflow the victims'
	// queues on its own.
	pad := strings.Repeat("x", 2000)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for n := range txns {
		<-tick.C
		p := events.Position{LSN: 0x1000 + uint64(n)}
		h.Publish([]events.Event{
			{Position: p, ProjectID: attackerProject, Type: "message_created", CommitTime: time.Now(),
				Payload: fmt.Appendf(nil, `{"type":"message_created","pad":%q}`, pad)},
			{Position: events.Position{LSN: p.LSN, Index: 1}, ProjectID: victimsProject, Type: "message_created", CommitTime: time.Now(),
				Payload: fmt.Appendf(nil, `{"type":"message_created","seq":%d}`, n)},
		})
	}
	for range victims {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}

	// The flooders are closed: reading now drains what was sent and ends
	// (with EOF, or a reset for what the server left unsent), before the
	// deadline.
	for i, a := range attackers {
		_ = a.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err := io.Copy(io.Discard, a.br)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("flooder %d still open: %v", i, err)
		}
	}
	flooders.Wait()
}

// TestFrameFloodIsClosed: reading a flood costs CPU even when nothing is
// answered, so a socket that keeps sending pings (or any frame) far past
// its rate is closed with 1008, having been answered no more than its
// rate allows.
func TestFrameFloodIsClosed(t *testing.T) {
	for _, opcode := range []byte{0x9, 0x1} {
		t.Run(fmt.Sprintf("opcode %d", opcode), func(t *testing.T) {
			s, _, url := newTestServer(t, Config{WriteTimeout: 2 * time.Second, FrameRate: 20, FrameBurst: 50}, 64)
			c := dialRaw(t, url)
			defer c.conn.Close()
			go func() {
				payload := []byte(`{"action":"ping"}`)
				for range 5 * floodFrames {
					if c.frame(opcode, payload) != nil {
						return
					}
				}
			}()
			_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			answered := 0
			for {
				op, p, err := c.next()
				if errors.Is(err, syscall.ECONNRESET) {
					// The server closed with the flood's frames unread, so
					// its kernel answered them with a reset, which can
					// overtake the close frame on the way: the server's
					// count says what it did.
					if n := testutil.ToFloat64(s.metrics.FloodCloses); n != 1 {
						t.Fatalf("reset without a flood close (%v counted)", n)
					}
					return
				}
				if err != nil {
					t.Fatalf("no close frame: %v (%d answers)", err, answered)
				}
				if op == 0x8 {
					if code := int(p[0])<<8 | int(p[1]); code != int(websocket.StatusPolicyViolation) {
						t.Fatalf("close code %d (%s)", code, p[2:])
					}
					break
				}
				answered++
			}
			// Answers queued when the flood is cut may go unsent (the
			// close goes first): only an upper bound holds every time.
			if answered > 5*floodFrames/2 {
				t.Fatalf("%d answers to %d frames", answered, 5*floodFrames)
			}
		})
	}
}

// nextFrame reads one whole server frame of any length.
func (c *rawClient) nextFrame() (byte, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(b[0])<<8 | uint64(b[1])
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return 0, nil, err
		}
		n = 0
		for _, x := range b {
			n = n<<8 | uint64(x)
		}
	}
	p := make([]byte, n)
	_, err := io.ReadFull(c.br, p)
	return h[0] & 0x0F, p, err
}

// TestSlowReaderEndsWith4008AfterWholeFrames: a client that reads, but
// too slowly for the write timeout, is closed with a 4008 close frame that
// follows whole frames (never cut mid-frame), and the close is counted.
func TestSlowReaderEndsWith4008AfterWholeFrames(t *testing.T) {
	s, h, url := newTestServer(t, Config{WriteTimeout: 300 * time.Millisecond, WriteWorkers: 1}, 1<<20)
	c := dialRawBuffer(t, url, 16<<10)
	defer c.conn.Close()
	const project = "cccccccc-cccc-4ccc-8ccc-cccccccccccc"
	if err := c.frame(0x1, []byte(`{"action":"subscribe","project_id":"`+project+`"}`)); err != nil {
		t.Fatal(err)
	}
	if _, p, err := c.nextFrame(); err != nil || !strings.Contains(string(p), "subscribed") {
		t.Fatalf("subscribe: %s %v", p, err)
	}
	pad := strings.Repeat("x", 2000)
	for n := range 3000 { // 6 MB: far more than the client takes in the timeout
		h.Publish([]events.Event{{Position: events.Position{LSN: 0x1000 + uint64(n)}, ProjectID: project, Type: "message_created",
			CommitTime: time.Now(), Payload: fmt.Appendf(nil, `{"seq":%d,"pad":%q}`, n, pad)}})
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	next := 0
	for {
		op, p, err := c.nextFrame()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			// The close frame did not fit in the write timeout either (a
			// loaded machine reads slower still): the connection ended
			// on a frame boundary, and the server counted a slow close.
			if n := testutil.ToFloat64(s.metrics.SlowConsumerCloses); n != 1 || err == io.ErrUnexpectedEOF && next == 0 {
				t.Fatalf("after %d whole frames, %v with %v slow closes", next, err, n)
			}
			break
		}
		if err != nil {
			t.Fatalf("after %d whole frames, no close frame: %v", next, err)
		}
		if op == 0x8 {
			if code := int(p[0])<<8 | int(p[1]); code != int(CloseSlowConsumer) {
				t.Fatalf("close code %d", code)
			}
			break
		}
		if want := fmt.Sprintf(`{"seq":%d,`, next); !strings.HasPrefix(string(p), want) || !strings.HasSuffix(string(p), `"}`) {
			t.Fatalf("frame %d is not whole: %.40s…%q", next, p, p[max(0, len(p)-5):])
		}
		next++
		time.Sleep(2 * time.Millisecond) // the slow reader: ~1 MB/s
	}
	if next == 0 || next == 3000 {
		t.Fatalf("%d frames before the close", next)
	}
	if got := testutil.ToFloat64(s.metrics.SlowConsumerCloses); got != 1 {
		t.Fatalf("slow consumer closes counted: %v", got)
	}
}

// slowMembers says yes after a moment, so that subscribes overlap.
type slowMembers struct{}

func (slowMembers) Lookup(ctx context.Context, _, _ string, _ bool) (access.Proof, error) {
	select {
	case <-time.After(50 * time.Millisecond):
	case <-ctx.Done():
	}
	return access.Proof{Member: true, Fresh: true}, nil
}

// TestManySubscribesOfAMemberAreNotLimited: the per-user budget of refused
// subscribes is charged only by refusals: a member subscribing to many
// projects from many sockets at once is never answered rate_limited.
func TestManySubscribesOfAMemberAreNotLimited(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry())
	h := hub.New(hub.Config{QueueSize: 64, AccessWait: time.Second}, m)
	h.SetFloor(1)
	v, _ := auth.NewVerifier([]byte(testSecret), "HS256", 0)
	s := NewServer(withDefaults(Config{WriteTimeout: 2 * time.Second, FrameRate: 100, FrameBurst: 100, ForbiddenRate: 1, ForbiddenBurst: 5}),
		h, v, slowMembers{}, slog.New(slog.NewTextHandler(io.Discard, nil)), m)
	running(t, s)
	srv := httptest.NewServer(s)
	defer srv.Close()
	tok, _ := auth.Issue([]byte(testSecret), "HS256", "11111111-1111-4111-8111-111111111111", time.Hour, time.Now())
	url := strings.Replace(srv.URL, "http", "ws", 1) + "/?token=" + tok
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 5 {
		c, _, err := websocket.Dial(ctx, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		for p := range 8 {
			project := fmt.Sprintf("%08d-0000-4000-8000-000000000000", p)
			if err := c.Write(ctx, websocket.MessageText, []byte(`{"action":"subscribe","project_id":"`+project+`"}`)); err != nil {
				t.Fatal(err)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 8 {
				_, b, err := c.Read(ctx)
				if err != nil || !strings.Contains(string(b), `"subscribed"`) {
					errs <- fmt.Errorf("%s %v", b, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestFloodsTheFrameLimiterCannotSeeAreClosed: empty continuation frames
// of a message that never ends, and unsolicited pongs, never reach the
// socket's frame limiter as messages or pings; they cost CPU all the
// same. They are held to the socket's byte budget and the socket is
// closed (1008, or reset: the close frame goes only if it fits at once).
func TestFloodsTheFrameLimiterCannotSeeAreClosed(t *testing.T) {
	for _, flood := range []string{"continuation", "pong"} {
		t.Run(flood, func(t *testing.T) {
			s, _, url := newTestServer(t, Config{WriteTimeout: 2 * time.Second, FrameRate: 20, FrameBurst: 50, ReadLimit: 4096}, 64)
			c := dialRaw(t, url)
			defer c.conn.Close()
			var frame []byte
			switch flood {
			case "continuation":
				_, _ = c.conn.Write([]byte{0x01, 0x80, 1, 2, 3, 4}) // text, FIN=0, empty
				frame = []byte{0x00, 0x80, 1, 2, 3, 4}              // continuation, FIN=0, empty
			case "pong":
				frame = []byte{0x8A, 0x80, 1, 2, 3, 4}
			}
			batch := bytes.Repeat(frame, 1000)
			done := make(chan struct{})
			go func() {
				defer close(done)
				deadline := time.Now().Add(20 * time.Second)
				for time.Now().Before(deadline) {
					if _, err := c.conn.Write(batch); err != nil {
						return // closed by the server
					}
				}
			}()
			select {
			case <-done:
			case <-time.After(25 * time.Second):
				t.Fatal("the flood was never stopped")
			}
			if got := testutil.ToFloat64(s.metrics.FloodCloses); got != 1 {
				t.Fatalf("flood closes counted: %v", got)
			}
		})
	}
}
