package events

import (
	"errors"
	"fmt"
	"strings"

	"github.com/walcast/walcast/publish"
)

// Reasons a published event is refused (PublishRefused.Reason), the
// labels of walcast_published_refused_total.
const (
	RefusedMalformed = "malformed"     // not a JSON object of the publish package's shape
	RefusedProjectID = "project_id"    // no project, or not a UUID
	RefusedType      = "type"          // an event type of the wrong form
	RefusedReserved  = "reserved_type" // walcast's own frame or row event name
	RefusedData      = "data"          // data is not a JSON object
	RefusedTooLarge  = "too_large"     // over events.max_publish_bytes
	RefusedOverflow  = "overflow"      // past the transaction's bound: its projects resync
)

// PublishRefused is a published event Map skipped: nobody receives it.
type PublishRefused struct {
	Reason string
	Err    error
}

func (e *PublishRefused) Error() string {
	return fmt.Sprintf("published event refused (%s): %v", e.Reason, e.Err)
}

func (e *PublishRefused) Unwrap() error { return e.Err }

// RefusedReason classifies a publish package error as a refusal reason.
func RefusedReason(err error) string {
	switch {
	case errors.Is(err, publish.ErrProjectID):
		return RefusedProjectID
	case errors.Is(err, publish.ErrReservedType):
		return RefusedReserved
	case errors.Is(err, publish.ErrType):
		return RefusedType
	case errors.Is(err, publish.ErrData):
		return RefusedData
	}
	return RefusedMalformed
}

// CheckPublished reports whether msg may be delivered: the publish
// package's rules, and a type that is not one of the configured tables'
// row events.
func (m *Mapper) CheckPublished(msg publish.Message) error {
	if err := publish.CheckType(msg.Type); err != nil {
		return err
	}
	for _, t := range m.tables {
		for _, name := range []string{t.OnInsert, t.OnUpdate, t.OnDelete} {
			if name != "" && strings.EqualFold(name, msg.Type) {
				return fmt.Errorf("%w: %s is a row event of %s", publish.ErrReservedType, name, t.QualifiedName())
			}
		}
	}
	return nil
}

// MaxPublishBytes is the largest published message body Map delivers.
func (m *Mapper) MaxPublishBytes() int { return m.maxPublish }

// parsePublished reads a published message kept by Retain.
func (m *Mapper) parsePublished(ch *Change) (publish.Message, error) {
	if ch.Dropped {
		return publish.Message{}, &PublishRefused{Reason: RefusedTooLarge, Err: fmt.Errorf("over %d bytes", m.maxPublish)}
	}
	msg, err := publish.Parse(ch.Content)
	if err == nil {
		err = m.CheckPublished(msg)
	}
	if err != nil {
		return publish.Message{}, &PublishRefused{Reason: RefusedReason(err), Err: err}
	}
	return msg, nil
}

// appendPublished writes a published event's frame.
func appendPublished(b []byte, msg *publish.Message, ts []byte, pos Position) []byte {
	b = append(b, `{"type":`...)
	b = appendString(b, msg.Type)
	b = append(b, `,"project_id":`...)
	b = appendString(b, msg.ProjectID)
	b = append(b, `,"position":"`...)
	b = pos.AppendText(b)
	b = append(b, `","timestamp":"`...)
	b = append(b, ts...)
	b = append(b, `","data":`...)
	b = append(b, msg.Data...)
	return append(b, '}')
}
