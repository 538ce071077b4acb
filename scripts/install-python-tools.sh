#!/usr/bin/env bash
# install-python-tools.sh: a Python with the packages p2pstore's tests use
# to check the daemon against independent implementations:
#   - prometheus_client, whose OpenMetrics parser reads /metrics;
#   - selenium, which drives Chromium through the dashboard.
# They go into a virtualenv in the project cache, made once; later runs only
# check it. The LAST line of stdout is the path of its python:
#   PY=$(scripts/install-python-tools.sh | tail -1)
set -euo pipefail

# Pinned: a test failing must mean the daemon changed, not the parser.
PACKAGES=(prometheus_client==0.21.1 selenium==4.27.1)

CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/p2pstore"
# The key changes with the package list, so a new list makes a new venv.
KEY=$(printf '%s\n' "${PACKAGES[@]}" | sha256sum | cut -c1-12)
VENV="$CACHE_ROOT/python-$KEY"

log() { printf '%s\n' "$*" >&2; }
die() { log "install-python-tools: error: $*"; exit 1; }

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi

ready() { [[ -e $VENV/.complete ]]; }
if ready; then
  echo "$VENV/bin/python"
  exit 0
fi
command -v python3 >/dev/null || die "python3 is needed (Debian: apt-get install python3 python3-venv)"
mkdir -p "$CACHE_ROOT"
# Tests may call this at the same time: one builds, the others wait.
exec 9>"$CACHE_ROOT/.python-tools.lock"
flock 9
if ! ready; then
  log "install-python-tools: creating $VENV with ${PACKAGES[*]}"
  rm -rf "$VENV"
  python3 -m venv "$VENV" ||
    die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}" >&2 ||
    die "pip could not install ${PACKAGES[*]}"
  # Marked last: a run cut short is built again, not trusted.
  touch "$VENV/.complete"
fi
echo "$VENV/bin/python"
