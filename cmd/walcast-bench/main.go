// Command walcast-bench measures a running walcast: it opens WebSocket
// subscribers spread over projects, drives message inserts through plain SQL
// and reports commit→socket latency percentiles, delivery rate, frames lost,
// and walcast's CPU and memory. It starts nothing it does not own: walcast
// and PostgreSQL must be running; it creates its own users, projects and
// memberships (tagged with a run id) and deletes them at the end.
//
//	walcast-bench --url http://127.0.0.1:8080 --db postgres://… --secret … \
//	    --subscribers 100 --projects 10 --rate 200 --duration 20s --svg out.svg
//
// See docs/benchmarks.md for the runs behind the published numbers.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "walcast-bench:", err)
		os.Exit(1)
	}
}
