#!/usr/bin/env bash
# run.sh is `make run`: a throwaway local PostgreSQL, the migrations, demo
# data, and walcast on 127.0.0.1:8080 in the foreground. Ctrl-C stops
# walcast and then the database.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

scripts/pg.sh start
ADMIN_URL="$(scripts/pg.sh url)"
psql "$ADMIN_URL" -qtAc "SELECT 1 FROM pg_database WHERE datname = 'walcast_demo'" | grep -q 1 \
	|| psql "$ADMIN_URL" -qc "CREATE DATABASE walcast_demo"

export WALCAST_DATABASE_URL="${WALCAST_DATABASE_URL:-postgres://postgres@127.0.0.1:${WALCAST_PG_PORT:-54329}/walcast_demo?sslmode=disable}"
export WALCAST_JWT_SECRET="${WALCAST_JWT_SECRET:-dev-only-secret-change-me-0123456789}"
export WALCAST_HTTP_ADDR="${WALCAST_HTTP_ADDR:-127.0.0.1:8080}"
export WALCAST_DEMO="${WALCAST_DEMO:-1}"

mkdir -p bin
go build -o bin/walcast ./cmd/walcast
bin/walcast migrate
psql "$WALCAST_DATABASE_URL" -q -f scripts/demo.sql

ALICE=11111111-1111-4111-8111-111111111111
BOB=22222222-2222-4222-8222-222222222222
MALLORY=33333333-3333-4333-8333-333333333333
PROJECT=aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa
ALICE_TOKEN="$(bin/walcast token --user $ALICE --ttl 24h)"
BOB_TOKEN="$(bin/walcast token --user $BOB --ttl 24h)"
MALLORY_TOKEN="$(bin/walcast token --user $MALLORY --ttl 24h)"

cat <<MSG

walcast is starting on http://$WALCAST_HTTP_ADDR  (Ctrl-C stops it and the database)

  project  $PROJECT  (members: alice, bob; mallory is not one)
  alice    $ALICE_TOKEN
  bob      $BOB_TOKEN
  mallory  $MALLORY_TOKEN

Open the demo in two browser windows, one per user:
  http://$WALCAST_HTTP_ADDR/demo/?user=$ALICE
  http://$WALCAST_HTTP_ADDR/demo/?user=$BOB

Listen as bob (websocat, or: npx wscat -c ...):
  websocat 'ws://$WALCAST_HTTP_ADDR/ws?token=$BOB_TOKEN'
  {"action":"subscribe","project_id":"$PROJECT"}

Post as alice:
  curl -s -X POST -H 'Authorization: Bearer $ALICE_TOKEN' -H 'Content-Type: application/json' \\
       -d '{"content":"hello from alice"}' http://$WALCAST_HTTP_ADDR/api/v1/projects/$PROJECT/messages

Or write with plain SQL, as the existing API does:
  psql '$WALCAST_DATABASE_URL' -c "INSERT INTO messages (project_id, sender_id, content) VALUES ('$PROJECT', '$ALICE', 'hi from SQL')"

Status and metrics:  curl -s http://$WALCAST_HTTP_ADDR/api/v1/status ; curl -s http://$WALCAST_HTTP_ADDR/metrics

MSG

cleanup() { scripts/pg.sh stop; }
trap cleanup EXIT
# Not exec: the trap must run after walcast exits to stop the database.
bin/walcast serve "$@" &
WALCAST_PID=$!
trap 'kill -TERM $WALCAST_PID 2>/dev/null || true' INT TERM
wait $WALCAST_PID || true
wait $WALCAST_PID 2>/dev/null || true
