#!/usr/bin/env bash
# bench.sh reproduces docs/benchmarks.md on this machine: it owns a bench
# database on the throwaway PostgreSQL (scripts/pg.sh), starts walcast in WAL
# and in NOTIFY mode, runs walcast-bench and pgbench, and writes JSON and SVG
# results to docs/bench/. Takes about 20 minutes.
#
#   scripts/bench.sh            # everything
#   scripts/bench.sh latency    # one part: writes | latency | max | slow | flood | bulk | idle | storm | room | go
#   AB_OLD=bin/walcast-old scripts/bench.sh ab   # this build against another, in one run
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PART="${1:-all}"
OUT="docs/bench"
mkdir -p "$OUT" bin
BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
scripts/pg.sh start
ADMIN="$(scripts/pg.sh url)"
PORT="${WALCAST_PG_PORT:-54329}"
DB="walcast_bench"
DBURL="postgres://postgres@127.0.0.1:$PORT/$DB?sslmode=disable"
export WALCAST_JWT_SECRET="bench-secret-0123456789abcdef"
go build -o bin/walcast ./cmd/walcast
go build -o bin/walcast-bench ./cmd/walcast-bench

WALCAST_PID=""
stop_walcast() {
	if [[ -n "$WALCAST_PID" ]]; then
		kill -TERM "$WALCAST_PID" 2>/dev/null || true
		wait "$WALCAST_PID" 2>/dev/null || true
		# A walcast the storm restarted is not this shell's child.
		while kill -0 "$WALCAST_PID" 2>/dev/null; do sleep 0.1; done
		WALCAST_PID=""
	fi
}
trap stop_walcast EXIT

# fresh_db [notify]: a new bench database, migrated, optionally with the
# legacy triggers; no slot left from a previous run.
fresh_db() {
	psql "$ADMIN" -qtAc "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '$DB'" >/dev/null 2>&1 || true
	psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" 2>/dev/null
	psql "$ADMIN" -qc "CREATE DATABASE $DB"
	if [[ "${1:-}" == notify ]]; then
		WALCAST_DATABASE_URL="$DBURL" bin/walcast migrate --with-notify-triggers >/dev/null
	else
		WALCAST_DATABASE_URL="$DBURL" bin/walcast migrate >/dev/null
	fi
}

# start_walcast wal|notify [queue size]
start_walcast() {
	WALCAST_DATABASE_URL="$DBURL" WALCAST_SOURCE="$1" WALCAST_HTTP_ADDR=127.0.0.1:8090 \
		WALCAST_SLOT_NAME=walcast_bench WALCAST_CONNECT_RATE=0 WALCAST_MAX_CONNECTIONS=50000 \
		WALCAST_QUEUE_SIZE="${2:-4096}" WALCAST_LOG_LEVEL=warn "${WALCAST_BIN:-bin/walcast}" serve >"/tmp/walcast-bench-$1.log" 2>&1 &
	WALCAST_PID=$!
	for _ in $(seq 1 100); do
		curl -sf http://127.0.0.1:8090/readyz >/dev/null && return 0
		sleep 0.1
	done
	echo "walcast did not become ready" >&2
	cat "/tmp/walcast-bench-$1.log" >&2
	exit 1
}

