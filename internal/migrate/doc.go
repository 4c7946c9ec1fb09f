// Package migrate applies embedded SQL migrations in name order, each once,
// each in its own transaction, recorded in walcast_schema_migrations. An
// advisory lock keeps two replicas from migrating at the same time.
package migrate
