#!/usr/bin/env bash
# pg.sh manages the throwaway PostgreSQL that `make run` and `make test` use:
# the system's PostgreSQL binaries, started as an unprivileged user with
# wal_level=logical, data in a git-ignored folder, listening on 127.0.0.1 only.
#
#   scripts/pg.sh start   initdb if needed, start, wait until it accepts connections
#   scripts/pg.sh stop    fast shutdown
#   scripts/pg.sh url     print the superuser URL of the server
#   scripts/pg.sh status
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PGPORT="${WALCAST_PG_PORT:-54329}"
PGDATA_DIR="${WALCAST_PGDATA:-$ROOT/.pgdata}"
BINDIR="$(pg_config --bindir 2>/dev/null || true)"
if [[ -z "$BINDIR" || ! -x "$BINDIR/initdb" ]]; then
	BINDIR="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
fi
if [[ -z "$BINDIR" || ! -x "$BINDIR/initdb" ]]; then
	echo "pg.sh: PostgreSQL server binaries not found; install Debian's 'postgresql' package" >&2
	exit 1
fi

# initdb and postgres refuse to run as root: run them as the postgres user.
as_pg() {
	if [[ "$(id -u)" == 0 ]]; then
		runuser -u "${WALCAST_PG_USER:-postgres}" -- "$@"
	else
		"$@"
	fi
}

prepare_dir() {
	mkdir -p "$PGDATA_DIR"
	if [[ "$(id -u)" == 0 ]]; then
		chown "${WALCAST_PG_USER:-postgres}" "$PGDATA_DIR"
		# The postgres user must be able to reach the folder; if a parent
		# directory forbids it, fall back to a folder under /tmp.
		if ! as_pg test -w "$PGDATA_DIR"; then
			PGDATA_DIR="/tmp/walcast-pgdata-$(echo "$ROOT" | md5sum | cut -c1-8)"
			mkdir -p "$PGDATA_DIR"
			chown "${WALCAST_PG_USER:-postgres}" "$PGDATA_DIR"
			echo "$PGDATA_DIR" >"$ROOT/.pgdata.path"
		fi
	fi
	chmod 700 "$PGDATA_DIR"
}

if [[ -f "$ROOT/.pgdata.path" && -z "${WALCAST_PGDATA:-}" ]]; then
	PGDATA_DIR="$(cat "$ROOT/.pgdata.path")"
fi
DB="$PGDATA_DIR/db"
SOCK="$PGDATA_DIR/sock"

case "${1:-}" in
start)
	prepare_dir
	if [[ ! -f "$DB/PG_VERSION" ]]; then
		as_pg "$BINDIR/initdb" --pgdata="$DB" --auth=trust --username=postgres --encoding=UTF8 --locale=C.UTF-8 >/dev/null
		as_pg mkdir -p "$SOCK"
		cat >>"$DB/postgresql.conf" <<CONF
# walcast throwaway server
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$SOCK'
wal_level = logical
max_replication_slots = 64
max_wal_senders = 64
max_connections = 300
fsync = off
full_page_writes = off
shared_buffers = 256MB
log_min_messages = warning
CONF
	fi
	# A data folder made for another port (WALCAST_PG_PORT changed since):
	# say so, and serve on the port asked for, rather than wait for a
	# server that listens elsewhere.
	made_for="$(grep -E '^port = [0-9]+' "$DB/postgresql.conf" | tail -1 | awk '{print $3}')"
	if [[ -n "$made_for" && "$made_for" != "$PGPORT" ]]; then
		if as_pg "$BINDIR/pg_ctl" --pgdata="$DB" status >/dev/null 2>&1; then
			echo "pg.sh: the server in $DB is running on port $made_for, not $PGPORT: stop it (scripts/pg.sh stop) or set WALCAST_PG_PORT=$made_for" >&2
			exit 1
		fi
		echo "pg.sh: $DB was made for port $made_for; starting it on port $PGPORT" >&2
		echo "port = $PGPORT" | as_pg tee -a "$DB/postgresql.conf" >/dev/null
	fi
	if as_pg "$BINDIR/pg_ctl" --pgdata="$DB" status >/dev/null 2>&1; then
		exit 0
	fi
	as_pg "$BINDIR/pg_ctl" --pgdata="$DB" --log="$PGDATA_DIR/postgres.log" --wait --timeout=60 start >/dev/null
	for _ in $(seq 1 100); do
		if "$BINDIR/pg_isready" -h 127.0.0.1 -p "$PGPORT" -q; then exit 0; fi
		sleep 0.1
	done
	echo "pg.sh: PostgreSQL did not become ready; see $PGDATA_DIR/postgres.log" >&2
	exit 1
	;;
stop)
	if [[ -f "$DB/PG_VERSION" ]]; then
		as_pg "$BINDIR/pg_ctl" --pgdata="$DB" --mode=fast --wait stop >/dev/null 2>&1 || true
	fi
	;;
status)
	as_pg "$BINDIR/pg_ctl" --pgdata="$DB" status
	;;
url)
	echo "postgres://postgres@127.0.0.1:$PGPORT/postgres?sslmode=disable"
	;;
*)
	echo "usage: scripts/pg.sh start|stop|status|url" >&2
	exit 2
	;;
esac
