#!/usr/bin/env bash
# fuzz.sh runs every fuzz target for a short while (FUZZTIME, default 4s
# each) from its committed seed corpus; `make test` runs it after the tests.
# For a long hunt: FUZZTIME=10m scripts/fuzz.sh, or go test -fuzz on one target.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
FUZZTIME="${FUZZTIME:-4s}"
targets=(
	"./internal/wal FuzzDecode"
	"./internal/wal FuzzDecodeStream"
	"./internal/ws FuzzParseFrame"
	"./internal/auth FuzzVerify"
	"./internal/config FuzzParse"
	"./internal/events FuzzParsePosition"
	"./internal/events FuzzAppendString"
	"./internal/events FuzzMap"
)
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	echo "fuzz $name ($pkg) for $FUZZTIME"
	go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$pkg" >/tmp/walcast-fuzz.log 2>&1 || {
		cat /tmp/walcast-fuzz.log
		exit 1
	}
done
echo "fuzz: all targets ran clean"
