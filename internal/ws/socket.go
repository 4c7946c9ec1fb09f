package ws

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/walcast/walcast/internal/access"
	"github.com/walcast/walcast/internal/events"
	"github.com/walcast/walcast/internal/hub"
)

// socket is one connection's life after the upgrade: its reader, its
// writer, and what ends it.
type socket struct {
	srv  *Server
	conn *websocket.Conn
	cork *corkConn
	// reader is the library's buffered reader of the connection; bytes
	// sent behind the handshake wait in it.
	reader *bufio.Reader
	// closing is set once the socket's close frame is on its way: pings
	// are no longer answered (the library gives up its closing handshake,
	// and resets the connection, when it cannot answer one).
	closing atomic.Bool
	// partial is the start of a client's ping or pong whose rest has not
	// arrived (takeControlFrame); nil otherwise. Read goroutine only.
	partial []byte
	sent    map[string]prometheus.Counter // events_sent_total by type; guarded by wmu
	client  *hub.Client
	id      uint64
	// expires is the token's expiry in Unix nanoseconds; refresh_token
	// moves it.
	expires atomic.Int64
	expiry  timer
	// ctx ends the socket; cancel is called by whichever of the reader
	// and the writer finishes first.
	ctx    context.Context
	cancel context.CancelFunc
	// tasks are the socket's goroutines besides its reader: the writer
	// and pings in flight; run waits for them.
	tasks sync.WaitGroup
	// The writer goroutine runs only while the socket has something to
	// do (see startWriter). writerOn is true while run may start it;
	// writerRunning while it runs. Both guarded by writerMu.
	writerMu      sync.Mutex
	writerOn      bool
	writerRunning bool
	// pingTimer is nil when pings are off. pingWaiting is when the
	// oldest ping not answered yet was sent and pongAt when the last pong
	// came (monoNow; 0: none); nextPing is the ping timer's own.
	pingTimer   *time.Timer
	pingWaiting atomic.Int64
	pongAt      atomic.Int64
	nextPing    int64
	// pingMu is held by a tick and by run when it stops the timer;
	// pingStopped says the socket has ended (or is closing for want of a
	// pong): no tick writes or re-arms after it.
	pingMu      sync.Mutex
	pingStopped bool
	// signals are socket events for the writer (sig* bits), each followed
	// by a Wake of the client: the writer waits on one channel only.
	signals atomic.Uint32
	// wmu is held by whoever writes queued frames: the socket's own
	// goroutine or its write worker.
	wmu       sync.Mutex
	worker    *writeWorker
	scheduled atomic.Bool // waiting in worker's queue
	limiter   *rate.Limiter
	// ephemeral limits broadcast and presence frames.
	ephemeral *rate.Limiter
	// overLimit counts frames in a row over the rate. The read goroutine
	// counts, and so does the library's reader of a close handshake.
	overLimit atomic.Int32
	log       *slog.Logger
}

// floodFrames is how many frames in a row past its rate a socket may send
// before it is closed: reading a flood costs CPU even when nothing is
// answered, and no client needs that many.
const floodFrames = 100

// allowFrame takes a client frame (data or ping) from the socket's
// budget. A socket that keeps sending past it is closed with 1008.
func (sc *socket) allowFrame() bool {
	if sc.limiter.Allow() {
		sc.overLimit.Store(0)
		return true
	}
	if sc.overLimit.Add(1) == floodFrames {
		sc.signal(sigFlood)
	}
	return false
}

// Socket events the writer acts on besides queued frames.
const (
	sigExpiry uint32 = 1 << iota
	sigShutdown
	sigDone
	sigFlood
	sigKick
)

// monoEpoch makes the ping times monotonic: with the wall clock, a step
// back would take an answered ping for an unanswered one.
var monoEpoch = time.Now()

// monoNow is the time since monoEpoch in nanoseconds, never 0.
func monoNow() int64 { return max(int64(time.Since(monoEpoch)), 1) }

func (sc *socket) signal(sig uint32) {
	sc.signals.Or(sig)
	sc.client.Wake()
}

