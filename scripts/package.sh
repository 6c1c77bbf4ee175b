#!/usr/bin/env bash
# Builds the .deb (binary, man page, example config and policy, systemd unit, docs), installs it
# on this machine and checks the installed binary: `countersign --version` and
# `countersign run --check` against the installed example config. Needs root for the install
# (CI runs as root); without root it unpacks the package into a scratch folder instead.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr >/dev/null
cmake --build build -j"$(nproc)" --target countersign countersign_man
rm -f build/countersign_*.deb
(cd build && cpack -G DEB >/dev/null)
deb=$(ls build/countersign_*.deb)
echo "package: $deb"
dpkg-deb --contents "$deb" | awk '{print "  " $6}'
if [ "$(id -u)" -eq 0 ]; then
  apt-get install -y -q --reinstall "./$deb" >/dev/null
  bin=/usr/bin/countersign
  config=/etc/countersign/countersign.yaml
  if command -v man >/dev/null; then man -w countersign >/dev/null; fi
else
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  dpkg-deb -x "$deb" "$root"
  bin=$root/usr/bin/countersign
  config=$root/etc/countersign/countersign.yaml
  echo "package: not root, unpacked into $root instead of installing"
fi
"$bin" --version
"$bin" run --check --config "$config"
echo "package: installed and checked"
