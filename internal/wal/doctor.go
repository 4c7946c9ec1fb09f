package wal

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/walcast/walcast/internal/events"
)

// Finding is one thing that stops walcast from starting (an Error) or
// weakens it (a Warning), with the SQL or setting that fixes it.
type Finding struct {
	Error bool
	What  string
	Fix   string
}

func (f Finding) String() string {
	level := "warning"
	if f.Error {
		level = "error"
	}
	if f.Fix == "" {
		return level + ": " + f.What
	}
	return level + ": " + f.What + "\n  fix: " + f.Fix
}

// Doctor checks everything that would stop or weaken walcast on this
// database, all at once, and creates nothing: the server's settings, the
// role's rights, the tables, their replica identities, the publication
// and the slot.
func Doctor(ctx context.Context, pool *pgxpool.Pool, publication, slot string, tables []events.Table) ([]Finding, error) {
	var out []Finding
	add := func(isErr bool, what, fix string) { out = append(out, Finding{Error: isErr, What: what, Fix: fix}) }

	var (
		level, role                string
		version, slots, senders    int
		usedSlots, usedSenders     int
		replication, super, canPub bool
		keepSize                   string
	)
	err := pool.QueryRow(ctx, `SELECT current_setting('wal_level'), current_user,
		current_setting('server_version_num')::int,
		current_setting('max_replication_slots')::int, current_setting('max_wal_senders')::int,
		(SELECT count(*) FROM pg_replication_slots)::int,
		(SELECT count(*) FROM pg_stat_replication)::int,
		r.rolreplication, r.rolsuper,
		r.rolsuper OR (has_database_privilege(current_database(), 'CREATE') AND
			coalesce((SELECT bool_and(pg_has_role(c.relowner, 'USAGE')) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			          WHERE (n.nspname || '.' || c.relname) = ANY($1)), false)),
		coalesce(current_setting('max_slot_wal_keep_size', true), '')
		FROM pg_roles r WHERE r.rolname = current_user`, qualifiedNames(tables)).Scan(&level, &role, &version, &slots, &senders, &usedSlots, &usedSenders,
		&replication, &super, &canPub, &keepSize)
	if err != nil {
		return nil, fmt.Errorf("read the server's settings: %w", err)
	}
	if level != "logical" {
		add(true, "the server has wal_level="+level+": logical replication is off", "set wal_level = logical in postgresql.conf and restart PostgreSQL")
	}
	if version < 140000 {
		add(false, fmt.Sprintf("PostgreSQL %d.%d: published events and walcast's gap markers need 14 or later", version/10000, version%10000), "upgrade PostgreSQL to 14 or later")
	}
	if !replication && !super {
		add(true, "role "+role+" may not stream the WAL (no REPLICATION attribute)", "ALTER ROLE "+quoteIdent(role)+" REPLICATION;")
	}
	if keepSize == "-1" {
		add(false, "max_slot_wal_keep_size is unlimited: a slot left behind (walcast down for long) makes the primary keep WAL until its disk is full",
			"set max_slot_wal_keep_size (e.g. 10GB) in postgresql.conf; walcast resyncs its clients if the slot is ever invalidated")
	}

	var slotExists, slotSameDB, slotActive bool
	var plugin, slotType, walStatus string
	err = pool.QueryRow(ctx, `SELECT true, coalesce(plugin, ''), slot_type, database = current_database(), active, coalesce(wal_status, '')
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&slotExists, &plugin, &slotType, &slotSameDB, &slotActive, &walStatus)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("read replication slot %s: %w", slot, err)
	}
	switch {
	case !slotExists && usedSlots >= slots:
		add(true, fmt.Sprintf("no free replication slot (%d of max_replication_slots %d in use) for walcast's slot %s", usedSlots, slots, slot),
			"raise max_replication_slots in postgresql.conf and restart, or drop an unused slot: SELECT pg_drop_replication_slot('<name>');")
	case slotExists && (slotType != "logical" || plugin != "pgoutput"):
		add(true, fmt.Sprintf("replication slot %s is %s/%s, not logical/pgoutput", slot, slotType, plugin), "choose another slot name (replication.slot, WALCAST_SLOT_NAME)")
	case slotExists && !slotSameDB:
		add(true, "replication slot "+slot+" belongs to another database", "choose another slot name (replication.slot, WALCAST_SLOT_NAME)")
	case slotExists && walStatus == "lost":
		add(false, "replication slot "+slot+" was invalidated (wal_status lost): the WAL it needed is gone",
			"walcast re-creates it and tells every client to resync; raise max_slot_wal_keep_size if this was not expected")
	}
	if !slotActive && usedSenders >= senders {
		add(true, fmt.Sprintf("no free WAL sender (%d of max_wal_senders %d in use)", usedSenders, senders), "raise max_wal_senders in postgresql.conf and restart")
	}

	// Tables: present, readable, and whose DELETE carries what the
	// mapping needs.
	for _, t := range tables {
		var exists, canSelect bool
		var ident string
		var cols []string
		err := pool.QueryRow(ctx, `SELECT true, has_table_privilege(c.oid, 'SELECT'), c.relreplident::text,
			coalesce((SELECT array_agg(a.attname::text) FROM pg_index i JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
			          WHERE i.indrelid = c.oid AND ((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident))), '{}')
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`,
			schemaOf(t), t.Name).Scan(&exists, &canSelect, &ident, &cols)
		if errors.Is(err, pgx.ErrNoRows) {
			add(true, "table "+t.QualifiedName()+" does not exist", "point walcast at the app's database, or map its tables in events.tables (walcast migrate creates the reference schema)")
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read table %s: %w", t.QualifiedName(), err)
		}
		if !canSelect {
			add(true, "role "+role+" may not read "+t.QualifiedName()+" (membership checks and REST reads need it)",
				"GRANT SELECT ON "+sqlName(t)+" TO "+quoteIdent(role)+";")
		}
		if ident == "f" {
			continue
		}
		var missing []string
		for _, need := range t.IdentityColumns() {
			if !slices.Contains(cols, need) {
				missing = append(missing, need)
			}
		}
		if len(missing) > 0 {
			add(true, fmt.Sprintf("table %s: its replica identity does not carry column %s, so a DELETE cannot be mapped", t.QualifiedName(), strings.Join(missing, ", ")),
				"ALTER TABLE "+sqlName(t)+" REPLICA IDENTITY FULL;")
		}
	}

	pub, err := ReadPublication(ctx, pool, publication, tables)
	if err != nil {
		return nil, err
	}
	if !pub.Exists {
		if !canPub {
			add(true, "publication "+publication+" does not exist, and role "+role+" may not create it (that takes owning the tables)",
				"as an admin: CREATE PUBLICATION "+quoteIdent(publication)+" FOR TABLE "+tableList(tables)+"; (or walcast migrate)")
		} else {
			add(false, "publication "+publication+" does not exist: walcast creates it at start", "")
		}
	} else {
		for _, p := range pub.Problems(tables) {
			what, fix, _ := strings.Cut(p, "; ")
			add(true, what, strings.TrimPrefix(fix, "run "))
		}
	}
	if !slotExists && (replication || super) && level == "logical" {
		add(false, "replication slot "+slot+" does not exist: walcast creates it at start", "")
	}
	return out, nil
}

// Errors joins the findings that stop walcast into one error (nil when
// there are none), each with its fix.
func Errors(findings []Finding) error {
	var lines []string
	for _, f := range findings {
		if f.Error {
			lines = append(lines, f.What+" (fix: "+f.Fix+")")
		}
	}
	if len(lines) == 0 {
		return nil
	}
	return fmt.Errorf("the database is not ready for walcast (%d problem(s); walcast check lists them): %s", len(lines), strings.Join(lines, "; "))
}

func qualifiedNames(tables []events.Table) []string {
	out := make([]string, len(tables))
	for i, t := range tables {
		out[i] = t.QualifiedName()
	}
	return out
}

// quoteIdent writes an identifier for SQL to be run as printed: quoted,
// so that mixed case, spaces and keywords ("user", "order") are read as
// written.
func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }

// sqlName is a table's schema-qualified name for SQL to be run as printed.
func sqlName(t events.Table) string { return quoteIdent(schemaOf(t)) + "." + quoteIdent(t.Name) }