func (sc *socket) run() {
	ctx := sc.ctx
	defer sc.cancel()
	sc.log.Debug("socket open")

	// Timers, the server's shutdown and the end of the read side signal
	// the writer instead of being cases of its select; none of them holds
	// a goroutine while it waits. (Callbacks on the socket's context cost
	// about a kilobyte per socket.)
	clk := sc.srv.clock
	sc.expiry = clk.AfterFunc(time.Unix(0, sc.expires.Load()).Sub(clk.Now()), func() { sc.signal(sigExpiry) })
	defer sc.expiry.Stop()
	if interval := sc.srv.cfg.PingInterval; interval > 0 {
		// The writer re-arms it after each ping.
		sc.nextPing = monoNow() + int64(interval)
		sc.pingMu.Lock()
		sc.pingTimer = time.AfterFunc(interval, sc.pingTick)
		sc.pingMu.Unlock()
		defer func() {
			sc.pingMu.Lock()
			sc.pingStopped = true
			sc.pingTimer.Stop()
			sc.pingMu.Unlock()
		}()
	}

	sc.writerMu.Lock()
	sc.writerOn = true
	sc.writerMu.Unlock()
	sc.startWriter() // for a signal sent before run (the operator's kick)
	sc.readLoop(ctx)
	sc.cancel()
	sc.signal(sigDone)
	// No writer starts after this, so Wait below is the last word.
	sc.writerMu.Lock()
	sc.writerOn = false
	sc.writerMu.Unlock()
	sc.tasks.Wait()
	sc.srv.hub.Remove(sc.client)
	_ = sc.conn.CloseNow()
	sc.log.Debug("socket closed")
}

// startWriter runs the socket's writer goroutine unless it runs already.
// It is the client's OnWake: every token on Ready (a signal, a socket its
// worker handed over, a control frame left unsent) starts it. An idle
// socket holds no writer goroutine: with one per socket, its stack was a
// third of an idle socket's memory.
func (sc *socket) startWriter() {
	sc.writerMu.Lock()
	defer sc.writerMu.Unlock()
	if !sc.writerOn || sc.writerRunning {
		return
	}
	sc.writerRunning = true
	sc.tasks.Add(1)
	go sc.writer()
}

func (sc *socket) readLoop(ctx context.Context) {
	sc.conn.SetReadLimit(sc.srv.cfg.ReadLimit)
	// Nothing here watches ctx: whatever ends the socket closes its
	// connection (the writer, run), which ends every wait and read.
	for {
		if err := sc.cork.waitReadable(sc.reader); err != nil {
			return
		}
		more, err := sc.takeControlFrames()
		if err != nil {
			return
		}
		if !more {
			continue // only pings and pongs were waiting
		}
		// A message is read and acted on by a goroutine that ends with
		// it: reading a frame and serving it (a subscribe looks up a
		// membership) runs dozens of calls deep, and a stack grown there
		// stays with its goroutine until collections shrink it, by half
		// each. The socket's own goroutine only waits, and keeps the
		// smallest stack for as long as the socket lives.
		done := make(chan bool)
		go func() { done <- sc.readFrame(ctx) }()
		if !<-done {
			return
		}
	}
}

// takeControlFrames acts on the pings and pongs at the front of what the
// client sent, on the socket's own goroutine (see control.go). more says
// something else waits for the library: a message, a close frame, a frame
// not whole yet, the end of the stream.
func (sc *socket) takeControlFrames() (more bool, err error) {
	var payload [maxControlPayload]byte
	for {
		op, n, size, taken, more, err := sc.takeControlFrame(&payload)
		sc.cork.charge(taken)
		if size == 0 {
			return more, err
		}
		sc.control(op, payload[:n])
	}
}

