#!/usr/bin/env bash
# Sanitizer stage of CI: any finding fails.
#   build-asan: AddressSanitizer + UndefinedBehaviorSanitizer; the unit and integration suites.
#   build-tsan: ThreadSanitizer; the unit suite and the concurrency integration tests.
#   scripts/sanitize.sh            both
#   scripts/sanitize.sh asan|tsan  one
# The integration tests run the sanitized countersign binary as a child process: every process
# writes its reports to <build>/sanitizer-logs, and any file there fails the stage even when the
# test that started the process passed.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="$(nproc)"

# ctest -R for the TSan integration run: the suites where threads meet (concurrent approvals and
# releases, control requests, storms of jobs, quorum races).
tsan_integration='^(Release|Control|Storm|Quorum)[A-Za-z]*Test\.'
# Left out of the ASan integration run: the multi-minute kill -9 and server restart runs (their
# code paths are covered by the shorter crash point tests, which stay in).
asan_excluded='^Faults/(ReplicaKillTest|ServerRestartTest)\.'

build() {  # <dir> <sanitizers> <targets...>
  local dir=$1 sanitize=$2
  shift 2
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOUNTERSIGN_WERROR=ON \
    -DCOUNTERSIGN_SANITIZE="$sanitize" -DCOUNTERSIGN_BENCH=OFF >/dev/null
  cmake --build "$dir" -j"$jobs" "$@"
}

check_logs() {  # <dir>
  local logs
  logs=$(find "$1/sanitizer-logs" -type f -size +0 2>/dev/null || true)
  if [ -n "$logs" ]; then
    echo "sanitize: findings in $1:" >&2
    for f in $logs; do echo "== $f" >&2; head -60 "$f" >&2; done
    return 1
  fi
}

run_asan() {
  local dir=build-asan
  build "$dir" "address,undefined"
  rm -rf "$dir/sanitizer-logs" && mkdir -p "$dir/sanitizer-logs"
  local logs
  logs="$(pwd)/$dir/sanitizer-logs"
  ASAN_OPTIONS="detect_leaks=1:log_path=$logs/asan:abort_on_error=0:exitcode=66" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$logs/ubsan" \
    ctest --test-dir "$dir" --output-on-failure --timeout 900 -j"$jobs" -L 'unit|integration|fuzz' \
    -E "$asan_excluded"
  check_logs "$dir"
}

run_tsan() {
  local dir=build-tsan
  local units
  build "$dir" "thread"
  rm -rf "$dir/sanitizer-logs" && mkdir -p "$dir/sanitizer-logs"
  local logs
  logs="$(pwd)/$dir/sanitizer-logs"
  export TSAN_OPTIONS="halt_on_error=1:exitcode=66:second_deadlock_stack=1:log_path=$logs/tsan:suppressions=$(pwd)/scripts/tsan.supp"
  # Without address space randomisation: GCC 12's TSan cannot map its shadow memory on kernels
  # that randomise with more bits than it expects.
  local norandom=()
  if command -v setarch >/dev/null 2>&1 && setarch "$(uname -m)" -R true 2>/dev/null; then
    norandom=(setarch "$(uname -m)" -R)
  fi
  "${norandom[@]}" ctest --test-dir "$dir" --output-on-failure --timeout 900 -j"$jobs" -L unit
  "${norandom[@]}" ctest --test-dir "$dir" --output-on-failure --timeout 900 -j"$jobs" -L integration \
    -R "$tsan_integration"
  unset TSAN_OPTIONS
  check_logs "$dir"
}

case "${1:-all}" in
  asan) run_asan ;;
  tsan) run_tsan ;;
  all) run_asan; run_tsan ;;
  *) echo "usage: $0 [asan|tsan]" >&2; exit 2 ;;
esac
