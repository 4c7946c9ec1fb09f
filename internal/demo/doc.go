// Package demo serves the demo page (web/demo) and the few routes it needs
// beyond the REST API: the users to pick from, a token for the picked user,
// and the project's tasks to list and move. It exists for `make run` and the
// browser test; it hands out tokens to anyone, so it is off unless
// demo.enabled is set, and walcast logs a warning when it is on.
//
// Concurrency model: handlers are safe for concurrent use.
package demo
