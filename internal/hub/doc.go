// Package hub is the one place that knows who listens to what. It keeps a
// topic per project with its subscribers and a bounded history of recent
// events, fans each published event out to the send queues of the sockets
// subscribed to its project, and replays history to a subscription that
// resumes with a position.
//
// # Delivery rules
//
// Publish is called with whole transactions in commit order. Every frame a
// client receives passes through its one bounded queue and is put there
// under the hub's lock, so a client sees a project's events in position
// order: replayed history, then the subscribed frame, then live events, with
// nothing overtaking and nothing repeated at the seam. A queue that is full
// marks its client slow and drops it from every topic; publishing never
// waits for a socket.
//
// Revocations (events.Revocation) are applied at their position: the users
// they name get one subscription_revoked frame instead of the change's
// events, and no later event of that project.
//
// Ephemeral frames (presence.go) go through the same queues but nowhere
// else: broadcasts between a project's live subscribers, and presence (a
// user is present while one of its subscriptions is live; watchers get a
// state, then diffs). They carry no position and are never kept, so a
// revocation or an unsubscribe ends them with the subscription.
//
// # Concurrency model
//
// One mutex guards topics, subscriptions, history and the access ledger.
// Publish marshals nothing: the events package built each payload once, and
// the same bytes go to every queue. A client's queue is drained by whoever
// writes its socket (ws: a write worker, or the socket's own writer), which
// Client.OnQueued tells when frames arrive.
//
// # Lifecycle
//
// New starts nothing. Run sweeps expired history until its context ends.
// Subscribe blocks until the WAL reader has told the hub where the stream
// starts (SetFloor), so positions handed to clients are never guesses.
package hub
