package main

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// poller reads every healthy subscriber's socket from one goroutine with
// epoll, the way wrk and other load generators do. A goroutine per socket
// costs a wake-up, a scheduler pass and a second read (the one that finds
// the socket empty) per frame batch; on the two cores the load generator
// shares with walcast and PostgreSQL, that cost showed up in the latency
// it measured. Level-triggered: one read per ready socket per wait.
type poller struct {
	epfd    int
	start   time.Time
	socks   map[int32]*polled
	stop    atomic.Bool
	started bool
	done    chan struct{}
}

type polled struct {
	sub *subscriber
	fd  int
	buf []byte
}

func newPoller(start time.Time) (*poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	return &poller{epfd: epfd, start: start, socks: map[int32]*polled{}, done: make(chan struct{})}, nil
}

// add takes s's socket over from its net.Conn: it keeps a duplicate of the
// file descriptor and what the handshake's reader had buffered, and closes
// the original so Go's own poller no longer watches it. Not safe to call
// once run has started.
func (p *poller) add(s *subscriber) error {
	tcp, ok := s.conn.conn.(*net.TCPConn)
	if !ok {
		return errors.New("poller: not a TCP connection")
	}
	raw, err := tcp.SyscallConn()
	if err != nil {
		return err
	}
	fd := -1
	var dupErr error
	if err := raw.Control(func(orig uintptr) { fd, dupErr = syscall.Dup(int(orig)) }); err != nil {
		return err
	}
	if dupErr != nil {
		return dupErr
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return err
	}
	buffered, _ := s.conn.br.Peek(s.conn.br.Buffered())
	pc := &polled{sub: s, fd: fd, buf: append(make([]byte, 0, 64<<10), buffered...)}
	_ = s.conn.conn.Close() // the duplicate keeps the socket open
	s.conn = nil
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(fd)}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		syscall.Close(fd)
		return err
	}
	p.socks[int32(fd)] = pc
	return nil
}

// run reads until Close.
func (p *poller) run() {
	defer close(p.done)
	for _, pc := range p.socks {
		p.consume(pc, time.Now())
	}
	events := make([]syscall.EpollEvent, 256)
	for !p.stop.Load() {
		n, err := syscall.EpollWait(p.epfd, events, 100)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			return
		}
		for _, ev := range events[:n] {
			if pc := p.socks[ev.Fd]; pc != nil {
				p.read(pc)
			}
		}
	}
}

func (p *poller) read(pc *polled) {
	if cap(pc.buf)-len(pc.buf) < 16<<10 {
		pc.buf = append(pc.buf, make([]byte, 64<<10)...)[:len(pc.buf)]
	}
	n, err := syscall.Read(pc.fd, pc.buf[len(pc.buf):cap(pc.buf)])
	now := time.Now()
	if n <= 0 {
		if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
			return
		}
		p.drop(pc, -1) // reset or closed without a close frame
		return
	}
	pc.buf = pc.buf[:len(pc.buf)+n]
	p.consume(pc, now)
}

// consume handles every whole frame in pc.buf. walcast never fragments a
// message, so a data frame without FIN is treated as a protocol error.
func (p *poller) consume(pc *polled, now time.Time) {
	b := pc.buf
	for {
		op, fin, payload, size, ok, err := parseFrame(b)
		if err != nil || (ok && op < 0x8 && !fin) {
			p.drop(pc, -1)
			return
		}
		if !ok {
			break
		}
		switch op {
		case 0x1, 0x2:
			pc.sub.frame(payload, now, p.start)
		case 0x8:
			code := 1005
			if len(payload) >= 2 {
				code = int(payload[0])<<8 | int(payload[1])
			}
			_, _ = syscall.Write(pc.fd, maskedFrame(0x8, payload[:min(len(payload), 2)]))
			p.drop(pc, code)
			return
		case 0x9:
			_, _ = syscall.Write(pc.fd, maskedFrame(0xA, payload))
		}
		b = b[size:]
	}
	pc.buf = pc.buf[:copy(pc.buf, b)]
}

func (p *poller) drop(pc *polled, code int) {
	pc.sub.closeCode = code
	_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, pc.fd, nil)
	_ = syscall.Close(pc.fd)
	delete(p.socks, int32(pc.fd))
}

// Close stops run, waits for it, and closes every socket.
func (p *poller) Close() {
	if p.stop.CompareAndSwap(false, true) {
		if p.started {
			<-p.done
		}
		for _, pc := range p.socks {
			_ = syscall.Close(pc.fd)
		}
		_ = syscall.Close(p.epfd)
	}
}

// readAll reads the subscribers' sockets with one poller; Close it when
// the run ends.
func readAll(subs []*subscriber, start time.Time) (interface{ Close() }, error) {
	p, err := newPoller(start)
	if err != nil {
		return nil, err
	}
	for _, s := range subs {
		if err := p.add(s); err != nil {
			p.Close()
			return nil, err
		}
	}
	p.started = true
	go p.run()
	return p, nil
}
