#!/usr/bin/env bash
# Installs what is missing, builds, and runs countersign with the default config
# (embedded nats-server on 127.0.0.1:4222, the example policy). Extra args go to `run`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh countersign
exec build/src/countersign run --config config/countersign.yaml "$@"
