package api

// Status is the /api/v1/status document: what an operator needs to see at
// once about the stream, the slot and the sockets.
type Status struct {
	Source      string `json:"source"`
	Slot        string `json:"slot"`
	Publication string `json:"publication"`
	// Origin names the stream positions come from (docs/protocol.md B.1b).
	Origin       string `json:"origin"`
	WALConnected bool   `json:"wal_connected"`
	Cluster      bool   `json:"cluster"`
	// Leader: this replica streams the slot (cluster mode).
	Leader       bool   `json:"leader"`
	ConfirmedLSN string `json:"confirmed_lsn"`
	ReceivedLSN  string `json:"received_lsn"`
	// Position is the newest published position.
	Position         string `json:"position"`
	LagBytes         int64  `json:"lag_bytes"`
	RetainedWALBytes int64  `json:"retained_wal_bytes"`
	WALStatus        string `json:"wal_status"`
	SafeWALSize      *int64 `json:"safe_wal_size"`
	// SlotError is set when the slot's statistics could not be read.
	SlotError     string `json:"slot_error,omitempty"`
	Connections   int64  `json:"connections"`
	Subscriptions int    `json:"subscriptions"`
	HistoryEvents int    `json:"history_events"`
	// LastEventAt is the commit time of the newest event (RFC 3339), nil
	// before the first.
	LastEventAt *string `json:"last_event_at"`
	PID         int     `json:"pid"`
}
