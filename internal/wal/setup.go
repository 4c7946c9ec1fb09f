package wal

import (
	"context"
	"errors"
	"fmt"
	"github.com/jackc/pglogrepl"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/walcast/walcast/internal/events"
)

// EnsurePublication creates the publication for tables when it is missing,
// and checks that an existing one publishes every table and every action.
func EnsurePublication(ctx context.Context, pool *pgxpool.Pool, name string, tables []events.Table) error {
	var exists bool
	if err := pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("read publication %s: %w", name, err)
	}
	if !exists {
		_, err := pool.Exec(ctx, "CREATE PUBLICATION "+pgx.Identifier{name}.Sanitize()+" FOR TABLE "+tableList(tables))
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42710" {
			return EnsurePublication(ctx, pool, name, tables) // created concurrently
		}
		if errors.As(err, &pgErr) && pgErr.Code == "42501" {
			return fmt.Errorf("create publication %s: %s; as an owner of the tables run: CREATE PUBLICATION %s FOR TABLE %s; (or walcast migrate, as an admin)",
				name, pgErr.Message, pgx.Identifier{name}.Sanitize(), tableList(tables))
		}
		if err != nil {
			return fmt.Errorf("create publication %s: %w", name, err)
		}
		return nil
	}
	pub, err := ReadPublication(ctx, pool, name, tables)
	if err != nil {
		return err
	}
	if problems := pub.Problems(tables); len(problems) > 0 {
		return fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return nil
}

// Publication is what a publication streams of the watched tables.
type Publication struct {
	Name   string
	Exists bool
	// AllActions: it publishes insert, update, delete and truncate.
	AllActions bool
	// Missing are the watched tables it does not publish.
	Missing []events.Table
	// Filtered are watched tables it publishes with a row filter or a
	// column list (PostgreSQL 15+): changes it leaves out are never seen.
	Filtered []events.Table
	// Identity names the catalog rows behind all of the above
	// (publicationIdentity): when it changes, the publication changed.
	Identity string
}

// Problems says, with its fix, each way p keeps a change from being
// streamed; none means every change of every watched table is.
func (p Publication) Problems(tables []events.Table) []string {
	if !p.Exists {
		return []string{fmt.Sprintf("publication %s does not exist; create it: CREATE PUBLICATION %s FOR TABLE %s", p.Name, quoteIdent(p.Name), tableList(tables))}
	}
	var problems []string
	if !p.AllActions {
		problems = append(problems, fmt.Sprintf("publication %s does not publish every action; run ALTER PUBLICATION %s SET (publish = 'insert, update, delete, truncate')", p.Name, quoteIdent(p.Name)))
	}
	if len(p.Missing) > 0 {
		qualified, sql := make([]string, len(p.Missing)), make([]string, len(p.Missing))
		for i, t := range p.Missing {
			qualified[i], sql[i] = t.QualifiedName(), sqlName(t)
		}
		problems = append(problems, fmt.Sprintf("publication %s lacks table(s) %s; run ALTER PUBLICATION %s ADD TABLE %s",
			p.Name, strings.Join(qualified, ", "), quoteIdent(p.Name), strings.Join(sql, ", ")))
	}
	for _, t := range p.Filtered {
		problems = append(problems, fmt.Sprintf("publication %s filters the rows or columns of %s, so walcast never sees some of its changes; publish it whole: ALTER PUBLICATION %s SET TABLE … with %s and no WHERE or column list",
			p.Name, t.QualifiedName(), quoteIdent(p.Name), sqlName(t)))
	}
	return problems
}

// AccessBlind reports whether a change of access could go unstreamed: a
// table that grants access (members, projects) missing, an action not
// published, or no publication at all.
func (p Publication) AccessBlind() bool {
	if !p.Exists || !p.AllActions {
		return true
	}
	return slices.ContainsFunc(p.Missing, events.Table.GrantsAccess) || slices.ContainsFunc(p.Filtered, events.Table.GrantsAccess)
}

// ReadPublication reads what publication name streams of tables, and the
// identity of its catalog rows.
func ReadPublication(ctx context.Context, pool *pgxpool.Pool, name string, tables []events.Table) (Publication, error) {
	p := Publication{Name: name}
	var ins, upd, del, trunc bool
	err := pool.QueryRow(ctx, "SELECT pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication WHERE pubname = $1", name).Scan(&ins, &upd, &del, &trunc)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, nil
	}
	if err != nil {
		return p, fmt.Errorf("read publication %s: %w", name, err)
	}
	p.Exists, p.AllActions = true, ins && upd && del && trunc
	rows, err := pool.Query(ctx, "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1", name)
	if err != nil {
		return p, fmt.Errorf("read tables of publication %s: %w", name, err)
	}
	published, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return p, fmt.Errorf("read tables of publication %s: %w", name, err)
	}
	for _, t := range tables {
		if !slices.Contains(published, t.QualifiedName()) {
			p.Missing = append(p.Missing, t)
		}
	}
	// Row filters and column lists exist from PostgreSQL 15 on.
	rows, err = pool.Query(ctx, `SELECT n.nspname || '.' || c.relname
		FROM pg_publication_rel r
		JOIN pg_publication pub ON pub.oid = r.prpubid
		JOIN pg_class c ON c.oid = r.prrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE pub.pubname = $1 AND current_setting('server_version_num')::int >= 150000
		  AND (to_jsonb(r) ->> 'prqual' IS NOT NULL OR to_jsonb(r) ->> 'prattrs' IS NOT NULL)`, name)
	if err != nil {
		return p, fmt.Errorf("read filters of publication %s: %w", name, err)
	}
	filtered, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return p, fmt.Errorf("read filters of publication %s: %w", name, err)
	}
	for _, t := range tables {
		if slices.Contains(filtered, t.QualifiedName()) {
			p.Filtered = append(p.Filtered, t)
		}
	}
	if p.Identity, err = publicationIdentity(ctx, pool, name, tables); err != nil {
		return p, fmt.Errorf("read the catalog rows of publication %s: %w", name, err)
	}
	return p, nil
}

