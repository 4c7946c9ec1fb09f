package migrate

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"sort"

	"github.com/jackc/pgx/v5"
)

const lockKey = 0x77616c63 // "walc"

// Set is a named group of migrations in an fs.FS directory.
type Set struct {
	Name string // recorded as "<Name>/<file>"
	FS   fs.FS
	Dir  string
}

// Apply runs every migration of sets not yet recorded and returns the names
// it applied.
func Apply(ctx context.Context, conn *pgx.Conn, sets ...Set) ([]string, error) {
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, lockKey); err != nil {
		return nil, fmt.Errorf("take migration lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, lockKey) //nolint:errcheck
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS walcast_schema_migrations (
		name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return nil, fmt.Errorf("create walcast_schema_migrations: %w", err)
	}
	var applied []string
	for _, set := range sets {
		files, err := fs.Glob(set.FS, path.Join(set.Dir, "*.sql"))
		if err != nil {
			return applied, err
		}
		sort.Strings(files)
		for _, f := range files {
			name := set.Name + "/" + path.Base(f)
			var done bool
			if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM walcast_schema_migrations WHERE name = $1)`, name).Scan(&done); err != nil {
				return applied, fmt.Errorf("read migration state: %w", err)
			}
			if done {
				continue
			}
			sql, err := fs.ReadFile(set.FS, f)
			if err != nil {
				return applied, err
			}
			err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, string(sql)); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, `INSERT INTO walcast_schema_migrations (name) VALUES ($1)`, name)
				return err
			})
			if err != nil {
				return applied, fmt.Errorf("migration %s: %w", name, err)
			}
			applied = append(applied, name)
		}
	}
	return applied, nil
}
