#!/usr/bin/env bash
# Builds the .deb (binary, man page, example config and policy, systemd unit, docs; its postinst
# adds the system user `countersign`), installs it on this machine and checks the installed
# binary: `countersign --version` and `countersign run --check` against the installed example
# config, also as the user the systemd unit runs it as, and `systemd-analyze verify` on the unit. Needs root for the install
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
  getent passwd countersign >/dev/null   # made by the postinst, for the systemd unit
  # The unit's ExecStartPre, as the user the unit runs it as: the installed files are readable.
  runuser -u countersign -- /usr/bin/countersign run --check --config /etc/countersign/countersign.yaml
  if command -v systemd-analyze >/dev/null; then systemd-analyze verify /usr/lib/systemd/system/countersign.service; fi
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
