// Fuzz target: arbitrary bytes as a policy. Parsing must fail cleanly or succeed; a policy that
// loads is evaluated, explained and throttled against a few jobs. Nothing may crash or throw.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "countersign/policy.hpp"

namespace {

using countersign::Decision;
using countersign::Headers;
using countersign::JobView;
using countersign::Labels;
using countersign::Policy;

void require(bool condition) {
  if (!condition) std::abort();
}

void exercise(const Policy& policy, countersign::Throttler& throttler, const JobView& job) {
  const auto verdict = policy.evaluate(job);
  const auto explanation = policy.explain(job);
  // explain() and evaluate() must agree.
  require(explanation.verdict.decision == verdict.decision);
  require(explanation.verdict.rule == verdict.rule);
  require(!explanation.trace.empty());
  if (verdict.rule && verdict.decision == Decision::throttle) {
    const auto now = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
    for (int i = 0; i < 3; ++i) {
      const auto admission = throttler.admit(*verdict.rule, job, now);
      require(admission.admitted || admission.retry_after.count() >= 1);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto parsed = Policy::parse(text, "fuzz");
  if (!parsed) {
    require(!parsed.error().message.empty());
    return 0;
  }
  const Policy& policy = **parsed;
  // Loading is deterministic: the same text gives the same snapshot.
  const auto again = Policy::parse(text, "fuzz");
  require(again && (*again)->snapshot() == policy.snapshot());
  require(policy.snapshot().starts_with(policy.version() + ":sha256:"));

  countersign::Throttler throttler(4);
  const Headers headers{{"env", "production"}, {"X-Tenant", "a"}, {"X-Tenant", "b"}};
  const Headers none;
  const Labels route{{"channel", "external"}};
  const std::string json =
      R"({"env":"production","labels":{"env":"staging","tier":2},"amount":250.5,)"
      R"("items":[{"sku":"A"},{"sku":"B"}],"note":"hello","flag":true,"nothing":null})";
  const std::string duplicate = R"({"env":"staging","env":"production"})";
  const std::string big = R"({"note":")" + std::string(70 * 1024, 'x') + R"("})";

  exercise(policy, throttler,
           JobView("agents.jobs.knowledge.read", "knowledge.read", headers, json));
  exercise(policy, throttler,
           JobView("agents.jobs.finance.payment.execute", "finance.payment.execute", none, json));
  exercise(policy, throttler,
           JobView("agents.jobs.customer.notify", "customer.notify", headers, duplicate, &route));
  exercise(policy, throttler, JobView("agents.jobs.a.b.c", "a.b.c", none, "not json"));
  exercise(policy, throttler, JobView("agents.jobs.x", "x", headers, ""));
  exercise(policy, throttler, JobView("agents.jobs.x", "x", headers, big));
  return 0;
}
