#!/usr/bin/env bash
# Installs what `python -m benchmarks` needs beyond `pip install -e '.[test]'`:
#   * rsyslog (Debian) for the C-shipper comparison, run as a private instance;
#   * py-spy / pyinstrument for profiles, zlib-ng / isal for the "floor" case.
# Idempotent; safe to rerun. Needs root for apt-get (skipped with a note otherwise).
set -euo pipefail

PY="${PYTHON:-python3}"

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # Captured first: `grep -q` exits at the first match, and under pipefail the
    # SIGPIPE it leaves apt-cache with would read as "no candidate".
    policy="$(apt-cache policy rsyslog)"
    if grep -q 'Candidate: [0-9]' <<<"$policy"; then
        # --no-install-recommends: logrotate etc. are not needed; we never start the
        # system service, only private `rsyslogd -n -f <conf>` instances.
        apt-get install -y -q --no-install-recommends rsyslog
    else
        echo "setup.sh: no rsyslog candidate in apt; the rsyslog cases will be skipped" >&2
    fi
else
    echo "setup.sh: not root or no apt-get; install rsyslog yourself (or use --skip-rsyslog)" >&2
fi

"$PY" -m pip install -q py-spy pyinstrument zlib-ng isal
echo "setup.sh: done"
