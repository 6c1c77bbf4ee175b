// Micro-benchmarks of the RFC 3339 timestamps written and read on every hold, approval and
// audit event (and twice per record when the list index loads a bucket), against the C
// library's formatted I/O that wrote and read them before, in the same run.
#include <benchmark/benchmark.h>

#include <string>

#include "countersign/clock.hpp"

namespace {

const auto kInstant = std::chrono::system_clock::time_point(std::chrono::milliseconds(1796612645678LL));
const std::string kText = "2026-12-07T03:04:05.678Z";

void BM_FormatRfc3339(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(countersign::formatRfc3339(kInstant));
}
BENCHMARK(BM_FormatRfc3339);

// The baseline: gmtime_r and snprintf.
void BM_FormatRfc3339CLibrary(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(countersign::detail::formatRfc3339CLibrary(kInstant));
}
BENCHMARK(BM_FormatRfc3339CLibrary);

void BM_ParseRfc3339(benchmark::State& state) {
  std::chrono::system_clock::time_point t;
  for (auto _ : state) benchmark::DoNotOptimize(countersign::parseRfc3339(kText, t));
}
BENCHMARK(BM_ParseRfc3339);

// The baseline: sscanf and timegm on a copy of the text.
void BM_ParseRfc3339CLibrary(benchmark::State& state) {
  std::chrono::system_clock::time_point t;
  for (auto _ : state) benchmark::DoNotOptimize(countersign::detail::parseRfc3339CLibrary(kText, t));
}
BENCHMARK(BM_ParseRfc3339CLibrary);

}  // namespace
