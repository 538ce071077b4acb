#!/usr/bin/env bash
# install-bitcoind.sh: finds or builds a bitcoind for p2pstore's regtest
# tests and local networks.
#
# Order of preference:
#   1. $BITCOIND_EXE, when set (it must be an executable file);
#   2. a `bitcoind` on PATH;
#   3. a build cached earlier under
#      ${XDG_CACHE_HOME:-$HOME/.cache}/p2pstore/bitcoind-<version>/bin/;
#   4. a fresh build of bitcoind and bitcoin-cli from the Bitcoin Core source
#      that the crates.io package libbitcoinkernel-sys ships in its bitcoin/
#      folder (fetched with cargo), which then goes into that cache.
#      This takes ~10 minutes on 2 cores; every later run only checks the cache.
#
# The LAST line of stdout is the absolute path of the bitcoind to use:
#   BITCOIND=$(scripts/install-bitcoind.sh | tail -1)
# Everything else (progress, logs, build output) goes to stderr. In the cached
# case bitcoin-cli sits next to bitcoind.
set -euo pipefail

# The crate whose bitcoin/ folder is the source we build (0.4.1 carries
# Bitcoin Core 31.99). Changing it changes the cache key, so a new build.
CRATE=libbitcoinkernel-sys
CRATE_VERSION=0.4.1
VERSION="$CRATE-$CRATE_VERSION"

APT_PACKAGES=(build-essential cmake pkg-config libboost-dev libevent-dev)

CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/p2pstore"
CACHE_DIR="$CACHE_ROOT/bitcoind-$VERSION"
WORK_DIR="$CACHE_ROOT/.work-bitcoind-$VERSION"

log() { printf '%s\n' "$*" >&2; }
die() { log "install-bitcoind: error: $*"; exit 1; }

usage() {
  cat <<EOF
Usage: scripts/install-bitcoind.sh [--help]

Prints (as the last line of stdout) the absolute path of a bitcoind to use:
\$BITCOIND_EXE if set, else a bitcoind on PATH, else one built from Bitcoin
Core's source (from the crates.io package $CRATE $CRATE_VERSION) and cached in
  $CACHE_DIR/bin/
together with bitcoin-cli. The first build takes ~10 minutes on 2 cores; later
runs take seconds. Missing Debian build packages are installed when run as
root; otherwise the apt-get command to run is printed and the script fails.
All other output goes to stderr.

Example:
  BITCOIND=\$(scripts/install-bitcoind.sh | tail -1)
EOF
}

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; die "unknown argument: $1" ;;
esac

# abs_path PATH: PATH made absolute (without resolving symlinks).
abs_path() {
  case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s\n' "$PWD/${1#./}" ;;
  esac
}

# bitcoind_version BIN: the first line of `BIN -version`; fails if it won't run.
bitcoind_version() {
  local out
  # A throwaway datadir: even -version makes bitcoind create ~/.bitcoin.
  local scratch
  scratch=$(mktemp -d)
  out=$("$1" -datadir="$scratch" -version 2>/dev/null) || { rm -rf "$scratch"; return 1; }
  rm -rf "$scratch"
  printf '%s\n' "${out%%$'\n'*}"
}

# use_bitcoind BIN SOURCE: reports BIN and prints it as the last stdout line.
use_bitcoind() {
  local bin=$1 source=$2 version
  version=$(bitcoind_version "$bin") || die "$bin ($source) does not run: '$bin -version' failed"
  log "using $source bitcoind: $bin"
  log "version: $version"
  printf '%s\n' "$bin"
  exit 0
}

# 1. $BITCOIND_EXE.
if [[ -n ${BITCOIND_EXE:-} ]]; then
  [[ -f $BITCOIND_EXE && -x $BITCOIND_EXE ]] || die "BITCOIND_EXE=$BITCOIND_EXE is not an executable file"
  use_bitcoind "$(abs_path "$BITCOIND_EXE")" "\$BITCOIND_EXE"
fi

# 2. bitcoind on PATH.
if path_bin=$(command -v bitcoind 2>/dev/null) && [[ -n $path_bin ]]; then
  use_bitcoind "$(abs_path "$path_bin")" "PATH"
fi

# 3. The cache.
cached_ok() {
  [[ -x $CACHE_DIR/bin/bitcoind && -x $CACHE_DIR/bin/bitcoin-cli ]] &&
    bitcoind_version "$CACHE_DIR/bin/bitcoind" >/dev/null
}

# missing_packages: prints the Debian packages of APT_PACKAGES not installed.
missing_packages() {
  local pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
      printf '%s\n' "$pkg"
    fi
  done
}