bench() { bin/walcast-bench --url http://127.0.0.1:8090 --db "$DBURL" "$@"; }

if [[ "$PART" == all || "$PART" == writes ]]; then
	echo "== write overhead (pgbench, ${WRITE_SECONDS:=15} s per run, ${WRITE_ROUNDS:=3} interleaved rounds)"
	cat >/tmp/walcast-insert.sql <<'SQL'
INSERT INTO messages (project_id, sender_id, content) VALUES ('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', '11111111-1111-4111-8111-111111111111', 'pgbench message');
SQL
	seed() { psql "$DBURL" -q -f scripts/demo.sql; }
	cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
	tps() { "$BIN/pgbench" -n -c "$1" -j 2 -T "$WRITE_SECONDS" -f /tmp/walcast-insert.sql "$DBURL" 2>/dev/null | awk '/^tps/ {printf "%.0f", $3}'; }
	# Single runs on this machine differ by ±15 %: the four set-ups run in
	# turn, round after round, and the medians are compared.
	: >"$OUT/writes.txt"
	for clients in 8 32; do
		for round in $(seq 1 "$WRITE_ROUNDS"); do
			fresh_db; seed
			a=$(tps "$clients")
			fresh_db notify; seed
			start_walcast notify
			b=$(tps "$clients")
			stop_walcast
			fresh_db; seed
			psql "$DBURL" -qc "SELECT pg_create_logical_replication_slot('recv_bench', 'pgoutput')" >/dev/null
			psql "$DBURL" -qc "CREATE PUBLICATION recv_pub FOR TABLE projects, sprints, tasks, messages, project_members" >/dev/null
			"$BIN/pg_recvlogical" -d "$DBURL" --slot recv_bench --start -o proto_version=1 -o publication_names=recv_pub -f /dev/null &
			RECV=$!
			sleep 1
			r0=$(cpu_ticks "$RECV")
			c=$(tps "$clients")
			rc=$(( $(cpu_ticks "$RECV") - r0 ))
			kill "$RECV"; wait "$RECV" 2>/dev/null || true
			fresh_db; seed
			start_walcast wal
			w0=$(cpu_ticks "$WALCAST_PID")
			d=$(tps "$clients")
			wc=$(( $(cpu_ticks "$WALCAST_PID") - w0 ))
			stop_walcast
			# The consumers' own CPU (1/100 s) during (c) and (d).
			echo "clients=$clients round=$round none=$a notify=$b recvlogical=$c walcast=$d recv_cpu=$rc walcast_cpu=$wc" | tee -a "$OUT/writes.txt"
		done
	done
	# Medians per set-up and their ratios.
	awk '
		function median(list,   n, v, i, j, t) {
			n = split(list, v, " ")
			for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
			return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
		}
		{ split($1, k, "="); c = k[2]; for (f = 3; f <= 6; f++) { split($f, kv, "="); runs[c, kv[1]] = runs[c, kv[1]] " " kv[2] }; cs[c] = 1 }
		END {
			for (c in cs) {
				a = median(runs[c, "none"]); b = median(runs[c, "notify"]); r = median(runs[c, "recvlogical"]); d = median(runs[c, "walcast"])
				printf "median clients=%s none=%.0f notify=%.0f recvlogical=%.0f walcast=%.0f b/a=%.2f c/a=%.2f d/a=%.2f d/c=%.2f d/b=%.2f\n", c, a, b, r, d, b / a, r / a, d / a, d / r, d / b
			}
		}' "$OUT/writes.txt" | sort -t= -k2 -n | tee -a "$OUT/writes.txt"
fi

if [[ "$PART" == all || "$PART" == latency ]]; then
	echo "== latency, WAL vs NOTIFY"
	for mode in wal notify; do
		if [[ $mode == notify ]]; then fresh_db notify; else fresh_db; fi
		start_walcast $mode
		flag=""; [[ $mode == notify ]] && flag="--notify"
		for rate in 200 1000; do
			bench $flag --subscribers 100 --projects 1 --writers 4 --rate $rate --duration 20s \
				--label "$mode $rate/s x 100" --json "$OUT/latency-$mode-$rate.json" --svg "$OUT/latency-$mode-$rate.svg" 2>/dev/null
		done
		stop_walcast
	done
fi

if [[ "$PART" == all || "$PART" == max ]]; then
	echo "== highest sustained delivery rate (100 subscribers, one project)"
	fresh_db
	start_walcast wal
	for rate in 1000 1500 2000 2500 3000; do
		bench --subscribers 100 --projects 1 --writers 8 --rate $rate --duration 15s \
			--label "wal $rate/s x 100" --json "$OUT/max-$rate.json" 2>/dev/null | grep -E "run|committed|deliveries|latency|CPU|lost"
	done
	stop_walcast
fi

if [[ "$PART" == all || "$PART" == slow ]]; then
	echo "== a subscriber that never reads, beside 100 healthy ones"
	fresh_db
	start_walcast wal 1024 # the default queue: the slow one must reach 4008
	# Three pairs, alternating: single runs differ by ±15 % on this machine.
	for pair in 1 2 3; do
		bench --subscribers 100 --projects 1 --rate 1000 --duration 30s --label "wal 1000/s x 100, no slow (pair $pair)" --json "$OUT/slow-0-$pair.json" 2>/dev/null
		bench --subscribers 100 --projects 1 --rate 1000 --duration 30s --slow 1 --label "wal 1000/s x 100, 1 slow (pair $pair)" --json "$OUT/slow-1-$pair.json" 2>/dev/null
	done
	stop_walcast
fi

if [[ "$PART" == all || "$PART" == flood ]]; then
	echo "== two clients flooding pings and never reading, beside 100 healthy ones"
	fresh_db
	start_walcast wal
	for pair in 1 2 3; do
		bench --subscribers 100 --projects 2 --rate 200 --duration 20s --label "wal 200/s x 100, no flood (pair $pair)" --json "$OUT/flood-0-$pair.json" 2>/dev/null
		bench --subscribers 100 --projects 2 --rate 200 --duration 20s --ping-flood 2 --flood-every "${FLOOD_EVERY:-3s}" --label "wal 200/s x 100, 2 ping flooders in another process (pair $pair)" --json "$OUT/flood-2-$pair.json" 2>/dev/null
	done
	stop_walcast
fi

if [[ "$PART" == all || "$PART" == bulk ]]; then
	echo "== one huge transaction: walcast's memory and commit→BULK"
	fresh_db
	start_walcast wal
	bench --subscribers 1 --projects 1 --bulk-rows "${BULK_ROWS:-10000000}" --label "10M rows, one project" --json "$OUT/bulk-10m-1.json" 2>/dev/null
	bench --subscribers 1000 --projects 1000 --bulk-rows "${BULK_ROWS_SPREAD:-1000000}" --label "1M rows over 1,000 projects" --json "$OUT/bulk-1m-1000.json" 2>/dev/null
	stop_walcast
fi

if [[ "$PART" == all || "$PART" == idle ]]; then
	# As many sockets as a process may hold here: walcast needs a
	# descriptor per socket, and this machine's hard limit is
	# `ulimit -Hn` (20,000 where these figures were taken).
	IDLE_SOCKETS="${IDLE_SOCKETS:-$(( $(ulimit -Hn) < 51000 ? ($(ulimit -Hn) - 1000) / 1000 * 1000 : 50000 ))}"
	echo "== $IDLE_SOCKETS idle subscribed sockets"
	fresh_db
	start_walcast wal
	bench --idle --subscribers "$IDLE_SOCKETS" --projects $(( IDLE_SOCKETS / 100 )) --addrs $(( IDLE_SOCKETS / 1000 + 1 )) --connect-concurrency 64 \
		--hold "${IDLE_HOLD:-150s}" --label "$IDLE_SOCKETS idle" --json "$OUT/idle.json" 2>/dev/null
	stop_walcast
fi

if [[ "$PART" == all || "$PART" == storm ]]; then
	echo "== restart storm: 10,000 sockets over 1,000 projects, SIGKILL during writes"
	fresh_db
	# A new slot inherits the oldest catalog_xmin of the cluster's other
	# logical slots, and walcast's start-up publication check then tells
	# every project to resync after a restart within the slot's first
	# hold-back window (docs/benchmarks.md, 5b).
	others="$(psql "$ADMIN" -qtAc "SELECT string_agg(slot_name, ', ') FROM pg_replication_slots WHERE slot_type = 'logical' AND database <> '$DB'")"
	if [[ -n "$others" ]]; then
		echo "note: other logical slots on the cluster ($others): expect resync_required after the restart (drop them for the published figures)"
	fi
	start_walcast wal
	# The restart the load generator runs after its SIGKILL, with the
	# same settings (default connect limits: each socket has a source
	# address of its own, as browsers do).
	restart="WALCAST_DATABASE_URL='$DBURL' WALCAST_HTTP_ADDR=127.0.0.1:8090 WALCAST_SLOT_NAME=walcast_bench WALCAST_MAX_CONNECTIONS=50000 WALCAST_LOG_LEVEL=warn nohup bin/walcast serve >>/tmp/walcast-bench-storm.log 2>&1 &"
	stop_walcast
	sh -c "$restart"
	for _ in $(seq 1 100); do curl -sf http://127.0.0.1:8090/readyz >/dev/null && break; sleep 0.1; done
	bench --storm --subscribers 10000 --projects 1000 --addrs 10000 --connect-concurrency 64 --rate 200 --duration 20s --kill-after 8s \
		--restart-cmd "$restart" --label "storm 10k over 1k projects" --json "$OUT/storm-10k.json" 2>/dev/null || true
	WALCAST_PID="$(curl -s http://127.0.0.1:8090/api/v1/status | sed -n 's/.*"pid":\([0-9]*\).*/\1/p')"
	stop_walcast
fi

if [[ "$PART" == all || "$PART" == room ]]; then
	echo "== one big room: 10,000 and 19,000 subscribers of one project at 100 inserts/s"
	fresh_db
	start_walcast wal
	for n in 10000 19000; do
		# A drain long enough for the backlog: "lost" then means lost.
		bench --subscribers "$n" --projects 1 --addrs $(( n / 1000 + 1 )) --connect-concurrency 64 --writers 2 --rate 100 --duration 10s --drain 90s \
			--label "room of $n at 100/s" --json "$OUT/room-$n.json" 2>/dev/null
	done
	stop_walcast
fi

if [[ "$PART" == ab ]]; then
	# Before/after in one run: AB_OLD=bin/walcast-old scripts/bench.sh ab
	# (the old binary built from the commit to compare with). WAL 200/s x
	# 100 against each build in turn, AB_ROUNDS times, a fresh database
	# and walcast for each; not part of "all".
	: "${AB_OLD:?set AB_OLD to the binary to compare with}"
	for round in $(seq 1 "${AB_ROUNDS:-2}"); do
		for b in "$AB_OLD" bin/walcast; do
			echo "== $b, round $round"
			fresh_db
			WALCAST_BIN="$b" start_walcast wal
			bench --subscribers 100 --projects 1 --writers 4 --rate 200 --duration 15s --label "$b" 2>/dev/null | grep -E "latency p50|walcast CPU"
			stop_walcast
		done
	done
fi

if [[ "$PART" == all || "$PART" == go ]]; then
	echo "== Go benchmarks"
	go test -run '^$' -bench . -benchtime 2s ./internal/wal ./internal/hub | tee "$OUT/go-bench.txt" | grep -E "^Benchmark"
fi
