package cluster

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/walcast/walcast/internal/metrics"
)

// TestAnotherOriginForgetsTheProgress: a bus connected for another
// database (origin) forgets the slot progress the old one recorded, also
// when no event is left in the stream: that position belongs to the old
// database, and a leader comparing its slot with it would stop (the WAL
// looks gone backwards) at every start.
func TestAnotherOriginForgetsTheProgress(t *testing.T) {
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS did not start")
	}
	ctx := context.Background()
	connect := func(origin string) *Bus {
		t.Helper()
		b, err := Connect(ctx, Config{URL: ns.ClientURL(), Stream: "PROGRESS", SubjectPrefix: "walcast", MaxAge: time.Hour, MaxMsgs: 100, Duplicates: time.Minute, Origin: origin},
			slog.New(slog.NewTextHandler(io.Discard, nil)), metrics.New(prometheus.NewRegistry()))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	old := connect("1.1.walcast")
	if err := old.Confirming(ctx, 0x9000000); err != nil {
		t.Fatal(err)
	}
	old.Close()

	same := connect("1.1.walcast")
	if got, err := same.Confirmed(ctx); err != nil || got != 0x9000000 {
		t.Fatalf("same origin: %x, %v", got, err)
	}
	same.Close()

	other := connect("2.1.walcast")
	defer other.Close()
	if got, err := other.Confirmed(ctx); err != nil || got != 0 {
		t.Fatalf("another origin still has the old progress: %x, %v", got, err)
	}
}
