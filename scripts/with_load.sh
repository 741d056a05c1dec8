#!/bin/sh
# Run a command with the CPU kept busy beside it:  scripts/with_load.sh CMD [ARGS...]
# stress-ng spins LOAD_CPUS workers (default 2: both cores of the reference machine) for as long as the
# command runs and is stopped afterwards, whatever its outcome; the command's exit status is returned.
# A test that passes on an idle machine and fails here has found a race (a Raspberry Pi is slower
# still): fix its cause, never widen a timeout to hide it. `make test-loaded` runs the suite so.
set -eu
cd "$(dirname "$0")/.."

if ! command -v stress-ng >/dev/null 2>&1; then
    echo "with_load: stress-ng is missing; scripts/bootstrap.sh --loaded installs it" >&2
    exit 2
fi
# --timeout: a safety net should this script itself be killed before it can stop stress-ng.
stress-ng --cpu "${LOAD_CPUS:-2}" --timeout 3h --quiet &
load=$!
trap 'kill "$load" 2>/dev/null || true; wait "$load" 2>/dev/null || true' EXIT INT TERM
echo "with_load: stress-ng --cpu ${LOAD_CPUS:-2} running (pid $load)" >&2
status=0
"$@" || status=$?
exit "$status"
