//go:build !linux

package main

import "time"

type goroutineReaders []*subscriber

// readAll reads each subscriber's socket on a goroutine of its own where
// there is no epoll.
func readAll(subs []*subscriber, start time.Time) (interface{ Close() }, error) {
	for _, s := range subs {
		go s.read(start)
	}
	return goroutineReaders(subs), nil
}

func (g goroutineReaders) Close() {
	for _, s := range g {
		_ = s.conn.Close()
	}
}
