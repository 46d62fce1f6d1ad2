#!/usr/bin/env bash
# What `cargo test --release` needs besides Rust: the real outside peers the
# process tests start. Idempotent: installs only what is missing. Run as root
# (or with sudo); CI runs it before the tests.
#
# * nats-server (Debian package): the firm-wide kill tests start a real
#   3-server NATS cluster on loopback ports.
# * tmux (Debian package): the dashboard test drives `killswitch watch` in a
#   real terminal.
# * curl (Debian package): the admin endpoint tests run the runbook's
#   `curl -X POST .../api/killswitch/activate` as written.
# * python3-prometheus-client (Debian package): an independent parser of the
#   endpoint's /metrics (the tests use whichever python3 has it).
# * QuickFIX for Python (binary wheel quickfix-ssl): an independent FIX 4.4
#   engine that the wire tests log on to our simulated venue with.
set -euo pipefail

missing=()
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
command -v curl >/dev/null 2>&1 || missing+=(curl)
prom='import prometheus_client.openmetrics.parser'
python3 -c "$prom" >/dev/null 2>&1 || /usr/bin/python3 -c "$prom" >/dev/null 2>&1 \
    || missing+=(python3-prometheus-client)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

if ! python3 -c 'import quickfix' >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check --only-binary=:all: \
        quickfix-ssl==1.15.1.post4
fi

echo "test dependencies present: nats-server $( (/usr/sbin/nats-server --version 2>/dev/null || nats-server --version) | head -1), $(tmux -V), $(curl --version | head -1 | cut -d' ' -f1-2), prometheus_client, quickfix $(python3 -c 'import quickfix; print("ok")')"
