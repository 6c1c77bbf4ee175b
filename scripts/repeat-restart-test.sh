#!/usr/bin/env bash
# Runs the nats-server kill -9 test with JetStream intake N times in a row, optionally beside a
# busy loop, and counts failures and what the ingresses logged (stalls found and healed, regressions
# of the ingress stream's sequence recorded or found already recorded, forwards sent again under an
# epoch id).
#   scripts/repeat-restart-test.sh BUILD_DIR OUT_DIR RUNS [busy]
# busy: two `yes` loops at nice 19 run beside the test (stopped on exit).
# Writes OUT_DIR/run-<i>.log and a line per run to OUT_DIR/summary.txt.
set -u
build=${1:?build dir}; out=${2:?output dir}; runs=${3:?runs}; busy=${4:-}
bin="$build/tests/it_faults_test"
test_name='Faults/ServerRestartTest.CountersignRidesOutANatsServerRestart/kill9_jetstream_intake'
mkdir -p "$out"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; }
trap cleanup EXIT
trap 'exit 143' INT TERM  # ends the loop too (the EXIT trap stops the busy loops)
if [ "$busy" = busy ]; then
  for _ in 1 2; do nice -n 19 yes > /dev/null & pids+=($!); done
fi
first=$(( $(ls "$out"/run-*.log 2>/dev/null | wc -l) + 1 ))
for i in $(seq "$first" $(( first + runs - 1 ))); do
  start=$(date +%s)
  FAULTS_PRINT_LOGS=1 timeout 300 "$bin" --gtest_filter="$test_name" > "$out/run-$i.log" 2>&1
  rc=$?
  found=$(grep -c -E "skips new jobs|fetches find nothing|fetch thread has been|is gone" "$out/run-$i.log")
  regressions=$(grep -c "; recorded as epoch" "$out/run-$i.log")
  covered=$(grep -c "already recorded as epoch" "$out/run-$i.log")
  again=$(grep -c "forward id already used" "$out/run-$i.log")
  stored=$(grep -o -E "\[faults\] stored [0-9]+: [0-9]+ allowed of [0-9]+ sent, [0-9]+ released of [0-9]+ approved" "$out/run-$i.log" | head -1 | sed 's/\[faults\] //')
  echo "run $i: exit $rc, $(( $(date +%s) - start )) s, load $(cut -d' ' -f1 /proc/loadavg), ingress stall lines $found, regressions recorded $regressions, already recorded $covered, forwarded again $again, ${stored:-no count}" >> "$out/summary.txt"
done
echo "runs $(grep -c '^run ' "$out/summary.txt"), failed $(grep -c -v 'exit 0,' <(grep '^run ' "$out/summary.txt"))" >> "$out/summary.txt"
