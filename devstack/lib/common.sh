# Shared settings of devstack/up and devstack/down. Every port can be overridden from the
# environment; everything lives under target/devstack/ of the repository.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
state="$root/target/devstack"
venv="$state/venv"
run="$state/run"
logs="$state/logs"

pg_port=${DEVSTACK_PG_PORT:-54329}
moto_port=${DEVSTACK_MOTO_PORT:-45660}
outbox_port=${DEVSTACK_OUTBOX_PORT:-45661}
emulator_port=${DEVSTACK_EMULATOR_PORT:-45670}
smtp_port=${DEVSTACK_SMTP_PORT:-45025}
webhook_port=${DEVSTACK_WEBHOOK_PORT:-45443}
orders_rows=${DEVSTACK_ORDERS_ROWS:-100000}
slices=${DEVSTACK_SLICES:-4}
profile=${DEVSTACK_PROFILE:-dev}

say() { printf 'devstack: %s\n' "$*"; }
die() { printf 'devstack: error: %s\n' "$*" >&2; exit 1; }

# The PostgreSQL server binaries of this machine (Debian installs them outside PATH).
pg_bin() {
  local tool=$1 dir
  if command -v "$tool" >/dev/null 2>&1; then command -v "$tool"; return; fi
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$dir/$tool" ] && { echo "$dir/$tool"; return; }
  done
  return 1
}

# Runs a command as the PostgreSQL owner: PostgreSQL refuses to run as root.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2 pidfile=$3 i
  for i in $(seq 1 300); do
    port_open "$port" && return 0
    if [ -n "$pidfile" ] && ! kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null; then
      die "$name exited during start-up; its log ($logs/$name.log) ends with:
$(tail -n 20 "$logs/$name.log" 2>/dev/null)"
    fi
    sleep 0.2
  done
  die "$name did not open port $port within 60 s; see $logs/$name.log"
}

# Where the PostgreSQL cluster lives: target/devstack/pg, unless the postgres user cannot reach
# it (a checkout under /root, say); then a directory under /tmp named after the checkout.
pg_home() {
  if [ -f "$state/pg-home" ]; then cat "$state/pg-home"; return; fi
  local dir="$state/pg"
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
    if ! runuser -u postgres -- test -w "$dir"; then
      dir="/tmp/devstack-pg-$(printf '%s' "$root" | sha256sum | cut -c1-12)"
      mkdir -p "$dir" && chown postgres: "$dir" && chmod 700 "$dir"
    fi
  fi
  echo "$dir" | tee "$state/pg-home"
}

alive() { [ -f "$run/$1.pid" ] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null; }
