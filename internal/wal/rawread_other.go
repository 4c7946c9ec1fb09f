//go:build !linux

package wal

import "github.com/jackc/pgx/v5/pgconn"

// rawReads leaves reading to Go's own net.Conn where a raw read(2) is not
// wired up (rawread.go).
func rawReads(dial pgconn.DialFunc) pgconn.DialFunc { return dial }
