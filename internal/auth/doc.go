// Package auth verifies the API's JWTs and answers whether a user is a member
// of a project.
//
// Tokens are HS256 (or the configured HMAC algorithm) with a shared secret;
// alg "none" and every other algorithm are refused, exp is required, sub must
// be a UUID. Tokens are never logged.
//
// Membership answers come from project_members through a pgx pool, each
// with the MVCC snapshot its statement read (an access.Proof), and are
// "member" answers are cached for auth.membership_cache_ttl ("not a member"
// never is: a user added a moment ago may subscribe at once).
// Memberships decides nothing on its own: the hub judges every answer,
// cached or fresh, against the access changes the WAL stream has brought
// (package access), so an answer older than a removal never grants access,
// and a cached answer older than a grant is asked again. The lookup
// compares the columns with parameters of their own type, so it is one
// probe of the table's unique (project, user) index; at most
// MaxConcurrent run at once.
//
// Concurrency model: Verifier is read-only; Memberships is safe for
// concurrent use (one mutex around the cache).
package auth
