package events

import "encoding/json"

// GapPrefix is the prefix of the logical decoding messages walcast writes
// into the WAL when changes may have been lost upstream of the stream (a
// watched table was out of the publication). Written after the loss and
// read back in WAL order, a marker tells every project to resync at its
// own position: after everything that was lost, in every replica's stream
// and in the slot's replay after a restart.
const GapPrefix = "walcast.gap"

type gapMarker struct {
	Publication string `json:"publication"`
	Reason      string `json:"reason"`
}

// GapMarker is the content of a gap marker for publication.
func GapMarker(publication, reason string) []byte {
	b, _ := json.Marshal(gapMarker{Publication: publication, Reason: reason})
	return b
}

// ParseGapMarker returns the publication a gap marker concerns.
func ParseGapMarker(content []byte) (publication string, ok bool) {
	var m gapMarker
	if err := json.Unmarshal(content, &m); err != nil || m.Publication == "" {
		return "", false
	}
	return m.Publication, true
}
