package relay

import (
	"context"
	"log/slog"

	"github.com/walcast/walcast/internal/access"
	"github.com/walcast/walcast/internal/events"
	"github.com/walcast/walcast/internal/hub"
)

// memberships is what the relay's access decisions ask the database.
type memberships interface {
	Lookup(ctx context.Context, projectID, userID string, fresh bool) (access.Proof, error)
	IsMember(ctx context.Context, projectID, userID string) (bool, error)
}

// RESTAccess decides REST requests on committed state: always a fresh
// lookup, judged by the hub against the access changes it has published
// (hub.Authorize), like a subscription.
type RESTAccess struct {
	Hub     *hub.Hub
	Members memberships
}

// Authorize reports whether userID may read and write projectID now.
func (a RESTAccess) Authorize(ctx context.Context, projectID, userID string) (bool, error) {
	return a.Hub.Authorize(ctx, projectID, userID, func(ctx context.Context, _ bool) (access.Proof, error) {
		return a.Members.Lookup(ctx, projectID, userID, true)
	})
}

// subscribers is the part of the hub a NOTIFY recheck needs.
type subscribers interface {
	SubscriberIDs(projectID string) []string
	Revoke(projectID, userID, reason string)
}

// Recheck re-verifies a project's subscribers for the NOTIFY source,
// whose notifications do not say whose membership ended.
type Recheck struct {
	Hub     subscribers
	Members memberships
	Log     *slog.Logger
}

// AfterGaps rechecks every subscription whenever gaps signals that changes
// may have been lost (hub.Gaps): a membership removed in a gap never
// reaches the hub as a revocation, so its user would stay subscribed. It
// returns when ctx ends.
func (r Recheck) AfterGaps(ctx context.Context, gaps <-chan struct{}, projects func() []string) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-gaps:
		}
		for _, pid := range projects() {
			if ctx.Err() != nil {
				return nil
			}
			r.Recheck(ctx, pid, false)
		}
	}
}

// Recheck revokes every subscription to projectID (all: the project was
// deleted) or those of users who are no longer members.
func (r Recheck) Recheck(ctx context.Context, projectID string, all bool) {
	if all {
		r.Hub.Revoke(projectID, "", events.ReasonProjectDeleted)
		return
	}
	for _, u := range r.Hub.SubscriberIDs(projectID) {
		ok, err := r.Members.IsMember(ctx, projectID, u)
		if err != nil {
			r.Log.Error("membership recheck", "project_id", projectID, "err", err)
			continue
		}
		if !ok {
			r.Hub.Revoke(projectID, u, events.ReasonMemberRemoved)
		}
	}
}
