package events

import "time"

// Control frames that carry a position. They are built here, next to the
// change events, so every frame with a position is written the same way.

// SubscribedFrame is {"type":"subscribed","project_id":…,"position":…}.
// origin, when set, is added as "origin": where the position comes from.
func SubscribedFrame(projectID string, pos Position, origin string) []byte {
	return positionFrame("subscribed", projectID, pos, "", origin)
}

// ResyncFrame is {"type":"resync_required","project_id":…,"position":…},
// with "origin" when origin is set.
func ResyncFrame(projectID string, pos Position, origin string) []byte {
	return positionFrame("resync_required", projectID, pos, "", origin)
}

// RevokedFrame is {"type":"subscription_revoked","project_id":…,"reason":…,"position":…}.
func RevokedFrame(projectID, reason string, pos Position) []byte {
	return positionFrame("subscription_revoked", projectID, pos, reason, "")
}

func positionFrame(typ, projectID string, pos Position, reason, origin string) []byte {
	b := make([]byte, 0, 128)
	b = append(b, `{"type":`...)
	b = appendString(b, typ)
	b = append(b, `,"project_id":`...)
	b = appendString(b, projectID)
	if reason != "" {
		b = append(b, `,"reason":`...)
		b = appendString(b, reason)
	}
	b = append(b, `,"position":"`...)
	b = pos.AppendText(b)
	b = append(b, '"')
	if origin != "" {
		b = append(b, `,"origin":`...)
		b = appendString(b, origin)
	}
	return append(b, '}')
}

// InvalidateFrame is a cache_invalidate frame built from parts, for sources
// other than the WAL (the legacy NOTIFY triggers).
func InvalidateFrame(resource, id, action, projectID string, ts time.Time, pos Position) []byte {
	return appendInvalidate(make([]byte, 0, 256), resource, id, action, projectID, appendTime(nil, ts), pos)
}

// StreamFrame is {"type":"stream_down","project_id":…,"since":…} while
// changes cannot be read (since: when the stream went down), or
// {"type":"stream_up","project_id":…} once they flow again.
func StreamFrame(projectID string, down bool, since time.Time) []byte {
	b := make([]byte, 0, 128)
	if down {
		b = append(b, `{"type":"stream_down","project_id":`...)
	} else {
		b = append(b, `{"type":"stream_up","project_id":`...)
	}
	b = appendString(b, projectID)
	if down {
		b = append(b, `,"since":"`...)
		b = appendTime(b, since)
		b = append(b, '"')
	}
	return append(b, '}')
}
