//go:build linux

package ws

import (
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestRawWriteKeepsTheRaceDetectorsView: what a goroutine wrote before it
// sent a frame is ordered before what the peer does once it has read the
// frame, as with net.Conn; under -race the cork's write must say so (it
// fails with a data race report when the raw system call hides it).
func TestRawWriteKeepsTheRaceDetectorsView(t *testing.T) {
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
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server := <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	defer server.Close()
	c := &corkConn{Conn: server, timeout: time.Second}
	raw, err := server.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	c.raw, c.rawWrite = raw, c.writeRaw
	var x int
	go func() {
		x = 42
		c.writeText([]byte("hi"))
		c.tryFlush()
	}()
	buf := make([]byte, 4) // a 2-byte header and "hi"
	if _, err := io.ReadFull(client, buf); err != nil {
		t.Fatal(err)
	}
	if x != 42 {
		t.Fatal(x)
	}
}
