#!/usr/bin/env bash
# Smoke test of a deployed evtrack, end to end through the queue and the database:
#
#   EVTRACK_SMOKE_WRITE_KEY=evtw_… EVTRACK_SMOKE_READ_KEY=evtr_… infra/aws/smoke.sh <API_URL>
#
# The two keys belong to one project (the smoke-test project, see infra/aws/README.md).
# Sends an identify and a track with the write key, waits (up to EVTRACK_SMOKE_TIMEOUT_SECONDS,
# 90 by default) until the api shows the identified user's traits and both events, each once,
# to the read key, checks GET /health, and that the api refuses the write key with 403. Prints
# each check; never the keys. Exits non-zero at the first failure. Needs bash, curl and jq.
set -euo pipefail

die() { printf 'FAIL %s\n' "$*" >&2; exit 1; }
ok() { printf 'ok   %s\n' "$*"; }

[ $# -eq 1 ] || die "usage: $0 <API_URL>"
api=${1%/}
case $api in
  https://* | http://*) ;;
  *) die "API_URL must start with https:// (got ${api:-nothing})" ;;
esac
write_key=${EVTRACK_SMOKE_WRITE_KEY:-}
read_key=${EVTRACK_SMOKE_READ_KEY:-}
[[ $write_key == evtw_* ]] || die "EVTRACK_SMOKE_WRITE_KEY must hold a write key (evtw_…)"
[[ $read_key == evtr_* ]] || die "EVTRACK_SMOKE_READ_KEY must hold a read key (evtr_…)"
timeout=${EVTRACK_SMOKE_TIMEOUT_SECONDS:-90}
for tool in curl jq; do command -v "$tool" >/dev/null || die "$tool is not installed"; done

run=${GITHUB_RUN_ID:-local}
user="smoke-$run-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"

# The keys go to curl in header files (mode 600), never on a command line or in the output.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077
printf 'Authorization: Basic %s\n' "$(printf '%s:' "$write_key" | base64 | tr -d '\n')" >"$work/write-basic"
printf 'Authorization: Bearer %s\n' "$write_key" >"$work/write-bearer"
printf 'Authorization: Bearer %s\n' "$read_key" >"$work/read-bearer"
: >"$work/no-auth"

# request METHOD PATH HEADER_FILE [JSON_BODY]: sets $status and $body.
request() {
  local args=(--silent --show-error --max-time 20 --output "$work/body" --write-out '%{http_code}'
    --request "$1" --header "@$work/$3")
  if [ $# -ge 4 ]; then args+=(--header 'Content-Type: application/json' --data-binary "$4"); fi
  status=$(curl "${args[@]}" "$api$2") || status=000
  body=$(cat "$work/body" 2>/dev/null || true)
}

# expect_success METHOD PATH JSON_BODY: the ingest routes answer 200 {"success":true}.
expect_success() {
  request "$1" "$2" write-basic "$3"
  if [ "$status" != 200 ] || ! jq -e '.success == true' <<<"$body" >/dev/null 2>&1; then
    die "$1 $2 answered $status $body (expected 200 {\"success\":true})"
  fi
  ok "$1 $2 → 200 {\"success\":true}"
}

echo "smoke test of $api (userId $user)"

expect_success POST /v1/identify "$(jq -cn --arg u "$user" --arg r "$run" \
  '{userId: $u, traits: {smoke: true, run: $r}}')"
expect_success POST /v1/track "$(jq -cn --arg u "$user" --arg r "$run" \
  '{userId: $u, event: "Smoke Test", properties: {smoke: true, run: $r}}')"

deadline=$((SECONDS + timeout))
while :; do
  request GET "/v1/users/$user" read-bearer
  if [ "$status" = 200 ] && jq -e --arg u "$user" --arg r "$run" \
    '.userId == $u and .traits.smoke == true and .traits.run == $r' <<<"$body" >/dev/null 2>&1; then
    break
  fi
  [ "$SECONDS" -lt "$deadline" ] \
    || die "GET /v1/users/$user did not show the traits within ${timeout}s; last answer: $status $body"
  sleep 2
done
ok "GET /v1/users/$user (read key) → 200 with the identified traits, after $((SECONDS + timeout - deadline))s"

# Both events stored, each once (the track may come from another queue message, later).
while :; do
  request GET "/v1/users/$user/events" read-bearer
  if [ "$status" = 200 ] && jq -e '[.data[] | .type + ":" + (.name // "")] | sort == ["identify:", "track:Smoke Test"]' \
    <<<"$body" >/dev/null 2>&1; then
    break
  fi
  [ "$SECONDS" -lt "$deadline" ] \
    || die "GET /v1/users/$user/events did not show the identify and the track within ${timeout}s; last answer: $status $body"
  sleep 2
done
ok "GET /v1/users/$user/events (read key) → the identify and the track, each once"

request GET /health no-auth
if [ "$status" != 200 ] || ! jq -e '.status == "ok"' <<<"$body" >/dev/null 2>&1; then
  die "GET /health answered $status $body (expected 200 {\"status\":\"ok\"})"
fi
ok 'GET /health → 200 {"status":"ok"}'

request GET "/v1/users/$user" write-bearer
[ "$status" = 403 ] || die "GET /v1/users/$user with the write key answered $status $body (expected 403)"
ok "GET /v1/users/$user (write key) → 403"

echo "smoke test passed"
