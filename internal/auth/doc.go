// Package auth verifies the API's JWTs and answers whether a user is a member
// of a project.
//
// Tokens are HS256 (or the configured HMAC algorithm) with a shared secret;
// alg "none" and every other algorithm are refused, exp is required, sub must
// be a UUID. Tokens are never logged.
//
// Membership answers come from project_members through a pgx pool and are
// cached. Only positive answers are cached, so a member added a moment ago
// can subscribe at once; a cached answer is dropped when the WAL stream
// carries the membership's removal or the project's deletion (Forget), and a
// lookup racing such a removal does not put its answer in the cache.
//
// Concurrency model: Verifier is read-only; Memberships is safe for
// concurrent use (one mutex around the cache).
package auth
