package events

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	hexenc "encoding/hex"
	"encoding/json"
)

// GapPrefix is the prefix of the logical decoding messages walcast writes
// into the WAL when changes may have been lost upstream of the stream (a
// watched table was out of the publication). Written after the loss and
// read back in WAL order, a marker tells every project to resync at its
// own position: after everything that was lost, in every replica's stream
// and in the slot's replay after a restart.
//
// Anyone who can run SQL can write a message under any prefix, so a marker
// carries a MAC under a key only walcast's replicas hold (GapKey): a
// forged one would otherwise make every client refetch everything.
const GapPrefix = "walcast.gap"

// maxGapMarker bounds a marker's content: anything longer is not one.
const maxGapMarker = 1024

type gapMarker struct {
	Publication string `json:"publication"`
	Reason      string `json:"reason"`
	Nonce       string `json:"nonce"`
	MAC         string `json:"mac"`
}

// GapKey derives the key that signs gap markers from a secret every
// replica of a deployment shares (auth.jwt_secret).
func GapKey(secret []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("walcast gap marker v1"))
	return m.Sum(nil)
}

func (g *gapMarker) mac(key []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(g.Publication + "\n" + g.Reason + "\n" + g.Nonce))
	return m.Sum(nil)
}

// GapMarker is the content of a gap marker for publication, signed with key.
func GapMarker(key []byte, publication, reason string) []byte {
	var nonce [12]byte
	_, _ = rand.Read(nonce[:])
	g := gapMarker{Publication: publication, Reason: reason, Nonce: hexenc.EncodeToString(nonce[:])}
	g.MAC = hexenc.EncodeToString(g.mac(key))
	b, _ := json.Marshal(g)
	return b
}

// ParseGapMarker returns the publication a gap marker signed with key
// concerns; ok is false for anything else (forged, another deployment's,
// malformed).
func ParseGapMarker(key, content []byte) (publication string, ok bool) {
	if len(content) > maxGapMarker {
		return "", false
	}
	var g gapMarker
	if err := json.Unmarshal(content, &g); err != nil || g.Publication == "" {
		return "", false
	}
	mac, err := hexenc.DecodeString(g.MAC)
	if err != nil || !hmac.Equal(mac, g.mac(key)) {
		return "", false
	}
	return g.Publication, true
}