ensure_packages() {
  command -v dpkg-query >/dev/null 2>&1 ||
    die "no dpkg-query: not a Debian-like system; install a C++20 compiler, make, cmake, pkg-config, Boost headers and libevent by hand, or set BITCOIND_EXE"
  local missing
  mapfile -t missing < <(missing_packages)
  ((${#missing[@]} == 0)) && return 0
  if [[ $(id -u) -ne 0 ]]; then
    log "install-bitcoind: missing Debian packages: ${missing[*]}"
    log "run as root:"
    log "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
    exit 1
  fi
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update >&2 || die "apt-get update failed"
  apt-get install -y --no-install-recommends "${missing[@]}" >&2 || die "apt-get install failed"
}

if [[ -e $CACHE_DIR/bin/bitcoind ]] && ! cached_ok; then
  # E.g. the libevent runtime library was removed: reinstalling the packages
  # may be all it takes.
  log "cached bitcoind at $CACHE_DIR/bin does not run; checking Debian packages"
  ensure_packages
fi
if cached_ok; then
  use_bitcoind "$CACHE_DIR/bin/bitcoind" "cached"
fi

# 4. Build. One build at a time per cache dir: a second run waits for the
# first and then finds its result in the cache.
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.bitcoind-$VERSION.lock"
if command -v flock >/dev/null 2>&1; then
  if ! flock -n 9; then
    log "another install-bitcoind.sh is building; waiting for it..."
    flock 9
  fi
  if cached_ok; then
    use_bitcoind "$CACHE_DIR/bin/bitcoind" "cached"
  fi
fi

log "no bitcoind found (no \$BITCOIND_EXE, none on PATH, none cached): building one"
log "from Bitcoin Core's source in the crate $CRATE $CRATE_VERSION (takes ~10 minutes on 2 cores)"
start=$SECONDS

ensure_packages
command -v cargo >/dev/null 2>&1 || die "cargo not found: it is needed to fetch the $CRATE crate"

# The .crate file, from cargo's registry cache (fetched through a throwaway
# manifest unless it is there already).
CARGO_DIR="${CARGO_HOME:-$HOME/.cargo}"
find_crate_file() {
  local f
  for f in "$CARGO_DIR"/registry/cache/*/"$VERSION.crate"; do
    [[ -f $f ]] && { printf '%s\n' "$f"; return 0; }
  done
  return 1
}

mkdir -p "$WORK_DIR"
if ! crate_file=$(find_crate_file); then
  log "fetching $CRATE $CRATE_VERSION with cargo..."
  manifest_dir=$(mktemp -d "$WORK_DIR/fetch.XXXXXX")
  mkdir -p "$manifest_dir/src"
  : >"$manifest_dir/src/lib.rs"
  cat >"$manifest_dir/Cargo.toml" <<EOF
[package]
name = "p2pstore-fetch-bitcoin-source"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
$CRATE = "=$CRATE_VERSION"

[workspace]
EOF
  (cd "$manifest_dir" && cargo fetch >&2) || die "cargo fetch of $CRATE $CRATE_VERSION failed"
  rm -rf "$manifest_dir"
  crate_file=$(find_crate_file) || die "cargo fetch ran but $CARGO_DIR/registry/cache/*/$VERSION.crate is not there"
fi
log "source: $crate_file"

# Unpack (a fresh copy unless an earlier, interrupted run left a complete one).
SRC_DIR="$WORK_DIR/$VERSION/bitcoin"
if [[ ! -f $WORK_DIR/.unpacked ]]; then
  rm -rf "${WORK_DIR:?}/$VERSION" "$WORK_DIR/build"
  tar -xzf "$crate_file" -C "$WORK_DIR" || die "could not unpack $crate_file"
  [[ -f $SRC_DIR/CMakeLists.txt ]] || die "$crate_file has no bitcoin/CMakeLists.txt"
  touch "$WORK_DIR/.unpacked"
fi

# Configure and build only the two targets. The build dir is reused if an
# earlier run was interrupted.
BUILD_DIR="$WORK_DIR/build"
log "configuring (cmake)..."
cmake -S "$SRC_DIR" -B "$BUILD_DIR" \
  -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_DAEMON=ON -DBUILD_CLI=ON \
  -DENABLE_WALLET=OFF -DENABLE_IPC=OFF -DWITH_ZMQ=OFF \
  -DBUILD_TESTS=OFF -DBUILD_BENCH=OFF -DBUILD_FUZZ_BINARY=OFF \
  -DBUILD_KERNEL_LIB=OFF -DBUILD_TX=OFF -DBUILD_UTIL=OFF \
  -DBUILD_WALLET_TOOL=OFF -DBUILD_BITCOIN_BIN=OFF \
  -DWITH_EMBEDDED_ASMAP=OFF >&2 || die "cmake configure failed (work dir: $WORK_DIR)"

jobs=$(nproc 2>/dev/null || echo 2)
log "building bitcoind and bitcoin-cli with $jobs jobs..."
cmake --build "$BUILD_DIR" --target bitcoind bitcoin-cli -j"$jobs" >&2 ||
  die "build failed (work dir kept for a faster retry: $WORK_DIR)"

built_bitcoind="$BUILD_DIR/bin/bitcoind"
built_cli="$BUILD_DIR/bin/bitcoin-cli"
[[ -x $built_bitcoind && -x $built_cli ]] || die "build finished but $BUILD_DIR/bin has no bitcoind and bitcoin-cli"
bitcoind_version "$built_bitcoind" >/dev/null || die "the built bitcoind does not run"

# Stage next to the final location (same filesystem), then rename the whole
# directory into place: a half-finished build never looks like a cached one.
stage=$(mktemp -d "$CACHE_ROOT/.stage-bitcoind-$VERSION.XXXXXX")
mkdir -p "$stage/bin"
cp "$built_bitcoind" "$built_cli" "$stage/bin/"
strip "$stage/bin/bitcoind" "$stage/bin/bitcoin-cli" 2>/dev/null || true
chmod 755 "$stage" "$stage/bin" "$stage/bin/bitcoind" "$stage/bin/bitcoin-cli"
rm -rf "$CACHE_DIR" # only a broken leftover can be here: cached_ok failed above
mv "$stage" "$CACHE_DIR"
rm -rf "$WORK_DIR"

log "built in $((SECONDS - start)) s; cached in $CACHE_DIR/bin"
use_bitcoind "$CACHE_DIR/bin/bitcoind" "freshly built"
