#!/usr/bin/env bash
# install-test-tools.sh: the system tools p2pstore's tests run besides
# bitcoind (scripts/install-bitcoind.sh) and Python's packages
# (scripts/install-python-tools.sh):
#   - systemd-analyze (Debian's systemd), which verifies
#     contrib/systemd/p2pstored.service;
#   - Chromium and ChromeDriver (Debian's chromium, chromium-driver), in
#     which the dashboard test opens the dashboard headless.
# Installs what is missing with apt-get when run as root; otherwise prints
# the command and fails. Nothing is done when all are there.
set -euo pipefail

# command → the Debian package that has it.
declare -A PACKAGE_OF=([systemd-analyze]=systemd [chromium]=chromium [chromedriver]=chromium-driver)

log() { printf '%s\n' "$*" >&2; }
die() { log "install-test-tools: error: $*"; exit 1; }

missing=()
for cmd in "${!PACKAGE_OF[@]}"; do
  command -v "$cmd" >/dev/null || missing+=("${PACKAGE_OF[$cmd]}")
done
((${#missing[@]} == 0)) && exit 0
if ((EUID != 0)); then
  log "install-test-tools: missing ${missing[*]}; as root run:"
  log "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
  exit 1
fi
log "install-test-tools: installing ${missing[*]}"
apt-get update >&2 || die "apt-get update failed"
apt-get install -y --no-install-recommends "${missing[@]}" >&2 || die "apt-get install failed"
