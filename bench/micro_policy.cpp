// Policy evaluation cost (the policy decides in microseconds; target under 1 us per job).
// "Fresh" variants build a new JobView per job, as intake does, so they include the lazy payload
// parse when a rule reads the payload; "Evaluate" variants reuse one view (parse done once).
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "countersign/policy.hpp"

namespace {

using countersign::Headers;
using countersign::JobView;
using countersign::Policy;

std::shared_ptr<const Policy> seedPolicy() {
  auto policy =
      Policy::loadFile(std::string(COUNTERSIGN_SOURCE_DIR) + "/policies/approval-policy.yaml");
  if (!policy) std::abort();
  return *policy;
}

// 50 rules of mixed shapes; only the last one matches "orders.eu.create" with env=production.
std::shared_ptr<const Policy> fiftyRulePolicy() {
  std::string yaml = "version: bench\nrules:\n";
  for (int i = 0; i < 49; ++i) {
    const std::string n = std::to_string(i);
    yaml += "  - id: rule-" + n + "\n";
    switch (i % 4) {
      case 0:
        yaml += "    when: {topic: service" + n + ".read}\n    decision: allow\n";
        break;
      case 1:
        yaml += "    when: {topic: \"service" + n +
                ".*.write\", env: production}\n"
                "    decision: require_human\n";
        break;
      case 2:
        yaml += "    when: {topic: [\"svc" + n + ".>\", \"other" + n +
                ".>\"], "
                "payload.amount: {gt: 100}}\n    decision: deny\n";
        break;
      default:
        yaml += "    when: {subject: \"agents.jobs.s" + n +
                ".>\", header.X-Tenant: acme}\n"
                "    decision: throttle\n    rate: 10/s\n";
        break;
    }
  }
  yaml +=
      "  - id: last\n    when: {topic: \"orders.*.create\", env: production}\n"
      "    decision: require_human\n";
  auto policy = Policy::parse(yaml, "bench");
  if (!policy || (*policy)->rules().size() != 50) std::abort();
  return *policy;
}

const Headers kHeaders{{"X-Request-Id", "r-1"}};
const std::string kPayload =
    R"({"id":"job-1","labels":{"env":"production"},"amount":250,"currency":"EUR"})";

void check(const Policy& policy, const JobView& view, const char* expected) {
  if (policy.evaluate(view).ruleId() != expected) std::abort();
}

void BM_PolicySeedAllowFresh(benchmark::State& state) {
  const auto policy = seedPolicy();
  check(*policy, JobView("agents.jobs.knowledge.read", "knowledge.read", kHeaders, kPayload),
        "allow-readonly");
  for (auto _ : state) {
    const JobView view("agents.jobs.knowledge.read", "knowledge.read", kHeaders, kPayload);
    benchmark::DoNotOptimize(policy->evaluate(view));
  }
}
BENCHMARK(BM_PolicySeedAllowFresh);

void BM_PolicySeedAllowEvaluate(benchmark::State& state) {
  const auto policy = seedPolicy();
  const JobView view("agents.jobs.knowledge.read", "knowledge.read", kHeaders, kPayload);
  check(*policy, view, "allow-readonly");
  for (auto _ : state) benchmark::DoNotOptimize(policy->evaluate(view));
}
BENCHMARK(BM_PolicySeedAllowEvaluate);

void BM_PolicySeedRequireHumanFresh(benchmark::State& state) {
  const auto policy = seedPolicy();
  check(
      *policy,
      JobView("agents.jobs.finance.payment.execute", "finance.payment.execute", kHeaders, kPayload),
      "require-approval-prod-finance");
  for (auto _ : state) {
    const JobView view("agents.jobs.finance.payment.execute", "finance.payment.execute", kHeaders,
                       kPayload);
    benchmark::DoNotOptimize(policy->evaluate(view));
  }
}
BENCHMARK(BM_PolicySeedRequireHumanFresh);

void BM_PolicySeedRequireHumanEvaluate(benchmark::State& state) {
  const auto policy = seedPolicy();
  const JobView view("agents.jobs.finance.payment.execute", "finance.payment.execute", kHeaders,
                     kPayload);
  check(*policy, view, "require-approval-prod-finance");
  for (auto _ : state) benchmark::DoNotOptimize(policy->evaluate(view));
}
BENCHMARK(BM_PolicySeedRequireHumanEvaluate);

void BM_Policy50RulesLastMatchFresh(benchmark::State& state) {
  const auto policy = fiftyRulePolicy();
  check(*policy, JobView("agents.jobs.orders.eu.create", "orders.eu.create", kHeaders, kPayload),
        "last");
  for (auto _ : state) {
    const JobView view("agents.jobs.orders.eu.create", "orders.eu.create", kHeaders, kPayload);
    benchmark::DoNotOptimize(policy->evaluate(view));
  }
}
BENCHMARK(BM_Policy50RulesLastMatchFresh);

void BM_Policy50RulesLastMatchEvaluate(benchmark::State& state) {
  const auto policy = fiftyRulePolicy();
  const JobView view("agents.jobs.orders.eu.create", "orders.eu.create", kHeaders, kPayload);
  check(*policy, view, "last");
  for (auto _ : state) benchmark::DoNotOptimize(policy->evaluate(view));
}
BENCHMARK(BM_Policy50RulesLastMatchEvaluate);

}  // namespace
