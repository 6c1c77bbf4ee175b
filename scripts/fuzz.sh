#!/usr/bin/env bash
# Bounded fuzzing of every tests/fuzz target (CI's last stage): each runs for FUZZ_SECONDS
# (default 20) from a copy of its corpus. A crash, leak, sanitizer finding or hang fails.
#
# The project needs GCC 12 (Debian's clang 14 cannot compile its C++23 with libstdc++ 12), so the
# targets are built with GCC's coverage hooks (-fsanitize-coverage=trace-pc,trace-cmp) plus ASan
# and UBSan, and linked with LLVM's libFuzzer runtime from Debian's clang package. libFuzzer then
# steers by the comparison hooks (value profile): coarser guidance than clang's edge counters,
# the same crash detection. Without that runtime the stage is skipped (the corpora still run as
# ordinary tests in every build).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-20}"
runtime=$(ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$runtime" ]; then
  echo "fuzz: no libFuzzer runtime (Debian package clang); skipped"
  exit 0
fi
dir=build-fuzz
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOUNTERSIGN_SANITIZE="address,undefined" \
  -DCOUNTERSIGN_LIBFUZZER="$runtime" \
  -DCOUNTERSIGN_BENCH=OFF >/dev/null
targets=()
for src in tests/fuzz/*_fuzz.cpp; do targets+=("$(basename "$src" .cpp)_fuzzer"); done
cmake --build "$dir" -j"$(nproc)" --target "${targets[@]}"
failed=0
for target in "${targets[@]}"; do
  name=${target%_fuzzer}
  work=$(mktemp -d)
  cp -r "tests/fuzz/corpus/$name/." "$work/" 2>/dev/null || true
  echo "fuzz: $name for ${seconds}s"
  if ! (cd "$dir" && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        "tests/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -use_value_profile=1 -print_final_stats=1 "$work" 2>&1 | tail -15); then
    echo "fuzz: $name FAILED (reproducer in $dir/crash-* / leak-* / timeout-*)" >&2
    failed=1
  fi
  rm -rf "$work"
done
exit $failed
