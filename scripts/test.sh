#!/usr/bin/env bash
# test.sh is `make test`: the throwaway PostgreSQL, then go test -race ./...
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# The server is stopped at the end unless it was running before (make run's).
if ! scripts/pg.sh status >/dev/null 2>&1; then
	trap 'scripts/pg.sh stop >/dev/null 2>&1 || true' EXIT
fi
scripts/pg.sh start
export WALCAST_TEST_DATABASE_URL="${WALCAST_TEST_DATABASE_URL:-$(scripts/pg.sh url)}"
# The JavaScript client's dev dependencies (TypeScript, @tanstack/query-core),
# exactly as the lockfile says.
npm ci --prefix web --no-audit --no-fund --loglevel=error
go vet ./...
unformatted="$(gofmt -l .)"
if [[ -n "$unformatted" ]]; then
	echo "gofmt needed on:" >&2
	echo "$unformatted" >&2
	exit 1
fi
# A short run of every fuzz target (seed corpus plus a few seconds of new
# inputs; `make fuzz` runs them longer); FUZZTIME=0 skips it for a quick
# local loop.
export FUZZTIME="${FUZZTIME:-2s}"
if [[ "$FUZZTIME" != "0" ]]; then
	scripts/fuzz.sh
fi
# The end-to-end tests of cmd/walcast run two at a time (t.Parallel): each
# has its own database, slot and ports, and most of their time is spent
# waiting on restarts and timers. Pinned at 2 so that a machine with more
# cores does not run more walcasts at once than the shared server was
# sized and measured for.
go test -race -count=1 -parallel 2 -timeout 15m "$@" ./...
