#!/usr/bin/env bash
# test.sh is `make test`: the throwaway PostgreSQL, then go test -race ./...
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/pg.sh start
export WALCAST_TEST_DATABASE_URL="${WALCAST_TEST_DATABASE_URL:-$(scripts/pg.sh url)}"
go vet ./...
unformatted="$(gofmt -l .)"
if [[ -n "$unformatted" ]]; then
	echo "gofmt needed on:" >&2
	echo "$unformatted" >&2
	exit 1
fi
# A short run of every fuzz target (seed corpus plus a few seconds of new
# inputs); FUZZTIME=0 skips it for a quick local loop.
if [[ "${FUZZTIME:-4s}" != "0" ]]; then
	scripts/fuzz.sh
fi
go test -race -count=1 -timeout 15m "$@" ./...
