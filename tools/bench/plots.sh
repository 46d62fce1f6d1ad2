#!/usr/bin/env bash
# Percentile plots for BENCHMARKS.md (issue 16 item 7): runs the latency
# tools with --hgrm (HdrHistogram percentile distributions) and draws each
# path beside its baseline with ks-plot (SVG, the plotters crate).
#
#   bash tools/bench/plots.sh [OUT_DIR] [ROUNDS]
#
# OUT_DIR defaults to docs/plots (the .svg files BENCHMARKS.md shows, and
# the .hgrm data under OUT_DIR/data); ROUNDS (default 2000) is the number
# of trips per ks-drain-latency setting. Takes a few minutes; measure on a
# quiet machine, and read BENCHMARKS.md for the load each figure had.
# The ks-latency emergency runs are 20 drills of ~6 s each.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-docs/plots}
rounds=${2:-2000}
data="$out/data"
cargo build --release -p killswitch-tools \
    --bin ks-latency --bin ks-drain-latency --bin ks-plot --bin killswitch
bin=target/release
mkdir -p "$data"
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$data/load.txt"

# Trip -> seen by another process, beside a bare cache-line transfer.
"$bin/ks-latency" cross-process --iterations 20000 --hgrm "$data/cross-process" \
    | tee "$data/cross-process.txt"

# Trip -> first cancel and -> all orders confirmed (10 orders, mass cancel):
# busy-spinning drain and gateway (the default of this tool), the library's
# sleeping back-off, and that under SCHED_FIFO (left out where refused).
drain=(--rounds "$rounds" --orders 10 --drain-core 1 --gateway-core 0)
"$bin/ks-drain-latency" "${drain[@]}" --hgrm "$data/drain-busy" | tee "$data/drain-busy.txt"
"$bin/ks-drain-latency" "${drain[@]}" --sleeping-backoff --hgrm "$data/drain-sleeping" \
    | tee "$data/drain-sleeping.txt"
fifo=()
if "$bin/ks-drain-latency" "${drain[@]}" --fifo 10 --hgrm "$data/drain-fifo" \
    | tee "$data/drain-fifo.txt"; then
    fifo=("SCHED_FIFO 10, sleeping back-off=$data/drain-fifo/first-cancel-enqueued.hgrm")
    fifo_all=("SCHED_FIFO 10, sleeping back-off=$data/drain-fifo/all-confirmed.hgrm")
else
    echo "SCHED_FIFO refused on this host: its series is left out of the plots"
    fifo_all=()
fi

# Emergency end to end on the reference engine, beside the runbook's SIGTERM:
# the drill's in-process simulated venues (the issue-6 target), then the same
# over FIX to ks-venue processes (the drill's default).
"$bin/ks-latency" emergency --runs 5 --venues in-process --hgrm "$data/emergency" \
    | tee "$data/emergency.txt"
"$bin/ks-latency" emergency --runs 5 --venues wire --hgrm "$data/emergency-wire" \
    | tee "$data/emergency-wire.txt"

p="$bin/ks-plot"
"$p" "$out/trip-seen.svg" "Trip -> seen by a process spinning on the state word" \
    "trip_global -> seen=$data/cross-process/trip-seen.hgrm" \
    "baseline: bare cache-line transfer=$data/cross-process/bare-line-store.hgrm"
"$p" "$out/trip-first-cancel.svg" "Trip -> first cancel enqueued (10 open orders)" \
    "busy spin=$data/drain-busy/first-cancel-enqueued.hgrm" \
    "sleeping back-off=$data/drain-sleeping/first-cancel-enqueued.hgrm" \
    ${fifo[@]+"${fifo[@]}"} \
    "baseline: bare cache-line transfer=$data/cross-process/bare-line-store.hgrm"
"$p" "$out/trip-all-confirmed.svg" "Trip -> all 10 orders confirmed cancelled" \
    "busy spin=$data/drain-busy/all-confirmed.hgrm" \
    "sleeping back-off=$data/drain-sleeping/all-confirmed.hgrm" \
    ${fifo_all[@]+"${fifo_all[@]}"} \
    "baseline: trip -> first cancel on the wire (busy)=$data/drain-busy/first-cancel-wire.hgrm"
"$p" "$out/emergency.svg" "Emergency end to end (reference engine, in-process venues, ~12,000 open orders)" \
    "killswitch emergency: trip -> drain done=$data/emergency/cli-drain-done.hgrm" \
    "baseline: SIGTERM (runbook) -> drain done=$data/emergency/sigterm-drain-done.hgrm"
"$p" "$out/emergency-wire.svg" "Emergency end to end over FIX (ks-venue processes, ~12,000 open orders)" \
    "killswitch emergency: trip -> drain done=$data/emergency-wire/cli-drain-done.hgrm" \
    "baseline: SIGTERM (runbook) -> drain done=$data/emergency-wire/sigterm-drain-done.hgrm"
echo "plots written to $out"