// takeControlFrame takes the ping or pong at the front of what the client
// sent, from the read buffer or else from the connection; size is 0 when
// there is none (more and err as for takeControlFrames). The start of one
// that has not all arrived is taken and kept in partial, and the socket
// waits for the rest: left in place, it would wake the wait at once, and
// left to the library, the library would read it and wait for the next
// message inside its read. Under peekMu: Close reads the peer's close
// frame through the same buffer and connection.
func (sc *socket) takeControlFrame(payload *[maxControlPayload]byte) (op byte, n, size, taken int, more bool, err error) {
	sc.cork.peekMu.Lock()
	defer sc.cork.peekMu.Unlock()
	if sc.cork.raw == nil {
		return 0, 0, 0, 0, true, nil // no descriptor to wait on: the library reads everything
	}
	var wire [maxClientControl]byte
	have := copy(wire[:], sc.partial)
	fromBuffer := false
	var got int
	if buffered := sc.reader.Buffered(); buffered > 0 {
		// Bytes sent behind the handshake, or with a message; never
		// behind a partial frame, which is taken only when it is all
		// that was buffered.
		b, _ := sc.reader.Peek(min(buffered, maxClientControl-have))
		got, fromBuffer = copy(wire[have:], b), true
	} else {
		got, err = sc.cork.peekRaw(wire[have:])
		switch {
		case errors.Is(err, errNothingSent):
			return 0, 0, 0, 0, false, nil
		case err != nil || got == 0:
			return 0, 0, 0, 0, true, nil // the library reads the end, and says why
		}
	}
	seen := wire[:have+got]
	op, n, size = parseClientControl(seen, payload)
	take := size - have
	if size == 0 {
		if have > 0 && !controlPrefix(seen) {
			// Bytes of it were taken: the library cannot read the rest.
			return 0, 0, 0, 0, false, errors.New("a ping or pong split in two is no longer one")
		}
		if !controlPrefix(seen) || (fromBuffer && got < sc.reader.Buffered()) {
			return 0, 0, 0, 0, true, nil
		}
		take = got
	}
	if fromBuffer {
		_, _ = sc.reader.Discard(take)
	} else if err := sc.cork.takeRaw(wire[have : have+take]); err != nil {
		return 0, 0, 0, 0, false, err
	}
	if size == 0 {
		// Kept for the rest; 131 bytes at most, and only while a frame
		// is split.
		if sc.partial == nil {
			sc.partial = make([]byte, 0, maxClientControl)
		}
		sc.partial = append(sc.partial[:0], seen...)
		return 0, 0, 0, take, false, nil
	}
	sc.partial = nil
	return op, n, size, take, false, nil
}

// control acts on a client's ping or pong as the library would: a pong
// answers the server's ping; a ping is answered with its payload. Both
// count against the socket's frame limit.
func (sc *socket) control(op byte, payload []byte) {
	if op == opPong {
		sc.pongAt.Store(monoNow())
		sc.allowFrame()
		return
	}
	if !sc.allowFrame() {
		sc.srv.metrics.PingsDropped.Inc()
		return
	}
	if sc.closing.Load() {
		return
	}
	if !sc.cork.writeControl(opPong, payload) {
		// A client that sends pings and does not read the pongs: as
		// when the library's own write fails past the same bound.
		sc.log.Warn("client does not read its pongs: closing socket")
		sc.closeConn()
		return
	}
	if !sc.cork.tryFlush() {
		sc.client.Wake() // the writer sends it after what waits
	}
}

// readFrame reads one frame and acts on it; false when the socket is done.
func (sc *socket) readFrame(ctx context.Context) bool {
	// Not ctx: the library registers a callback on the context of every
	// read, which would keep a map of them on the socket's context for
	// its whole life. Closing the connection ends the read.
	typ, data, err := sc.conn.Read(context.Background())
	if err != nil {
		return false
	}
	if !sc.allowFrame() {
		// Said once per run of dropped frames: an error per frame
		// would let a flood fill the socket's own queue.
		if sc.overLimit.Load() == 1 {
			sc.sendError(CodeRateLimited, "too many frames; slow down", "")
		}
		return true
	}
	if typ != websocket.MessageText {
		sc.sendError(CodeBadRequest, "binary frames are not accepted; send JSON text frames", "")
		return true
	}
	cmd, err := ParseFrame(data)
	if err != nil {
		sc.sendError(CodeBadRequest, err.Error(), "")
		return true
	}
	sc.handle(ctx, cmd)
	return true
}

