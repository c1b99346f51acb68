# What each route's filters cost a request, beside a plain route, in one run.
# Sourced by bench/guards and bench/shapers, which set before sourcing:
#
#   ROUTES           entries "name|path|filters (YAML flow list)|header (wrk -H)|body file"
#                    (the body file is optional: with one, the request is a
#                    POST of it as JSON); a route whose name begins with
#                    "plain" is the baseline of the routes after it.
#   MANIFEST_EXTRA   YAML added after `upstreams:` (plugins, consumers, redis)
#   UPSTREAM_EXTRA   nginx `location` blocks added to the upstream's server
#   NEEDS_REDIS      1 to start a redis-server ($REDIS_PORT)
#   setup()          optional: run once everything listens
#
# and get the free ports $UPSTREAM, $WEIR_PORT, $REDIS_PORT and the scratch
# directory $WORK from `prepare` (call it first).
#
# One Weir (one worker, pinned to cpu 1) serves every route. wrk and the
# upstream (nginx) share cpu 0. With the proxy's core saturated, a route's
# cost per request is 1/throughput, so its filters cost
#   (1 / its requests/s − 1 / its baseline's requests/s) × 10^6 µs.
# Rounds alternate the routes; the median of each route's rounds is used.

ROUNDS=${ROUNDS:-3}
SECONDS_PER_ROUND=${SECONDS_PER_ROUND:-5}
CONNECTIONS=${CONNECTIONS:-32}

need() { command -v "$1" >/dev/null 2>&1; }

prepare() {
  if ! need nginx || ! need wrk || ! need redis-server; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk redis-server >/dev/null
  fi
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
  echo "== building weir (release; the built-ins are embedded)"
  cargo build --release -q -p weir
  WEIR=$PWD/target/release/weir
  WORK=$(mktemp -d)
  PIDS=()
  trap cleanup EXIT
  UPSTREAM=$(free_port); WEIR_PORT=$(free_port); REDIS_PORT=$(free_port)
}

cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() { # cpu, command...
  local cpu=$1; shift
  taskset -c "$cpu" "$@" >"$WORK/$(basename "$1").$RANDOM.log" 2>&1 &
  PIDS+=($!)
}

# A wrk script that POSTs file $1 with header $2.
post_script() {
  python3 - "$1" "$2" > "$WORK/post.$RANDOM.lua" <<'PY'
import json, sys
body = open(sys.argv[1]).read()
name, value = (p.strip() for p in sys.argv[2].split(":", 1))
print(f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n'
      f'wrk.headers["content-type"] = "application/json"\nwrk.headers[{json.dumps(name)}] = {json.dumps(value)}')
PY
  ls -t "$WORK"/post.*.lua | head -1
}

run_routes() {
  cat > "$WORK/upstream.conf" <<EOF
worker_processes 1; daemon off; error_log /dev/null crit; pid $WORK/upstream.pid;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$UPSTREAM; location / { return 200 "hello from upstream\n"; }
    ${UPSTREAM_EXTRA:-} } }
EOF
  {
    cat <<EOF
apiVersion: weir/v1
listeners: [{ name: main, address: 127.0.0.1:$WEIR_PORT, limits: { max_connections: 100000 } }]
upstreams: [{ name: up, targets: [127.0.0.1:$UPSTREAM] }]
${MANIFEST_EXTRA:-}
routes:
EOF
    local r name path filters
    for r in "${ROUTES[@]}"; do
      IFS='|' read -r name path filters _ <<<"$r"
      echo "  - { name: \"$name\", match: { path: { prefix: $path } }, upstream: up, filters: $filters }"
    done
  } > "$WORK/weir.yaml"

  "$WEIR" validate "$WORK/weir.yaml" >/dev/null
  start 0 "$NGINX" -c "$WORK/upstream.conf"
  if [ "${NEEDS_REDIS:-0}" = 1 ]; then
    start 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no
    for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  export WEIR_LOG=warn WEIR_CACHE_DIR=none
  start 1 "$WEIR" run --workers 1 --config "$WORK/weir.yaml"
  if declare -F setup >/dev/null; then setup; fi

  local header body args
  for r in "${ROUTES[@]}"; do
    IFS='|' read -r name path _ header body <<<"$r"
    args=(-H "$header")
    if [ -n "$body" ]; then args+=(-H "content-type: application/json" --data-binary "@$body"); fi
    for _ in $(seq 100); do curl -fsS -o /dev/null "${args[@]}" "http://127.0.0.1:$WEIR_PORT$path" && break; sleep 0.2; done
    curl -fsS -o /dev/null "${args[@]}" "http://127.0.0.1:$WEIR_PORT$path" || { echo "route $name does not pass its request"; exit 1; }
  done

  echo "== $ROUNDS rounds × ${SECONDS_PER_ROUND}s per route, $CONNECTIONS connections, one Weir worker on cpu 1"
  local results=$WORK/results.txt out round wrk_args
  for round in $(seq "$ROUNDS"); do
    for r in "${ROUTES[@]}"; do
      IFS='|' read -r name path _ header body <<<"$r"
      if [ -n "$body" ]; then wrk_args=(-s "$(post_script "$body" "$header")"); else wrk_args=(-H "$header"); fi
      out=$(taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_ROUND}s" --latency "${wrk_args[@]}" "http://127.0.0.1:$WEIR_PORT$path")
      printf '%s\t%s\n%s\n' "$name" "$round" "$out" >> "$results"
      echo "   round $round $name: $(echo "$out" | grep 'Requests/sec')"
    done
  done

  python3 - "$results" <<'PY'
import re, statistics, sys
text = open(sys.argv[1]).read()
runs = {}
for block in re.split(r"\n(?=[^\n]+\t\d+\n)", text.strip()):
    head, body = block.split("\n", 1)
    name = head.split("\t")[0]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", body).group(1))
    m = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", body)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", body)
    runs.setdefault(name, []).append((rps, p99, int(bad.group(1)) if bad else 0))
print("\n| route | requests/s (median) | p99 ms | cost per request | refused |\n|---|---:|---:|---:|---:|")
base = None
for name, rs in runs.items():  # in ROUTES order: each "plain…" route is the baseline of those after it
    rps = statistics.median(r[0] for r in rs)
    p99 = statistics.median(r[1] for r in rs)
    if name.startswith("plain"):
        base, cost = rps, "—"
    else:
        cost = f"{(1 / rps - 1 / base) * 1e6:.1f} µs"
    print(f"| {name} | {rps:,.0f} | {p99:.2f} | {cost} | {sum(r[2] for r in rs)} |")
PY
}
