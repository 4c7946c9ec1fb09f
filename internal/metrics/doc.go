// Package metrics defines walcast's Prometheus collectors.
//
// New registers every collector once on the registry it is given (run makes
// one; the global registry is never used) and returns them in a Metrics
// struct that is passed to the parts that update them. Names follow the
// Prometheus conventions: walcast_ prefix, base units, _total on counters,
// and no unbounded label values (never a project or user id).
//
// Concurrency model: collectors are safe for concurrent use.
package metrics
