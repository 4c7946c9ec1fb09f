package relay

import (
	"sync"

	"github.com/walcast/walcast/internal/events"
)

// Acks tells a publisher where its event landed: the HTTP publish route
// writes the event in a transaction of its own and waits, by that
// transaction's id, for the event to reach this replica's hub (from the
// WAL, or through the cluster stream), so that it can answer with the
// event's position. Transaction ids are 32 bits and wrap, but a wait lasts
// seconds.
type Acks struct {
	mu      sync.Mutex
	waiting map[uint32][]chan events.Position
}

// NewAcks returns an empty Acks.
func NewAcks() *Acks { return &Acks{waiting: make(map[uint32][]chan events.Position)} }

// Expect registers a wait for the first published event of transaction
// xid, before the transaction commits. The channel receives its position
// once; cancel ends the wait (always call it).
func (a *Acks) Expect(xid uint32) (position <-chan events.Position, cancel func()) {
	ch := make(chan events.Position, 1)
	a.mu.Lock()
	a.waiting[xid] = append(a.waiting[xid], ch)
	a.mu.Unlock()
	return ch, func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		list := a.waiting[xid]
		for i, c := range list {
			if c == ch {
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(a.waiting, xid)
		} else {
			a.waiting[xid] = list
		}
	}
}

// seen answers the waits for the published events among evs.
func (a *Acks) seen(evs []events.Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.waiting) == 0 {
		return
	}
	for i := range evs {
		if !evs[i].Published {
			continue
		}
		for _, ch := range a.waiting[evs[i].Xid] {
			select {
			case ch <- evs[i].Position:
			default: // answered already
			}
		}
	}
}
