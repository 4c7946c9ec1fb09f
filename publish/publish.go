// Package publish sends events to the members of a project through
// walcast, from the application's own database connection.
//
// An event is written to the WAL with PostgreSQL's pg_logical_emit_message;
// walcast reads it with the row changes and delivers it to the project's
// subscribed members as
//
//	{"type":"<event type>","project_id":"…","position":"…","data":{…}}
//
// Sent on a transaction, the event is delivered only if the transaction
// commits, at its place among the transaction's row changes; it is ordered,
// kept in walcast's history and replayed to clients that resume, exactly
// like a row change. Sent on a connection or a pool, it is a transaction of
// its own.
//
// The package depends on nothing of walcast: an API imports it, and a call
// to its own realtime hub's Send changes one import.
package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultPrefix is the logical decoding message prefix walcast reads
// published events under unless configured otherwise (publish.prefix).
const DefaultPrefix = "walcast"

// MaxTypeLength bounds an event type's length.
const MaxTypeLength = 64

// Execer runs a statement: a *pgx.Conn, a *pgxpool.Pool or a pgx.Tx.
type Execer interface {
	Exec(ctx context.Context, sql string, arguments ...any) (pgconn.CommandTag, error)
}

// Message is a published event as it is written to the WAL.
type Message struct {
	ProjectID string `json:"project_id"`
	Type      string `json:"type"`
	// Data is a JSON object (walcast sends {} for none).
	Data json.RawMessage `json:"data,omitempty"`
}

// Errors of Encode and Parse; walcast answers them as the reason an event
// is refused.
var (
	ErrMalformed    = errors.New("not a JSON object with project_id, type and data")
	ErrProjectID    = errors.New("project_id must be a UUID")
	ErrType         = errors.New("type must be 1 to 64 letters, digits, '_', '-', '.' or ':', starting with a letter")
	ErrReservedType = errors.New("type is reserved for walcast's own frames")
	ErrData         = errors.New("data must be a JSON object")
)

// Reserved are the frame types walcast sends itself: a published event may
// not take one of these names (nor, in walcast, the configured row events'
// names), or it could impersonate walcast to the frontend.
var Reserved = []string{
	"cache_invalidate", "subscribed", "unsubscribed", "subscription_revoked", "resync_required",
	"error", "pong", "stream_down", "stream_up", "broadcast", "presence_state", "presence_diff",
	"token_refreshed", "published",
	// The row events of walcast's default mapping.
	"project_updated", "sprint_created", "sprint_updated", "sprint_deleted",
	"task_created", "task_updated", "task_deleted", "message_created",
	"member_added", "member_removed",
}

// Send publishes an event of eventType with data (marshaled to a JSON
// object; nil for none) to the members of projectID, under DefaultPrefix.
func Send(ctx context.Context, db Execer, projectID, eventType string, data any) error {
	return Sender{}.Send(ctx, db, projectID, eventType, data)
}

// Sender publishes under a prefix of its own (walcast's publish.prefix).
type Sender struct {
	// Prefix is the message prefix; empty means DefaultPrefix.
	Prefix string
}

// Send is the package's Send under s.Prefix.
func (s Sender) Send(ctx context.Context, db Execer, projectID, eventType string, data any) error {
	body, err := Encode(projectID, eventType, data)
	if err != nil {
		return err
	}
	prefix := s.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if _, err := db.Exec(ctx, `SELECT pg_logical_emit_message(true, $1::text, $2::text)`, prefix, string(body)); err != nil {
		return fmt.Errorf("publish %s to project %s: %w", eventType, projectID, err)
	}
	return nil
}

// Encode checks an event and returns the message body Send writes.
func Encode(projectID, eventType string, data any) ([]byte, error) {
	raw := json.RawMessage("{}")
	if data != nil {
		b, err := marshal(data)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrData, err)
		}
		raw = b
	}
	m := Message{ProjectID: projectID, Type: eventType, Data: raw}
	if err := m.check(); err != nil {
		return nil, err
	}
	m.ProjectID = strings.ToLower(m.ProjectID)
	b, err := marshal(m)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrData, err)
	}
	return b, nil
}

// marshal is json.Marshal without HTML escaping: "<" stays one byte
// (walcast's size bound counts bytes).
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// Parse decodes and checks a message body as walcast reads it. The
// project id is returned in lowercase (as PostgreSQL prints a uuid), and
// an absent or null data as {}.
func Parse(body []byte) (Message, error) {
	var m Message
	if !utf8.Valid(body) {
		// A frame must be valid UTF-8 (a browser closes the socket on
		// anything else); the bytea form of pg_logical_emit_message
		// writes any bytes.
		return Message{}, ErrMalformed
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	if err := dec.Decode(&m); err != nil || dec.More() {
		return Message{}, ErrMalformed
	}
	if len(m.Data) == 0 || string(m.Data) == "null" {
		m.Data = json.RawMessage("{}")
	}
	if err := m.check(); err != nil {
		return Message{}, err
	}
	m.ProjectID = strings.ToLower(m.ProjectID)
	// Compact: the frame is one line (Server-Sent Events split messages at
	// line ends, a bare CR included), and smaller.
	var c bytes.Buffer
	if err := json.Compact(&c, m.Data); err == nil {
		m.Data = c.Bytes()
	}
	return m, nil
}

func (m *Message) check() error {
	if !isUUID(m.ProjectID) {
		return ErrProjectID
	}
	if err := CheckType(m.Type); err != nil {
		return err
	}
	d := strings.TrimLeft(string(m.Data), " \t\r\n")
	if !strings.HasPrefix(d, "{") || !json.Valid(m.Data) {
		return ErrData
	}
	return nil
}

// CheckType reports whether t may name a published event: ErrType for its
// form, ErrReservedType for one of Reserved.
func CheckType(t string) error {
	if t == "" || len(t) > MaxTypeLength || !isLetter(t[0]) {
		return ErrType
	}
	for i := 1; i < len(t); i++ {
		c := t[i]
		if !isLetter(c) && !(c >= '0' && c <= '9') && !strings.ContainsRune("_-.:", rune(c)) {
			return ErrType
		}
	}
	for _, r := range Reserved {
		if strings.EqualFold(t, r) {
			return ErrReservedType
		}
	}
	return nil
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// isUUID accepts the canonical 8-4-4-4-12 hexadecimal form.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}