func (sc *socket) handle(ctx context.Context, cmd Command) {
	h := sc.srv.hub
	switch cmd.Action {
	case ActionPing:
		h.Send(sc.client, "pong", pongFrame)
	case ActionRefreshToken:
		claims, err := sc.srv.verifier.Verify(cmd.Token)
		switch {
		case err != nil:
			sc.sendError(CodeUnauthorized, err.Error(), "")
		case claims.UserID != sc.client.UserID():
			sc.sendError(CodeUnauthorized, "the new token is for another user", "")
		default:
			sc.expires.Store(claims.ExpiresAt.UnixNano())
			sc.expiry.Reset(claims.ExpiresAt.Sub(sc.srv.clock.Now()))
			h.Send(sc.client, "token_refreshed", tokenRefreshedFrame(claims.ExpiresAt))
		}
	case ActionBroadcast, ActionPresence:
		sc.handleEphemeral(cmd)
	case ActionUnsubscribe:
		if err := h.Unsubscribe(sc.client, cmd.ProjectID, unsubscribedFrame(cmd.ProjectID)); err != nil {
			sc.sendError(CodeBadRequest, err.Error(), cmd.ProjectID)
		}
	case ActionSubscribe:
		userID := sc.client.UserID()
		// A refused subscribe costs the user a token of a budget shared
		// by all their sockets.
		if sc.srv.denials.empty(userID, time.Now()) {
			sc.sendError(CodeRateLimited, "too many refused subscribes; slow down", cmd.ProjectID)
			return
		}
		subCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		since := cmd.Since
		if since != nil && h.Foreign(cmd.Origin) {
			// A position of another cluster, timeline or slot: it cannot
			// be resumed from (the hub answers resync_required).
			since = &events.Position{}
		}
		res, err := h.Subscribe(subCtx, sc.client, cmd.ProjectID, since, func(ctx context.Context, fresh bool) (access.Proof, error) {
			return sc.srv.members.Lookup(ctx, cmd.ProjectID, userID, fresh)
		})
		switch {
		case err == nil:
			sc.log.Debug("subscribed", "project_id", cmd.ProjectID, "position", res.Position.String(), "replayed", res.Replayed, "resync", res.Resync)
			if cmd.Presence {
				// Revoked already, or unsubscribed meanwhile: nothing to watch.
				_ = h.WatchPresence(sc.client, cmd.ProjectID)
			}
		case errors.Is(err, hub.ErrForbidden):
			sc.srv.denials.allow(userID, time.Now())
			sc.sendError(CodeForbidden, "not a member of this project", cmd.ProjectID)
		case errors.Is(err, hub.ErrAlreadySubscribed), errors.Is(err, hub.ErrTooManySubs):
			sc.sendError(CodeBadRequest, err.Error(), cmd.ProjectID)
		case errors.Is(err, hub.ErrClientClosed):
		case errors.Is(err, hub.ErrAccessUnsettled), errors.Is(err, hub.ErrAccessSuspended):
			// Fail closed, and say why: the client may try again.
			sc.log.Warn("subscribe refused", "project_id", cmd.ProjectID, "err", err)
			sc.sendError(CodeInternal, err.Error(), cmd.ProjectID)
		default:
			sc.log.Error("subscribe", "project_id", cmd.ProjectID, "err", err)
			sc.sendError(CodeInternal, "subscription could not be checked; try again", cmd.ProjectID)
		}
	}
}

// handleEphemeral serves broadcast and presence: only on a live
// subscription, within the socket's ephemeral budget and size bound.
func (sc *socket) handleEphemeral(cmd Command) {
	body := cmd.Payload
	if cmd.Action == ActionPresence {
		body = cmd.Meta
	}
	if len(body) > sc.srv.cfg.MaxEphemeralBytes {
		sc.sendError(CodeBadRequest, fmt.Sprintf("%s is larger than %d bytes", map[string]string{ActionBroadcast: "payload", ActionPresence: "meta"}[cmd.Action], sc.srv.cfg.MaxEphemeralBytes), cmd.ProjectID)
		return
	}
	if !sc.ephemeral.Allow() || !sc.srv.ephemeralUsers.allow(sc.client.UserID(), time.Now()) {
		sc.sendError(CodeRateLimited, "too many broadcast and presence frames; slow down", cmd.ProjectID)
		return
	}
	h := sc.srv.hub
	var err error
	switch {
	case cmd.Action == ActionBroadcast:
		err = h.Broadcast(sc.client, cmd.ProjectID, cmd.Event, cmd.Payload, cmd.Self)
	case cmd.Meta != nil:
		err = h.SetPresence(sc.client, cmd.ProjectID, cmd.Meta)
	default:
		err = h.WatchPresence(sc.client, cmd.ProjectID)
	}
	if err != nil {
		sc.sendError(CodeForbidden, "subscribe to the project first", cmd.ProjectID)
	}
}

func (sc *socket) sendError(code, message, projectID string) {
	sc.srv.metrics.ClientErrors.WithLabelValues(code).Inc()
	sc.srv.hub.Send(sc.client, events.TypeError, marshalError(code, message, projectID))
}

