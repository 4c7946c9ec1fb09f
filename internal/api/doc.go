// Package api is walcast's HTTP surface: health and readiness, Prometheus
// metrics, the status document, the WebSocket endpoint (served by ws), and
// the members-only messages routes. routes.go shows the whole API.
//
// Every error is JSON {"error":{"code":…,"message":…}} with no SQL text,
// stack trace or token in it; request logs carry the path and a request id,
// never the query string (tokens travel there).
//
// Concurrency model: handlers are safe for concurrent use; state lives in the
// dependencies passed to NewRouter.
package api
