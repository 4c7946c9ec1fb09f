package wal

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrOriginChanged reports a server that is not the one walcast started
// on: another cluster (a restore, a blue/green switch) or another timeline
// of it (a promoted standby, a point-in-time recovery). Positions of the
// old one mean nothing here, and the new one may have written different
// changes at positions walcast already published, so Run returns it and
// walcast stops; a fresh start has the new origin, and every client
// resuming with the old one is answered resync_required.
var ErrOriginChanged = errors.New("the database is not the one walcast started on")

// Origin names where positions come from: the cluster's system
// identifier, its timeline and the slot, "<system>.<timeline>.<slot>".
// A position is meaningful only with its origin.
func Origin(system string, timeline int32, slot string) string {
	return system + "." + strconv.FormatInt(int64(timeline), 10) + "." + slot
}

// Identify connects for replication and returns the origin of the slot's
// positions on that server.
func Identify(ctx context.Context, databaseURL, slot string) (string, error) {
	cfg, err := replicationConfig(databaseURL)
	if err != nil {
		return "", err
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return "", fmt.Errorf("connect for replication: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return identify(ctx, conn, slot)
}

func identify(ctx context.Context, conn *pgconn.PgConn, slot string) (string, error) {
	sys, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return "", fmt.Errorf("identify the server: %w", err)
	}
	return Origin(sys.SystemID, sys.Timeline, slot), nil
}
