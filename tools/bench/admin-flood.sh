#!/usr/bin/env bash
# Kill path and drain latency with the admin endpoint idle, then flooded.
#
#   bash tools/bench/admin-flood.sh [rounds]        (after cargo build --release)
#
# For each measurement: once with nobody talking to `killswitch serve`, once
# while three `wrk` clients (Debian package wrk) hammer it on loopback:
# GET /metrics, GET /api/status, and POST /api/killswitch/reset with a wrong
# token (401 + rate-limited audit writes): monitoring scrapes plus someone
# guessing tokens. The endpoint serves the very control block the benchmark
# trips, so it reads the same state word and drain lines and writes the same
# audit ring. Activations are not in the flood: they would trip the block
# the benchmark is measuring.
#
# Measurements (both existing latency tools, now pointed at a named block):
# * ks-drain-latency: trip -> first cancel enqueued / on the wire / all
#   confirmed (gateway and drain threads in this process);
# * ks-latency cross-process: trip -> seen by another process spinning on
#   the state word (what every gate reads).
# Loopback only, bounded: every client stops when the measurement ends.
set -euo pipefail
cd "$(dirname "$0")/../.."
B=target/release
ROUNDS=${1:-2000}
DIR=$(mktemp -d /dev/shm/ks-flood.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$DIR"' EXIT
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 2; }
cat > "$DIR/reset.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"confirm":true,"generation":1,"reason":"flood"}'
wrk.headers["Authorization"] = "Bearer not-a-valid-token"
wrk.headers["Content-Type"] = "application/json"
LUA

served() { # requests answered so far, from the endpoint's own counters
    { curl -s --max-time 10 "http://$1/metrics" || true; } | awk '/^killswitch_http_requests_(ok|client_error)_total /{s+=$2} END{print s+0}'
}

measure() { # name, block dir, block name, command...
    local label=$1 dir=$2 name=$3; shift 3
    flood_once "$label [serve --nice 0, clients nice 0]" "$dir" "$name" "--nice 0" "" "$@"
    echo
    flood_once "$label [serve at its default nice 19, clients nice 0]" "$dir" "$name" "" "" "$@"
    echo
    flood_once "$label [serve at its default nice 19, clients nice 19]" "$dir" "$name" "" "nice -n 19" "$@"
}

flood_once() { # name, block dir, block name, serve flags, prefix for wrk, command...
    local label=$1 dir=$2 name=$3 serve_flags=$4 nice=$5; shift 5
    echo "=== $label: idle endpoint"
    "$B/killswitch" --dir "$dir" --name "$name" init --exist-ok >/dev/null
    "$B/killswitch" --dir "$dir" --name "$name" serve $serve_flags --listen 127.0.0.1:0 > "$DIR/serve.out" 2>/dev/null &
    local serve=$!
    for _ in $(seq 100); do grep -q http:// "$DIR/serve.out" 2>/dev/null && break; sleep 0.05; done
    local addr
    addr=$(grep -o '127.0.0.1:[0-9]*' "$DIR/serve.out" | head -1)
    "$@"
    echo "=== $label: flooded endpoint (http://$addr)"
    $nice wrk -t1 -c8 -d600s "http://$addr/metrics" >/dev/null 2>&1 &
    local w1=$!
    $nice wrk -t1 -c8 -d600s "http://$addr/api/status" >/dev/null 2>&1 &
    local w2=$!
    $nice wrk -t1 -c8 -d600s -s "$DIR/reset.lua" "http://$addr/api/killswitch/reset" >/dev/null 2>&1 &
    local w3=$!
    sleep 1
    local n0 t0
    n0=$(served "$addr"); t0=$(date +%s.%N)
    "$@"
    local n1 t1
    n1=$(served "$addr"); t1=$(date +%s.%N)
    kill $w1 $w2 $w3 2>/dev/null || true
    wait $w1 $w2 $w3 2>/dev/null || true
    [ "$n1" -gt "$n0" ] && echo "endpoint answered $((n1 - n0)) requests during the measurement: $(awk -v n="$((n1 - n0))" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", n / (b - a)}') requests/s" || echo "endpoint too busy to answer the closing /metrics scrape"
    kill $serve; wait $serve 2>/dev/null || true
}

NAME=flood-$$
measure "ks-drain-latency --rounds $ROUNDS --orders 10" /dev/shm "$NAME" \
    "$B/ks-drain-latency" --rounds "$ROUNDS" --orders 10 --drain-core 1 --gateway-core 0 --name "$NAME"
rm -f "/dev/shm/killswitch.$NAME"
measure "ks-latency cross-process --iterations $((ROUNDS * 5))" "$DIR" lat \
    "$B/ks-latency" cross-process --iterations $((ROUNDS * 5)) --dir "$DIR"
