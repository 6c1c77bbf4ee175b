#!/usr/bin/env bash
# Configures and builds countersign into build/ (Release with debug info).
#   scripts/build.sh              everything (binary, tests, benchmarks)
#   scripts/build.sh countersign  only the binary
set -euo pipefail
cd "$(dirname "$0")/.."
# Warnings are errors here (CI and the README use this script); a plain cmake build keeps them
# warnings.
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOUNTERSIGN_WERROR=ON >/dev/null
if [ $# -gt 0 ]; then
  cmake --build build -j"$(nproc)" --target "$@"
else
  cmake --build build -j"$(nproc)"
fi
