#!/usr/bin/env bash
# Sanitizer stage of CI: any finding fails.
#   build-asan: AddressSanitizer (with leak checks) + UndefinedBehaviorSanitizer; the whole suite:
#               unit tests, fuzz corpora, integration tests (the browser test and the kill -9 and
#               server restart loops included).
#   build-tsan: ThreadSanitizer; the unit tests and the integration suites where threads meet.
#   scripts/sanitize.sh            both
#   scripts/sanitize.sh asan|tsan  one
#   scripts/sanitize.sh asan-unit  ASan+UBSan over the unit tests and fuzz corpora only (builds
#                                  neither the binary nor the integration tests)
#   scripts/sanitize.sh asan -R Json   one, with more ctest arguments (a later -R replaces the
#                                      run's own selection)
# Each build dir gets only the targets its tests need, at -O1 with line tables (-g1): enough for
# exact stack traces, and much quicker to compile than the debug build.
# The integration tests run the sanitized countersign binary as a child process: every process
# writes its reports to <build>/sanitizer-logs, and any file there fails the stage even when the
# test that started the process passed (a child's report may not change the test's result).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="$(nproc)"

# The TSan integration run: concurrent approvals, rejects and votes racing each other (also across
# two replicas), control requests on several threads, storms of jobs, release.
tsan_integration='^(ReleaseTest|ControlTest|StormTest|GovernanceIt|TwoReplicas)\.'
tsan_integration_targets=(it_release_test it_control_test it_storm_test it_governance_test)

unit_targets=()
for src in tests/unit/*_test.cpp; do unit_targets+=("unit_$(basename "$src" .cpp)"); done

build() {  # <dir> <sanitizers> [targets...]: no targets builds everything (benchmarks excluded)
  local dir=$1 sanitize=$2
  shift 2
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
    -DCOUNTERSIGN_WERROR=ON -DCOUNTERSIGN_SANITIZE="$sanitize" -DCOUNTERSIGN_BENCH=OFF >/dev/null
  local start
  start=$(date +%s)
  if [ $# -gt 0 ]; then
    cmake --build "$dir" -j"$jobs" --target "$@"
  else
    cmake --build "$dir" -j"$jobs"
  fi
  echo "sanitize: $dir built in $(( $(date +%s) - start )) s"
}

check_logs() {  # <dir>
  local logs
  logs=$(find "$1/sanitizer-logs" -type f -size +0 2>/dev/null || true)
  if [ -n "$logs" ]; then
    echo "sanitize: findings in $1:" >&2
    for f in $logs; do echo "== $f" >&2; head -80 "$f" >&2; done
    return 1
  fi
}

run_asan() {  # [unit]: only the unit tests and the fuzz corpora
  local dir=build-asan labels='unit|integration|fuzz'
  if [ "${1:-}" = unit ]; then
    local corpora=()
    for src in tests/fuzz/*_fuzz.cpp; do corpora+=("$(basename "$src" .cpp)_corpus"); done
    build "$dir" "address,undefined" "${unit_targets[@]}" "${corpora[@]}"
    labels='unit|fuzz'
    ctest_args=(-E '^binary_' "${ctest_args[@]}")
  else
    build "$dir" "address,undefined"
  fi
  rm -rf "$dir/sanitizer-logs" && mkdir -p "$dir/sanitizer-logs"
  local logs start status=0
  logs="$(pwd)/$dir/sanitizer-logs"
  start=$(date +%s)
  # Leak checks at every exit (LeakSanitizer), with no suppressions: the whole suite, cnats and
  # OpenSSL included, exits without a leak report. UBSan is built not to recover, and
  # halt_on_error says the same at run time. Freed blocks wait in a 32 MB quarantine before
  # reuse (256 MB by default): a use after free is still caught unless 32 MB were freed since,
  # and the bounded-memory test (300 x 600 KB jobs, peak RSS under 150 MB above the start; 284
  # MB with the default quarantine, 56 MB with this one) measures countersign, not the quarantine.
  ASAN_OPTIONS="detect_leaks=1:quarantine_size_mb=32:log_path=$logs/asan:abort_on_error=0:exitcode=66" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$logs/ubsan" \
    ctest --test-dir "$dir" --output-on-failure --timeout 900 -j"$jobs" -L "$labels" \
    "${ctest_args[@]}" || status=1
  echo "sanitize: asan tests took $(( $(date +%s) - start )) s"
  check_logs "$dir" || status=1
  return $status
}

run_tsan() {
  local dir=build-tsan
  build "$dir" "thread" countersign "${unit_targets[@]}" "${tsan_integration_targets[@]}"
  rm -rf "$dir/sanitizer-logs" && mkdir -p "$dir/sanitizer-logs"
  local logs start status=0
  logs="$(pwd)/$dir/sanitizer-logs"
  export TSAN_OPTIONS="halt_on_error=1:exitcode=66:second_deadlock_stack=1:log_path=$logs/tsan:suppressions=$(pwd)/scripts/tsan.supp"
  # Without address space randomisation: GCC 12's TSan cannot map its shadow memory on kernels
  # that randomise with more bits than it expects.
  local norandom=()
  if command -v setarch >/dev/null 2>&1 && setarch "$(uname -m)" -R true 2>/dev/null; then
    norandom=(setarch "$(uname -m)" -R)
  fi
  start=$(date +%s)
  "${norandom[@]}" ctest --test-dir "$dir" --output-on-failure --timeout 900 -j"$jobs" -L unit \
    -E '^binary_' "${ctest_args[@]}" || status=1
  "${norandom[@]}" ctest --test-dir "$dir" --output-on-failure --timeout 900 -j"$jobs" -L integration \
    -R "$tsan_integration" "${ctest_args[@]}" || status=1
  echo "sanitize: tsan tests took $(( $(date +%s) - start )) s"
  unset TSAN_OPTIONS
  check_logs "$dir" || status=1
  return $status
}

run="${1:-all}"
[ $# -gt 0 ] && shift
ctest_args=("$@")
case "$run" in
  asan) run_asan ;;
  asan-unit) run_asan unit ;;
  tsan) run_tsan ;;
  all)
    status=0
    run_asan || status=1
    run_tsan || status=1
    exit $status
    ;;
  *) echo "usage: $0 [asan|asan-unit|tsan] [ctest arguments]" >&2; exit 2 ;;
esac
