package hub

import (
	"sync"
	"sync/atomic"
)

// Client is one socket's side of the hub: its queue and its subscriptions.
type Client struct {
	userID string
	slow   chan struct{}
	// ready has a token whenever items are waiting; the writer takes them
	// all at once, so a socket's memory follows what is queued, not the
	// bound (an idle socket holds no queue at all).
	ready chan struct{}
	qmu   sync.Mutex
	items []Item
	// queued counts frames put on the queue and not yet written.
	queued atomic.Int64
	// onQueued, when set, is told of new items instead of Ready.
	onQueued func()
	// onWake, when set, is called after every Wake.
	onWake func()

	// Guarded by the hub's mutex.
	subs    map[string]*subscription
	dropped bool
}

// NewClient registers nothing yet; it makes the queue a socket drains.
func (h *Hub) NewClient(userID string) *Client {
	return &Client{userID: userID, ready: make(chan struct{}, 1), slow: make(chan struct{}), subs: make(map[string]*subscription)}
}

// OnQueued makes fn, instead of a token on Ready, the way the socket
// learns that items wait: ws hands the client to a write worker that
// writes for many sockets, which costs less than waking a goroutine per
// socket per transaction. fn runs with the hub's lock held, so it must
// only pass the client on. Call it before the client subscribes.
func (c *Client) OnQueued(fn func()) { c.onQueued = fn }

// OnWake makes fn run after every Wake, once the token is on Ready: ws
// runs a socket's own writer goroutine only while it has something to do,
// and starts it from here. fn may run with the hub's lock held. Call it
// before the client subscribes.
func (c *Client) OnWake(fn func()) { c.onWake = fn }

// Ready has a token when items wait to be taken.
func (c *Client) Ready() <-chan struct{} { return c.ready }

// Take appends every waiting item to dst, oldest first, and returns it.
func (c *Client) Take(dst []Item) []Item {
	c.qmu.Lock()
	dst = append(dst, c.items...)
	clear(c.items)
	if cap(c.items) > 1024 {
		c.items = nil // let a burst's backing array go
	} else {
		c.items = c.items[:0]
	}
	c.qmu.Unlock()
	return dst
}

// Len returns the frames queued and not yet written.
func (c *Client) Len() int64 { return c.queued.Load() }

func (c *Client) push(it Item) {
	c.qmu.Lock()
	c.items = append(c.items, it)
	c.qmu.Unlock()
	if c.onQueued != nil {
		c.onQueued()
		return
	}
	c.Wake()
}

// Wake puts a token on Ready without queuing anything: the socket's
// writer waits on that one channel for everything it must act on, which
// costs less per wake-up than a select over several.
func (c *Client) Wake() {
	select {
	case c.ready <- struct{}{}:
	default:
	}
	if c.onWake != nil {
		c.onWake()
	}
}

// IsSlow reports whether Slow is closed.
func (c *Client) IsSlow() bool {
	select {
	case <-c.slow:
		return true
	default:
		return false
	}
}

// Written tells the hub the socket wrote it, freeing its place in the bound.
func (c *Client) Written(it Item) { c.queued.Add(-it.weight) }

// Slow is closed when the client's queue overflowed: the socket must close
// with 4008 after what it already wrote. Ready gets a token when it closes.
func (c *Client) Slow() <-chan struct{} { return c.slow }

// UserID is the user the client authenticated as.
func (c *Client) UserID() string { return c.userID }

// Remove detaches every subscription of c; call it when the socket ends.
func (h *Hub) Remove(c *Client) {
	h.mu.Lock()
	defer h.unlock()
	for _, s := range c.subs {
		h.detach(s)
	}
	c.dropped = true
}

// Send queues a control frame (pong, error) in order with the events.
func (h *Hub) Send(c *Client, typ string, frame []byte) {
	h.mu.Lock()
	defer h.unlock()
	h.enqueue(c, Item{Frame: &Frame{Data: frame, Type: typ}})
}
