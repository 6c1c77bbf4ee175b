#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (unit, fuzz corpora, integration).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
bash scripts/package.sh  # the .deb: built, installed, `--version` and `run --check` on the installed config
cd build
ctest --output-on-failure --timeout 600 -j2 "$@"
