#!/usr/bin/env bash
# Installs the Debian bookworm packages (and the test suite's locked Node packages) countersign
# needs to build, test and run, when missing.
# Needs root (apt-get). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake pkg-config
  libnats-dev nats-server
  libboost-dev libyaml-cpp-dev rapidjson-dev libssl-dev libcli11-dev
  googletest libgtest-dev libgmock-dev libbenchmark-dev
  libre2-dev libsodium-dev ccache
  clang-16 libclang-rt-16-dev  # the fuzz stage (scripts/fuzz.sh): clang with libFuzzer
  nodejs npm chromium
  openssl
  python3  # the tests run the Python webhook receiver of docs/webhooks.md as written
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# A machine that has Node from another source (`node` on PATH, no Debian package) keeps it.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  kept=()
  for p in "${missing[@]}"; do
    case "$p" in nodejs | npm) ;; *) kept+=("$p") ;; esac
  done
  missing=("${kept[@]}")
fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all packages present"
else
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing packages: ${missing[*]}; run as root (or install them with apt-get)" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The Node packages the tests use (tests/node/package.json, versions locked): clients we did
# not write, to test countersign against.
if [ ! -d tests/node/node_modules ] || [ tests/node/package-lock.json -nt tests/node/node_modules ]; then
  echo "setup: installing the test suite's Node packages"
  (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
fi
