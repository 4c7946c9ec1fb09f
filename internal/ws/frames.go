package ws

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/walcast/walcast/internal/auth"
	"github.com/walcast/walcast/internal/events"
)

// Error codes of the error frame.
const (
	CodeBadRequest   = "bad_request"
	CodeUnauthorized = "unauthorized"
	CodeForbidden    = "forbidden"
	CodeRateLimited  = "rate_limited"
	CodeInternal     = "internal"
)

// clientFrame is a frame a client sends.
type clientFrame struct {
	Action    string `json:"action"`
	ProjectID string `json:"project_id,omitempty"`
	Since     string `json:"since,omitempty"`
	Origin    string `json:"origin,omitempty"`
	Token     string `json:"token,omitempty"`
}

// Command is a validated client frame.
type Command struct {
	Action    string
	ProjectID string
	Since     *events.Position
	// Origin is where Since comes from, as the server sent it with
	// subscribed or resync_required; empty for clients that do not say.
	Origin string
	// Token is the new JWT of a refresh_token frame.
	Token string
}

// Actions a client may send.
const (
	ActionSubscribe   = "subscribe"
	ActionUnsubscribe = "unsubscribe"
	ActionPing        = "ping"
	// ActionRefreshToken replaces the socket's token before it expires:
	// {"action":"refresh_token","token":"<JWT>"} for the same user.
	ActionRefreshToken = "refresh_token"
)

// maxOriginLen bounds an origin: a system identifier, a timeline and a
// slot name (at most 63 bytes) take under 100.
const maxOriginLen = 128

// ErrBadFrame wraps every reason a client frame is refused.
var ErrBadFrame = errors.New("bad frame")

// ParseFrame validates one client text frame.
func ParseFrame(data []byte) (Command, error) {
	var f clientFrame
	if err := json.Unmarshal(data, &f); err != nil {
		return Command{}, fmt.Errorf("%w: not a JSON object with string fields", ErrBadFrame)
	}
	// The WAL carries uuids in lowercase; topics are keyed by that form.
	cmd := Command{Action: f.Action, ProjectID: strings.ToLower(f.ProjectID)}
	switch f.Action {
	case ActionPing:
		return cmd, nil
	case ActionRefreshToken:
		if f.Token == "" {
			return Command{}, fmt.Errorf("%w: missing token", ErrBadFrame)
		}
		cmd.Token = f.Token
		return cmd, nil
	case ActionSubscribe, ActionUnsubscribe:
	case "":
		return Command{}, fmt.Errorf("%w: missing action", ErrBadFrame)
	default:
		return Command{}, fmt.Errorf("%w: unknown action (use subscribe, unsubscribe, ping or refresh_token)", ErrBadFrame)
	}
	if f.ProjectID == "" {
		return Command{}, fmt.Errorf("%w: missing project_id", ErrBadFrame)
	}
	if !auth.IsUUID(f.ProjectID) {
		return Command{}, fmt.Errorf("%w: project_id is not a UUID", ErrBadFrame)
	}
	if f.Since != "" {
		if f.Action != ActionSubscribe {
			return Command{}, fmt.Errorf("%w: since is only valid on subscribe", ErrBadFrame)
		}
		p, err := events.ParsePosition(f.Since)
		if err != nil {
			return Command{}, fmt.Errorf("%w: since is not a position", ErrBadFrame)
		}
		cmd.Since = &p
	}
	if f.Origin != "" {
		if cmd.Since == nil {
			return Command{}, fmt.Errorf("%w: origin is only valid with since", ErrBadFrame)
		}
		if len(f.Origin) > maxOriginLen {
			return Command{}, fmt.Errorf("%w: origin is longer than %d bytes", ErrBadFrame, maxOriginLen)
		}
		cmd.Origin = f.Origin
	}
	return cmd, nil
}

type errorFrame struct {
	Type      string `json:"type"`
	Code      string `json:"code"`
	Message   string `json:"message"`
	ProjectID string `json:"project_id,omitempty"`
}

func marshalError(code, message, projectID string) []byte {
	b, _ := json.Marshal(errorFrame{Type: events.TypeError, Code: code, Message: message, ProjectID: projectID})
	return b
}

var pongFrame = []byte(`{"type":"pong"}`)

func unsubscribedFrame(projectID string) []byte {
	b, _ := json.Marshal(struct {
		Type      string `json:"type"`
		ProjectID string `json:"project_id"`
	}{"unsubscribed", projectID})
	return b
}

func tokenRefreshedFrame(expires time.Time) []byte {
	b, _ := json.Marshal(struct {
		Type      string `json:"type"`
		ExpiresAt string `json:"expires_at"`
	}{"token_refreshed", expires.UTC().Format(time.RFC3339)})
	return b
}
