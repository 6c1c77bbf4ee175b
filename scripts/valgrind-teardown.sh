#!/usr/bin/env bash
# Runs the tests that end NATS subscriptions while the server is still sending to them under
# valgrind (memcheck), and fails on any invalid read or write. libnats is not instrumented for
# the sanitizers, so they cannot see cnats' reader thread touching a subscription that was freed;
# valgrind sees every access.
#   scripts/valgrind-teardown.sh [BUILD_DIR] [RUNS]    (default: build, 3 runs of each test)
# Each run repeats its race TEARDOWN_ROUNDS times (default 40). With the subscriptions freed by
# natsSubscription_Destroy alone, the key watcher's test showed 8 invalid reads and writes in
# natsConn_processMsg in 4 of 5 runs of 40 rounds. Needs valgrind and the targets
# it_nats_adapter_test and it_js_ingress_test in BUILD_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
runs=${2:-3}
export TEARDOWN_ROUNDS=${TEARDOWN_ROUNDS:-40}
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 2; }

tests=(
  "it_nats_adapter_test:NatsAdapterTest.*SafelyWhileTheBucketIsWritten:NatsAdapterTest.KvGetMany*:NatsAdapterTest.RequestsSentTogether*:NatsAdapterTest.SubscriptionsEndSafelyWhileMessagesArrive"
  "it_js_ingress_test:JsIngressTest.StoppedAgainAndAgainWhileJobsFlow*:JsIngressTest.ConsumerAndStreamThatDisappearAreCreatedAgain"
)
logs=$(mktemp -d)
failed=0
for entry in "${tests[@]}"; do
  binary=${entry%%:*}
  filter=${entry#*:}
  for ((i = 1; i <= runs; i++)); do
    log="$logs/$binary.$i.log"
    # Errors only (no leak report: cnats keeps library-wide state until exit).
    if valgrind --error-exitcode=99 --leak-check=no --num-callers=30 --log-file="$log" \
      "$build/tests/$binary" --gtest_filter="$filter" >"$log.out" 2>&1; then
      echo "$binary run $i: clean"
    else
      rc=$?
      failed=1
      errors=$(grep -m1 -o "ERROR SUMMARY: [0-9]* errors" "$log" || true)
      # 99: valgrind found errors; anything else: a test failed (its output in $log.out).
      echo "$binary run $i: exit $rc, ${errors:-see $log.out} (log: $log)"
    fi
  done
done
[ "$failed" = 0 ] && rm -rf "$logs"
exit "$failed"