// writer is the socket's own goroutine for writes. Its write worker
// writes most frames; the writer acts on everything else, blocking if it
// must: the socket's events, and frames the worker handed over (a socket
// with a full buffer). It returns when Ready has no token left, or when
// the socket is done.
func (sc *socket) writer() {
	defer sc.tasks.Done()
	var items []hub.Item
	for {
		select {
		case <-sc.client.Ready():
			if !sc.writeQueued(sc.ctx, &items) {
				sc.cancel()
				_ = sc.conn.CloseNow() // ends the read side's wait
				sc.writerMu.Lock()
				sc.writerRunning, sc.writerOn = false, false
				sc.writerMu.Unlock()
				return
			}
			continue
		default:
		}
		// A Wake between the check above and this lock finds the writer
		// running and starts nothing: its token is seen here.
		sc.writerMu.Lock()
		if len(sc.client.Ready()) > 0 {
			sc.writerMu.Unlock()
			continue
		}
		sc.writerRunning = false
		sc.writerMu.Unlock()
		return
	}
}

// writeQueued reports false when the socket is done.
func (sc *socket) writeQueued(ctx context.Context, items *[]hub.Item) bool {
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	// An overflow wins over queued frames: the client gets the 4008
	// right after what is already on the wire.
	if sc.client.IsSlow() {
		sc.closeSlow()
		return false
	}
	if sig := sc.signals.Swap(0); sig != 0 {
		switch {
		case sig&sigDone != 0:
			return false
		case sig&sigFlood != 0:
			// No closing handshake: waiting for the peer's close frame
			// would mean reading its flood until the timeout. The close
			// frame goes if the socket takes it at once.
			sc.srv.metrics.FloodCloses.Inc()
			sc.log.Warn("client floods frames past its rate: closing socket")
			sc.srv.hub.Remove(sc.client)
			sc.cork.cutToFrameInFlight()
			sc.cork.writeClose(uint16(websocket.StatusPolicyViolation), "too many frames")
			sc.cork.tryFlush()
			_ = sc.conn.CloseNow()
			return false
		case sig&sigShutdown != 0:
			sc.close(websocket.StatusGoingAway, "server shutting down")
			return false
		case sig&sigKick != 0:
			sc.log.Info("disconnected by the operator")
			sc.close(CloseDisconnected, "disconnected by the operator")
			return false
		case sig&sigExpiry != 0 && !sc.srv.clock.Now().Before(time.Unix(0, sc.expires.Load())):
			// A refresh_token may have moved the expiry after the timer
			// fired; only a token past it closes.
			sc.close(CloseTokenExpired, "token expired")
			return false
		}
	}
	// What a worker could not write goes first.
	if err := sc.cork.flush(); err != nil {
		return sc.writeFailed(err)
	}
	// Everything queued now goes out in one TCP write.
	*items = sc.client.Take((*items)[:0])
	if len(*items) == 0 {
		return true
	}
	sc.writeItems(*items)
	clear(*items)
	if cap(*items) > 1024 {
		*items = nil
	}
	if err := sc.cork.flush(); err != nil {
		return sc.writeFailed(err)
	}
	return true
}

// writeFailed ends the socket after a failed write and returns false. A
// write that timed out is a client that does not keep up: it is closed
// with 4008 after the frame in flight, like one whose queue overflowed.
func (sc *socket) writeFailed(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		if !sc.client.IsSlow() { // else the hub counted it when its queue overflowed
			sc.srv.metrics.SlowConsumerCloses.Inc()
		}
		sc.srv.hub.Remove(sc.client)
		sc.closeSlow()
		return false
	}
	sc.log.Debug("write failed", "err", err)
	return false
}

// writeItems appends items' frames to the socket's buffer, which grows
// once for all of them.
func (sc *socket) writeItems(items []hub.Item) {
	size := 0
	for _, it := range items {
		if it.Frame != nil {
			size += len(it.Frame.Data) + maxFrameHeader
		}
		for _, f := range it.Batch {
			size += len(f.Data) + maxFrameHeader
		}
	}
	sc.cork.reserve(size)
	for _, it := range items {
		sc.writeItem(it)
	}
}

// maxFrameHeader is the longest header of a server's data frame.
const maxFrameHeader = 10

// writeItem appends an item's frames to the socket's buffer. The
// delivery latency is observed once per item: its frames are one
// transaction's, written together.
func (sc *socket) writeItem(it hub.Item) {
	defer sc.client.Written(it)
	first := it.Frame
	if it.Frame != nil {
		sc.write(it.Frame)
	}
	for _, f := range it.Batch {
		sc.write(f)
		if first == nil {
			first = f
		}
	}
	if first != nil && !it.Replayed && !first.CommitTime.IsZero() {
		sc.srv.metrics.DeliveryLatency.Observe(time.Since(first.CommitTime).Seconds())
	}
}

