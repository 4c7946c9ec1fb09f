package ws

import (
	"sync"
	"sync/atomic"

	"github.com/walcast/walcast/internal/hub"
)

// writeWorker writes queued frames for many sockets. Waking a goroutine
// per socket per transaction cost more than the write itself at 100
// sockets (a wake-up, a scheduler pass, and both cores taken by walcast
// while the readers waited): a worker is woken once per transaction and
// writes each socket's frames with one write that does not block. A
// socket whose kernel buffer is full, or that has anything else to do
// (a ping, a close, its token's expiry), is handed to its own goroutine,
// which may block on it; the worker never does. Sockets a worker is
// told about while it writes are written on its next pass, so a busy
// worker gathers several transactions into one write per socket.
type writeWorker struct {
	mu    sync.Mutex
	queue []*socket
	wake  chan struct{}
	items []hub.Item
	// handedOver counts sockets given to their own goroutine because a
	// write would have blocked or they had something else to do.
	handedOver atomic.Int64
}

func newWriteWorker() *writeWorker {
	return &writeWorker{wake: make(chan struct{}, 1)}
}

// schedule queues sc for the worker's next pass. The hub calls it with its
// lock held: it only appends.
func (w *writeWorker) schedule(sc *socket) {
	if sc.scheduled.Swap(true) {
		return // already waiting for a pass
	}
	w.mu.Lock()
	w.queue = append(w.queue, sc)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *writeWorker) run(stop <-chan struct{}) {
	var batch []*socket
	for {
		select {
		case <-w.wake:
		case <-stop:
			return
		}
		w.mu.Lock()
		batch, w.queue = w.queue, batch[:0]
		w.mu.Unlock()
		for i, sc := range batch {
			// Cleared first: frames queued from here on schedule sc again.
			sc.scheduled.Store(false)
			w.write(sc)
			batch[i] = nil
		}
		if cap(batch) > 4096 {
			batch = nil
		}
	}
}

// write sends what sc has queued, or hands sc to its own goroutine.
func (w *writeWorker) write(sc *socket) {
	if !sc.wmu.TryLock() {
		// The socket's goroutine is writing (possibly blocked on a full
		// buffer); it takes these frames when it is done.
		sc.client.Wake()
		return
	}
	handOver := false
	defer func() {
		sc.wmu.Unlock()
		if handOver {
			w.handedOver.Add(1)
			sc.client.Wake()
		}
	}()
	if sc.client.IsSlow() || sc.signals.Load() != 0 || sc.cork.pending() {
		handOver = true
		return
	}
	w.items = sc.client.Take(w.items[:0])
	if len(w.items) == 0 {
		return
	}
	sc.writeItems(w.items)
	clear(w.items)
	if cap(w.items) > 1024 {
		w.items = nil
	}
	if !sc.cork.tryFlush() {
		handOver = true
	}
}
