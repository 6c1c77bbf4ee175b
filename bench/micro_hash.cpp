// Micro-benchmarks of the job hash (docs/protocol.md). Budget: under 10 us for a 1 KiB JSON
// payload, parse included.
#include <benchmark/benchmark.h>

#include <string>

#include "countersign/job.hpp"
#include "countersign/json.hpp"

namespace {

using countersign::Headers;
namespace json = countersign::json;

constexpr const char* kSubject = "agents.jobs.finance.payment.execute";
constexpr const char* kTarget = "jobs.finance.payment.execute";

// About 1 KiB: a payment job as an agent would send it, keys deliberately unsorted.
std::string jobPayload() {
  std::string payload = R"({"job_id":"pay-2024-07-31-000123","env":"production",)"
                        R"("labels":{"team":"treasury","cost_center":"cc-4411","priority":"high"},)"
                        R"("amount":{"value":125000.75,"currency":"EUR"},"approved_limit":250000,)"
                        R"("beneficiary":{"name":"Société Générale Équipement","iban":)"
                        R"("FR7630006000011234567890189","bic":"AGRIFRPP","country":"FR"},)"
                        R"("reference":"Invoice 2024-INV-88812 \u2013 Q3 equipment lease",)"
                        R"("lines":[)";
  for (int i = 0; i < 6; ++i) {
    if (i > 0) payload += ',';
    payload += R"({"sku":"LEASE-)" + std::to_string(1000 + i) + R"(","qty":)" +
               std::to_string(i + 1) + R"(,"unit_price":)" + std::to_string(1250 + i * 17) +
               R"(.5,"tax_rate":0.2,"note":"monthly"})";
  }
  payload += R"(],"requested_by":"agent-7","requested_at":"2024-07-31T09:15:02Z",)"
             R"("dry_run":false,"retries":0,"trace":null})";
  return payload;
}

Headers jobHeaders() {
  return {{"Nats-Msg-Id", "pay-2024-07-31-000123"},
          {"Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
          {"X-Agent", "agent-7"}};
}

void BM_JobHashJson(benchmark::State& state) {
  const std::string payload = jobPayload();
  const Headers headers = jobHeaders();
  auto parsed = json::parseStrict(payload);
  if (!parsed) {
    state.SkipWithError(parsed.error().message.c_str());
    return;
  }
  for (auto _ : state) {
    benchmark::DoNotOptimize(countersign::jobHash(kSubject, kTarget, headers, &*parsed, payload));
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(payload.size()));
  state.counters["payload_bytes"] = static_cast<double>(payload.size());
}
BENCHMARK(BM_JobHashJson);

// What intake pays per JSON job: the one strict parse plus the hash.
void BM_ParseAndJobHashJson(benchmark::State& state) {
  const std::string payload = jobPayload();
  const Headers headers = jobHeaders();
  for (auto _ : state) {
    auto parsed = json::parseStrict(payload);
    benchmark::DoNotOptimize(
        countersign::jobHash(kSubject, kTarget, headers, parsed ? &*parsed : nullptr, payload));
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(payload.size()));
}
BENCHMARK(BM_ParseAndJobHashJson);

void BM_ParseStrict(benchmark::State& state) {
  const std::string payload = jobPayload();
  for (auto _ : state) benchmark::DoNotOptimize(json::parseStrict(payload));
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(payload.size()));
}
BENCHMARK(BM_ParseStrict);

void BM_ParseStrictAndCanonicalize(benchmark::State& state) {
  const std::string payload = jobPayload();
  for (auto _ : state) {
    auto parsed = json::parseStrict(payload);
    benchmark::DoNotOptimize(parsed ? json::canonicalize(*parsed) : std::string());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(payload.size()));
}
BENCHMARK(BM_ParseStrictAndCanonicalize);

// A payload that is not JSON: the parse fails fast, the hash goes over base64 of the bytes.
void BM_ParseAndJobHashBytes(benchmark::State& state) {
  std::string payload = jobPayload();
  payload.back() = ',';  // truncated object: not JSON
  const Headers headers = jobHeaders();
  for (auto _ : state) {
    auto parsed = json::parseStrict(payload);
    benchmark::DoNotOptimize(
        countersign::jobHash(kSubject, kTarget, headers, parsed ? &*parsed : nullptr, payload));
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(payload.size()));
}
BENCHMARK(BM_ParseAndJobHashBytes);

void BM_JobHashBytes(benchmark::State& state) {
  const std::string payload(static_cast<std::size_t>(state.range(0)), '\x5a');
  const Headers headers = jobHeaders();
  for (auto _ : state) {
    benchmark::DoNotOptimize(countersign::jobHash(kSubject, kTarget, headers, nullptr, payload));
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_JobHashBytes)->Arg(1024)->Arg(64 * 1024);

}  // namespace
