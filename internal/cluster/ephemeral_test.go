package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/walcast/walcast/internal/access"
	"github.com/walcast/walcast/internal/eventually"
	"github.com/walcast/walcast/internal/hub"
	"github.com/walcast/walcast/internal/metrics"
)

// TestRemoteBroadcastsAreBuiltHere (found by an attack: a message on the
// subject could carry any frame, of any type): what another replica sends
// is a broadcast's fields, and this replica builds the frame; a message
// with a frame, a bad event name, ids that are not UUIDs or a payload that
// is not an object reaches nobody.
func TestRemoteBroadcastsAreBuiltHere(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry())
	h := hub.New(hub.Config{QueueSize: 64, AccessWait: time.Second}, m)
	h.SetFloor(1)
	const p, u = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "11111111-1111-4111-8111-111111111111"
	c := h.NewClient(u)
	_, err := h.Subscribe(t.Context(), c, p, nil, func(_ context.Context, _ bool) (access.Proof, error) {
		return access.Proof{Member: true, Fresh: true}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Take(nil)
	e := &Ephemeral{hub: h, replica: "me", log: slog.New(slog.NewTextHandler(io.Discard, nil)), metrics: m, now: time.Now, pending: map[string]*snapshotParts{}}
	for _, forged := range []string{
		`{"k":"B","r":"evil","p":"` + p + `","f":{"type":"subscription_revoked","project_id":"` + p + `","reason":"member_removed"}}`,
		`{"k":"B","r":"evil","p":"` + p + `","u":"` + u + `","e":"no spaces","d":{}}`,
		`{"k":"B","r":"evil","p":"` + p + `","u":"not-a-uuid","e":"typing","d":{}}`,
		`{"k":"B","r":"evil","p":"` + p + `","u":"` + u + `","e":"typing","d":[1]}`,
	} {
		e.receive([]byte(forged), map[string]time.Time{})
	}
	e.receive([]byte(`{"k":"B","r":"other","p":"`+p+`","u":"`+u+`","e":"typing","d":{"on":true}}`), map[string]time.Time{})
	items := c.Take(nil)
	if len(items) != 1 {
		t.Fatalf("subscriber got %d frames, want the one valid broadcast", len(items))
	}
	var f map[string]any
	if err := json.Unmarshal(items[0].Frame.Data, &f); err != nil || f["type"] != "broadcast" || f["event"] != "typing" || f["from"] != u {
		t.Fatalf("frame %s", items[0].Frame.Data)
	}
}

// fakeEphHub records what the other replicas say.
type fakeEphHub struct {
	local     []hub.PresenceOf
	mu        sync.Mutex
	snapshots []string // "replica:n" per RemoteSnapshot (n<0: gone)
}

func (f *fakeEphHub) RemoteBroadcast(string, string, string, json.RawMessage) {}
func (f *fakeEphHub) RemotePresence(string, string, string, *hub.Presence)    {}
func (f *fakeEphHub) RemoteSnapshot(r string, all []hub.PresenceOf) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(all)
	if all == nil {
		n = -1
	}
	f.snapshots = append(f.snapshots, fmt.Sprintf("%s:%d", r, n))
}
func (f *fakeEphHub) LocalPresence() []hub.PresenceOf { return f.local }

// TestSnapshotLargerThanMaxPayload (found by an attack): a replica whose
// presence is larger than NATS's max_payload (1 MB; here 2,000 presences
// with 1 KB metas) sends it in parts, and the others get all of it; before,
// the send failed every time and the others took the live replica for
// dead.
func TestSnapshotLargerThanMaxPayload(t *testing.T) {
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats")
	}
	meta := json.RawMessage(`{"x":"` + strings.Repeat("<", 1000) + `"}`)
	var local []hub.PresenceOf
	for i := 0; i < 2000; i++ {
		local = append(local, hub.PresenceOf{ProjectID: fmt.Sprintf("aaaaaaaa-aaaa-4aaa-8aaa-%012d", i), UserID: "11111111-1111-4111-8111-111111111111",
			Presence: hub.Presence{Meta: meta, OnlineAt: time.Now(), Updated: time.Now()}})
	}
	ha, hb := &fakeEphHub{local: local}, &fakeEphHub{}
	mk := func(name string, h EphemeralHub) *Ephemeral {
		nc, err := nats.Connect(ns.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return &Ephemeral{cfg: EphemeralConfig{Subject: "walcast.ephemeral", Interval: 200 * time.Millisecond, Timeout: 10 * time.Second},
			nc: nc, hub: h, replica: name, out: make(chan ephemeralMsg, ephemeralQueue),
			log: slog.New(slog.NewTextHandler(io.Discard, nil)), metrics: metrics.New(prometheus.NewRegistry()), now: time.Now, pending: map[string]*snapshotParts{}}
	}
	a, b := mk("A", ha), mk("B", hb)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(2)
	go func() { defer wg.Done(); _ = b.Run(ctx) }()
	go func() { defer wg.Done(); _ = a.Run(ctx) }()
	// Snapshots every 200 ms: two whole snapshots, and A never taken for
	// gone. A 2 MB snapshot takes seconds under -race on a loaded machine;
	// the timeout leaves room for that, and a replica whose sends all
	// failed (the bug) is still never heard from.
	if !eventually.Poll(30*time.Second, func() bool {
		hb.mu.Lock()
		defer hb.mu.Unlock()
		n := 0
		for _, s := range hb.snapshots {
			if s == "A:2000" {
				n++
			}
		}
		return n >= 2
	}) {
		hb.mu.Lock()
		defer hb.mu.Unlock()
		t.Fatalf("B's view of A's snapshots: %v", hb.snapshots)
	}
	hb.mu.Lock()
	defer hb.mu.Unlock()
	for _, s := range hb.snapshots {
		if s != "A:2000" {
			t.Fatalf("B saw %s among A's snapshots: %v", s, hb.snapshots)
		}
	}
}
