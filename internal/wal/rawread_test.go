//go:build linux

package wal

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// rawPair returns a rawReadConn dialled over loopback and the server's end.
func rawPair(t *testing.T) (*rawReadConn, net.Conn) {
	var d net.Dialer
	return dialPair(t, rawReads(d.DialContext))
}

// dialPair dials a loopback listener with dial; it fails the test unless
// dial gave a rawReadConn.
func dialPair(t *testing.T, dial pgconn.DialFunc) (*rawReadConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := dial(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server := <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	rc, ok := c.(*rawReadConn)
	if !ok {
		t.Fatalf("dialled a %T, want *rawReadConn", c)
	}
	t.Cleanup(func() { rc.Close(); server.Close() })
	return rc, server
}

// TestRawReadConnReadsAsNetConnDoes: what the peer writes arrives in order,
// a read waits for it, its close is io.EOF, a read deadline (also one set
// while the read waits, as shutdown does) is a timeout that leaves the
// connection usable, and a read after Close fails.
func TestRawReadConnReadsAsNetConnDoes(t *testing.T) {
	t.Run("data, then EOF", func(t *testing.T) {
		c, server := rawPair(t)
		go func() {
			time.Sleep(20 * time.Millisecond) // pacing: the read below most likely waits for it (it passes either way)
			server.Write([]byte("hello, "))
			server.Write([]byte("world"))
			server.Close()
		}()
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "hello, world" {
			t.Fatalf("read %q, %v", got, err)
		}
		if n, err := c.Read(make([]byte, 8)); n != 0 || err != io.EOF {
			t.Fatalf("after the peer closed: %d, %v", n, err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		c, server := rawPair(t)
		if err := c.SetReadDeadline(time.Now().Add(30 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		_, err := c.Read(make([]byte, 8))
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("past the deadline: %v, want a timeout", err)
		}
		// Moved to now while a read waits, as the reader's shutdown does.
		if err := c.SetReadDeadline(time.Time{}); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := c.Read(make([]byte, 8))
			done <- err
		}()
		time.Sleep(20 * time.Millisecond) // pacing: most likely waiting by now (passes either way)
		c.SetReadDeadline(time.Now())
		select {
		case err := <-done:
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("deadline moved to now: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a read waiting for data ignored a deadline set meanwhile")
		}
		c.SetReadDeadline(time.Time{})
		server.Write([]byte("still usable"))
		buf := make([]byte, 32)
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != "still usable" {
			t.Fatalf("after a timeout: %q, %v", buf[:n], err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		c, _ := rawPair(t)
		done := make(chan error, 1)
		go func() {
			_, err := c.Read(make([]byte, 8))
			done <- err
		}()
		time.Sleep(20 * time.Millisecond) // pacing: most likely waiting by now (passes either way)
		c.Close()
		select {
		case err := <-done:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("read across Close: %v, want net.ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not end a waiting read")
		}
		if _, err := c.Read(make([]byte, 8)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read after Close: %v", err)
		}
	})
	t.Run("empty buffer", func(t *testing.T) {
		c, _ := rawPair(t)
		if n, err := c.Read(nil); n != 0 || err != nil {
			t.Fatalf("%d, %v", n, err)
		}
	})
}

// TestReplicationConnectionReadsRaw: the replication session's socket is
// the raw-reading one (its dial function wraps what pgconn dials).
func TestReplicationConnectionReadsRaw(t *testing.T) {
	cfg, err := replicationConfig("postgres://walcast@127.0.0.1/app")
	if err != nil {
		t.Fatal(err)
	}
	dialPair(t, cfg.DialFunc)
}

// TestRawReadKeepsTheRaceDetectorsView: what a goroutine wrote before it
// wrote to a socket is ordered before what reads the bytes on the other
// end, as with net.Conn; under -race the raw read must say so (it fails
// with a data race report when the raw system call hides it).
func TestRawReadKeepsTheRaceDetectorsView(t *testing.T) {
	c, server := rawPair(t)
	var x int
	go func() {
		x = 42
		server.Write([]byte("go"))
	}()
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if x != 42 {
		t.Fatal(x)
	}
}
