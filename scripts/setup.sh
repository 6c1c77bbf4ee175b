#!/usr/bin/env bash
# Installs the Debian bookworm packages countersign needs to build, test and run, when missing.
# Needs root (apt-get). Safe to run again.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libnats-dev nats-server
  libboost-dev libyaml-cpp-dev rapidjson-dev libssl-dev libcli11-dev
  googletest libgtest-dev libgmock-dev libbenchmark-dev
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "setup: missing packages: ${missing[*]}; run as root (or install them with apt-get)" >&2
  exit 1
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
