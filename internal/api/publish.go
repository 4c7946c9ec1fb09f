package api

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5"

	"github.com/walcast/walcast/internal/events"
	"github.com/walcast/walcast/publish"
)

// Publisher is what POST /api/v1/projects/{id}/events needs: the service
// credential, the rules of published events, and where to learn the
// position an event was delivered at.
type Publisher struct {
	Token          string
	Prefix         string
	MaxBytes       int
	ConfirmTimeout time.Duration
	// Check adds the deployment's rules (its row events' names are
	// reserved) to the publish package's.
	Check func(publish.Message) error
	// Expect waits for the published event of transaction xid to reach
	// this replica's hub (relay.Acks).
	Expect func(xid uint32) (<-chan events.Position, func())
}

// publishBody is the route's request body.
type publishBody struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

// publishAnswer is the 202 body. Position is null when the event was
// committed but did not reach the stream within the confirm timeout (the
// stream is down): it is delivered when the stream is back.
type publishAnswer struct {
	Type      string  `json:"type"`
	ProjectID string  `json:"project_id"`
	Position  *string `json:"position"`
	LSN       string  `json:"lsn"`
}

// publishEvent writes {"type","data"} to the WAL for the project's
// members, exactly as publish.Send does from the API's own transaction,
// and answers 202 with the event's position once the stream delivered it.
func (h *handlers) publishEvent(w http.ResponseWriter, r *http.Request) {
	p := h.d.Publisher
	if p == nil {
		writeError(w, http.StatusNotFound, "not_found", h.d.PublishOff)
		return
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		writeError(w, http.StatusUnauthorized, "unauthorized", "send Authorization: Bearer <publish token>")
		return
	}
	got = strings.TrimSpace(got)
	if subtle.ConstantTimeCompare([]byte(got), []byte(p.Token)) != 1 {
		if _, err := h.d.Verifier.Verify(got); err == nil {
			writeError(w, http.StatusForbidden, "forbidden", "a user token may not publish: this route needs the service's publish token")
			return
		}
		writeError(w, http.StatusUnauthorized, "unauthorized", "this route needs the publish token")
		return
	}
	pid := strings.ToLower(chi.URLParam(r, "projectID"))
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "send Content-Type: application/json")
		return
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(p.MaxBytes)))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "too_large", "body is larger than "+strconv.Itoa(p.MaxBytes)+" bytes")
			return
		}
		writeError(w, http.StatusBadRequest, "bad_request", "body could not be read")
		return
	}
	// Exactly {"type","data"}: keys are matched exactly (encoding/json
	// alone would take "TYPE" too), and null is not an object.
	var fields map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&fields); err != nil || fields == nil || dec.More() {
		writeError(w, http.StatusBadRequest, "bad_request", `body must be one JSON object {"type":"…","data":{…}}`)
		return
	}
	if _, err := dec.Token(); err != io.EOF {
		writeError(w, http.StatusBadRequest, "bad_request", "body has data after the JSON object")
		return
	}
	var body publishBody
	for k, v := range fields {
		switch k {
		case "type":
			if err := json.Unmarshal(v, &body.Type); err != nil {
				writeError(w, http.StatusUnprocessableEntity, "invalid_type", "type must be a string")
				return
			}
		case "data":
			body.Data = v
		default:
			writeError(w, http.StatusBadRequest, "bad_request", `unknown field "`+k+`": the body has only "type" and "data"`)
			return
		}
	}
	var data any
	if len(body.Data) > 0 && string(body.Data) != "null" {
		data = body.Data
	}
	msg, err := publish.Encode(pid, body.Type, data)
	if err == nil {
		var m publish.Message
		if m, err = publish.Parse(msg); err == nil {
			err = p.Check(m)
		}
	}
	switch {
	case errors.Is(err, publish.ErrProjectID):
		writeError(w, http.StatusBadRequest, "bad_request", "project id is not a UUID")
		return
	case errors.Is(err, publish.ErrReservedType):
		writeError(w, http.StatusUnprocessableEntity, "reserved_type", err.Error())
		return
	case errors.Is(err, publish.ErrType):
		writeError(w, http.StatusUnprocessableEntity, "invalid_type", err.Error())
		return
	case err != nil:
		writeError(w, http.StatusUnprocessableEntity, "invalid_data", err.Error())
		return
	case len(msg) > p.MaxBytes:
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", "the event is larger than "+strconv.Itoa(p.MaxBytes)+" bytes")
		return
	}

	var (
		position   <-chan events.Position
		lsn        string
		cancelWait = func() {}
	)
	defer func() { cancelWait() }()
	err = pgx.BeginFunc(r.Context(), h.d.Pool, func(tx pgx.Tx) error {
		var xid uint64
		if err := tx.QueryRow(r.Context(), `SELECT pg_current_xact_id()::text::bigint`).Scan(&xid); err != nil {
			return err
		}
		// Registered before the commit: the event may reach the hub
		// before COMMIT returns.
		position, cancelWait = p.Expect(uint32(xid))
		return tx.QueryRow(r.Context(), `SELECT pg_logical_emit_message(true, $1::text, $2::text)::text`, p.Prefix, string(msg)).Scan(&lsn)
	})
	if err != nil {
		h.internal(w, r, "publish", err)
		return
	}
	h.d.Metrics.HTTPPublished.Inc()
	answer := publishAnswer{Type: body.Type, ProjectID: pid, LSN: lsn}
	timer := time.NewTimer(p.ConfirmTimeout)
	defer timer.Stop()
	select {
	case pos := <-position:
		s := pos.String()
		answer.Position = &s
	case <-timer.C:
	case <-r.Context().Done():
	}
	writeJSON(w, http.StatusAccepted, answer)
}