// publicationIdentity names what makes publication name stream tables:
// its own row version (its actions), the rows that put each table or
// schema in it, and each watched table's id and name. A change to them,
// even one undone before the next look (a table dropped and added again,
// rebuilt under another id), gives another identity: new row versions, new
// ids. A table renamed and renamed back keeps its id, under which the
// reader knows it (its changes meanwhile are streamed); privileges, indexes
// and other DDL that hides no change are not part of it.
func publicationIdentity(ctx context.Context, pool *pgxpool.Pool, name string, tables []events.Table) (string, error) {
	qualified := make([]string, len(tables))
	for i, t := range tables {
		qualified[i] = pgx.Identifier{schemaOf(t), t.Name}.Sanitize()
	}
	var id string
	var version int
	err := pool.QueryRow(ctx, `SELECT p.xmin::text || '/' || coalesce((SELECT string_agg(r.oid::text, ',' ORDER BY r.oid) FROM pg_publication_rel r
			WHERE r.prpubid = p.oid AND r.prrelid IN (SELECT to_regclass(x) FROM unnest($2::text[]) x)), '')
		|| '/' || coalesce((SELECT string_agg(c.oid::text || ':' || n.nspname || '.' || c.relname, ',' ORDER BY c.oid)
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.oid IN (SELECT to_regclass(x) FROM unnest($2::text[]) x)), ''),
		current_setting('server_version_num')::int
		FROM pg_publication p WHERE p.pubname = $1`, name, qualified).Scan(&id, &version)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil || version < 150000 {
		return id, err
	}
	// Schemas in a publication exist from PostgreSQL 15 on.
	var schemas string
	err = pool.QueryRow(ctx, `SELECT coalesce(string_agg(n.oid::text, ',' ORDER BY n.oid), '') FROM pg_publication_namespace n
		JOIN pg_publication p ON p.oid = n.pnpubid WHERE p.pubname = $1`, name).Scan(&schemas)
	return id + "/" + schemas, err
}

func tableList(tables []events.Table) string {
	idents := make([]string, len(tables))
	for i, t := range tables {
		idents[i] = sqlName(t)
	}
	return strings.Join(idents, ", ")
}

func schemaOf(t events.Table) string {
	if t.Schema == "" {
		return "public"
	}
	return t.Schema
}

// EnsureSlot creates the permanent logical slot with pgoutput when missing,
// and checks that an existing one uses pgoutput in this database.
func EnsureSlot(ctx context.Context, pool *pgxpool.Pool, slot string) (created bool, err error) {
	var plugin, slotType string
	var sameDB bool
	err = pool.QueryRow(ctx, `SELECT coalesce(plugin, ''), slot_type, database = current_database()
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&plugin, &slotType, &sameDB)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		_, err = pool.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42710" {
			return false, nil // another replica created it
		}
		if err != nil {
			return false, fmt.Errorf("create replication slot %s: %w", slot, err)
		}
		return true, nil
	case err != nil:
		return false, fmt.Errorf("read replication slot %s: %w", slot, err)
	case slotType != "logical" || plugin != "pgoutput":
		return false, fmt.Errorf("replication slot %s exists but is %s/%s, not logical/pgoutput; choose another slot name (replication.slot, WALCAST_SLOT_NAME)", slot, slotType, plugin)
	case !sameDB:
		return false, fmt.Errorf("replication slot %s belongs to another database; choose another slot name (replication.slot, WALCAST_SLOT_NAME)", slot)
	}
	return false, nil
}

// WALEnd reads the server's WAL end: what has been written (on a standby,
// replayed) by now.
func WALEnd(ctx context.Context, pool *pgxpool.Pool) (uint64, error) {
	var end string
	if err := pool.QueryRow(ctx, `SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text`).Scan(&end); err != nil {
		return 0, fmt.Errorf("read the WAL end: %w", err)
	}
	lsn, err := pglogrepl.ParseLSN(end)
	return uint64(lsn), err
}

// SlotConfirmed reads the slot's confirmed position (the server's WAL end
// for a slot that has confirmed nothing yet).
func SlotConfirmed(ctx context.Context, pool *pgxpool.Pool, slot string) (uint64, error) {
	var s string
	if err := pool.QueryRow(ctx, `SELECT coalesce(confirmed_flush_lsn, pg_current_wal_lsn())::text FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&s); err != nil {
		return 0, fmt.Errorf("read slot %s: %w", slot, err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	return uint64(lsn), err
}
