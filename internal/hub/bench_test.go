package hub

import (
	"fmt"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/walcast/walcast/internal/events"
	"github.com/walcast/walcast/internal/metrics"
)

// BenchmarkFanout measures Publish of one event to a project's subscribers
// whose queues are drained concurrently (as socket writers do); each op is
// one event delivered to every subscriber. deliveries/s counts frames put
// on queues.
func BenchmarkFanout(b *testing.B) {
	for _, subs := range []int{1, 100, 1000} {
		b.Run(fmt.Sprint(subs, "subs"), func(b *testing.B) {
			h := New(Config{QueueSize: 4096, HistorySize: 1000}, metrics.New(prometheus.NewRegistry()))
			h.SetFloor(1)
			var wg sync.WaitGroup
			done := make(chan struct{})
			for i := 0; i < subs; i++ {
				c := h.NewClient("u")
				if _, err := h.Subscribe(b.Context(), c, pA, nil, allow); err != nil {
					b.Fatal(err)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-c.Ready():
							for _, it := range c.Take(nil) {
								c.Written(it)
							}
						case <-done:
							return
						}
					}
				}()
			}
			payload := []byte(`{"type":"message_created","project_id":"aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa","position":"0000000000000000/00000000","data":{}}`)
			evs := make([]events.Event, 1)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				evs[0] = events.Event{Position: events.Position{LSN: uint64(i) + 2}, ProjectID: pA, Type: "message_created", Payload: payload}
				h.Publish(evs)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*subs)/b.Elapsed().Seconds(), "deliveries/s")
			close(done)
			wg.Wait()
		})
	}
}
