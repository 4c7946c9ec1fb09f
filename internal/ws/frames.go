package ws

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/walcast/walcast/internal/auth"
	"github.com/walcast/walcast/internal/events"
	"github.com/walcast/walcast/internal/hub"
	"github.com/walcast/walcast/internal/jsonx"
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
	Action    string          `json:"action"`
	ProjectID string          `json:"project_id,omitempty"`
	Since     string          `json:"since,omitempty"`
	Origin    string          `json:"origin,omitempty"`
	Token     string          `json:"token,omitempty"`
	Presence  bool            `json:"presence,omitempty"`
	Event     string          `json:"event,omitempty"`
	Payload   json.RawMessage `json:"payload,omitempty"`
	Self      bool            `json:"self,omitempty"`
	Meta      json.RawMessage `json:"meta,omitempty"`
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
	// Presence asks, on subscribe, for the project's presence frames.
	Presence bool
	// Event, Payload (a JSON object) and Self are a broadcast's.
	Event   string
	Payload json.RawMessage
	Self    bool
	// Meta is what a presence frame says about the user (a JSON object),
	// nil when it only asks for presence.
	Meta json.RawMessage
}

// Actions a client may send.
const (
	ActionSubscribe   = "subscribe"
	ActionUnsubscribe = "unsubscribe"
	ActionPing        = "ping"
	// ActionRefreshToken replaces the socket's token before it expires:
	// {"action":"refresh_token","token":"<JWT>"} for the same user.
	ActionRefreshToken = "refresh_token"
	// ActionBroadcast sends an ephemeral event to the project's other
	// subscribers: {"action":"broadcast","project_id","event","payload"?,"self"?}.
	ActionBroadcast = "broadcast"
	// ActionPresence asks for the project's presence, and sets what the
	// user says about itself: {"action":"presence","project_id","meta"?}.
	ActionPresence = "presence"
)

// maxOriginLen bounds an origin: a system identifier, a timeline and a
// slot name (at most 63 bytes) take under 100.
const maxOriginLen = 128

// ErrBadFrame wraps every reason a client frame is refused.
var ErrBadFrame = errors.New("bad frame")

// ParseFrame validates one client text frame.
func ParseFrame(data []byte) (Command, error) {
	if !utf8.Valid(data) {
		// coder/websocket does not check text frames; relayed (a
		// broadcast's payload, a presence meta), such bytes would make
		// every browser that receives them fail its socket (1007).
		return Command{}, fmt.Errorf("%w: not valid UTF-8", ErrBadFrame)
	}
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
	case ActionSubscribe, ActionUnsubscribe, ActionBroadcast, ActionPresence:
	case "":
		return Command{}, fmt.Errorf("%w: missing action", ErrBadFrame)
	default:
		return Command{}, fmt.Errorf("%w: unknown action (use subscribe, unsubscribe, ping, refresh_token, broadcast or presence)", ErrBadFrame)
	}
	if f.ProjectID == "" {
		return Command{}, fmt.Errorf("%w: missing project_id", ErrBadFrame)
	}
	if !auth.IsUUID(f.ProjectID) {
		return Command{}, fmt.Errorf("%w: project_id is not a UUID", ErrBadFrame)
	}
	switch f.Action {
	case ActionBroadcast:
		if !hub.ValidEvent(f.Event) {
			return Command{}, fmt.Errorf("%w: event must be 1 to 64 letters, digits, '_', '-', '.' or ':', starting with a letter", ErrBadFrame)
		}
		if f.Payload == nil || string(f.Payload) == "null" {
			f.Payload = json.RawMessage("{}")
		}
		if !jsonx.IsObject(f.Payload) {
			return Command{}, fmt.Errorf("%w: payload must be a JSON object", ErrBadFrame)
		}
		cmd.Event, cmd.Payload, cmd.Self = f.Event, f.Payload, f.Self
	case ActionPresence:
		if f.Meta != nil && string(f.Meta) != "null" {
			if !jsonx.IsObject(f.Meta) {
				return Command{}, fmt.Errorf("%w: meta must be a JSON object", ErrBadFrame)
			}
			cmd.Meta = f.Meta
		}
	case ActionSubscribe:
		cmd.Presence = f.Presence
	}
	if f.Event != "" && f.Action != ActionBroadcast || f.Payload != nil && f.Action != ActionBroadcast || f.Meta != nil && f.Action != ActionPresence {
		return Command{}, fmt.Errorf("%w: event and payload are only valid on broadcast, meta on presence", ErrBadFrame)
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