// write appends one frame to the socket's buffer; the deadline applies to
// the write that sends it.
func (sc *socket) write(f *hub.Frame) {
	sc.cork.writeText(f.Data)
	c, ok := sc.sent[f.Type]
	if !ok {
		c = sc.srv.metrics.EventsSent.WithLabelValues(f.Type)
		sc.sent[f.Type] = c
	}
	c.Inc()
}

// closeSlow closes with 4008 right after the frame on the wire: the
// frames behind it are dropped, so the close frame does not wait for a
// client that reads slowly to take them all.
func (sc *socket) closeSlow() {
	sc.log.Warn("slow consumer: closing socket", "queued_frames", sc.client.Len())
	sc.cork.cutToFrameInFlight()
	sc.close(CloseSlowConsumer, "slow consumer")
}

// close sends a close frame after everything buffered and waits briefly
// for the peer's. The library queues the frame without waiting for the
// network; this goroutine writes it, on this socket only.
func (sc *socket) close(code websocket.StatusCode, reason string) {
	// The socket's subscriptions (and its user's presence) end now, not
	// when the peer answers the close.
	sc.srv.hub.Remove(sc.client)
	sc.closing.Store(true)
	sc.pingMu.Lock()
	sc.pingStopped = true // no ping follows the close frame
	sc.pingMu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Close reads the peer's close frame from the library's read
		// buffer, which the read goroutine looks into (waitReadable).
		sc.cork.peekMu.Lock()
		defer sc.cork.peekMu.Unlock()
		_ = sc.conn.Close(code, reason)
	}()
	timeout := time.NewTimer(sc.srv.cfg.WriteTimeout)
	defer timeout.Stop()
	for {
		if err := sc.cork.flush(); err != nil {
			sc.closeConn()
			<-done
			return
		}
		select {
		case <-done:
			return
		case <-timeout.C:
			sc.closeConn()
			<-done
			return
		case <-sc.client.Ready(): // the library queued more (its close frame)
		}
	}
}

// closeConn ends a close that cannot complete: the connection itself is
// closed, which ends the library's wait for the peer's close frame. Its
// CloseNow would not: once Close has begun, CloseNow only waits for it,
// and Close waits up to five seconds for a peer that may never answer
// (Shutdown then took five seconds whatever the write timeout).
func (sc *socket) closeConn() {
	_ = sc.cork.Close()
}

// pingTick runs on the ping timer. It closes the socket when its oldest
// unanswered ping is older than the write timeout, and sends a ping every
// interval. The ping goes straight into the socket's buffer like its data
// frames, and the pong is noticed as it is read: a ping holds no goroutine
// while it waits, where the library's Ping held one per socket (with a
// context and a channel) at every interval.
func (sc *socket) pingTick() {
	// A tick that runs while the socket ends must not re-arm the timer
	// run has stopped: the socket's buffer would be written to, and the
	// timer fire, after nothing waits for either.
	sc.pingMu.Lock()
	defer sc.pingMu.Unlock()
	if sc.pingStopped {
		return
	}
	interval, timeout := sc.srv.cfg.PingInterval, sc.srv.cfg.WriteTimeout
	now := monoNow()
	waiting := sc.pingWaiting.Load()
	if waiting != 0 && sc.pongAt.Load() >= waiting {
		waiting = 0 // answered
		sc.pingWaiting.Store(0)
	}
	if waiting != 0 && now-waiting >= int64(timeout) {
		sc.log.Debug("no pong within the write timeout; closing")
		sc.pingStopped = true
		// The connection itself: the library's CloseNow would wait for a
		// read in progress, on a goroutine nobody waits for. The read side
		// fails at once and run closes the rest.
		sc.closeConn()
		return
	}
	if now >= sc.nextPing {
		sc.cork.releaseIfIdle()
		_ = sc.cork.writeControl(opPing, nil) // past the bound, the pong timeout closes
		if !sc.cork.tryFlush() {
			sc.client.Wake() // the writer sends it after what waits
		}
		if waiting == 0 {
			waiting = now
			sc.pingWaiting.Store(now)
		}
		sc.nextPing = now + int64(interval)
	}
	next := sc.nextPing - now
	if waiting != 0 {
		next = min(next, waiting+int64(timeout)-now)
	}
	sc.pingTimer.Reset(time.Duration(max(next, 0)))
}
