#!/usr/bin/env bash
# Configures and builds countersign into build/ (Release with debug info).
#   scripts/build.sh              everything (binary, tests, benchmarks)
#   scripts/build.sh countersign  only the binary
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
if [ $# -gt 0 ]; then
  cmake --build build -j"$(nproc)" --target "$@"
else
  cmake --build build -j"$(nproc)"
fi
