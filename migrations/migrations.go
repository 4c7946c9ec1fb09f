// Package migrations embeds the reference schema (*.sql, applied by
// `walcast migrate`) and the optional legacy NOTIFY triggers (notify/*.sql,
// applied only with --with-notify-triggers).
package migrations

import "embed"

// Schema holds *.sql; Notify holds notify/*.sql.
//
//go:embed *.sql
var Schema embed.FS

// Notify holds the optional legacy trigger set.
//
//go:embed notify/*.sql
var Notify embed.FS

// Role holds the least-privilege role for walcast (role/*.sql, applied only
// with --with-role).
//
//go:embed role/*.sql
var Role embed.FS
