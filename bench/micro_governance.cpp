// Micro-benchmarks of what a signed approval adds before the record is read: parsing the request
// once (with its RFC 8785 signed text) and proving who acts (nkey, base64url, Ed25519 verify,
// registry lookups). Budget: under 100 us of CPU per signed approval. The unsigned variants in
// the same run are the baseline.
#include <benchmark/benchmark.h>

#include <string>

#include "countersign/clock.hpp"
#include "countersign/control.hpp"
#include "countersign/governance.hpp"
#include "countersign/json.hpp"
#include "countersign/nkeys.hpp"

namespace {

using namespace countersign;

struct Fixture {
  nkeys::Seed seed = nkeys::generateSeed();
  ApproverRegistry registry;
  std::chrono::system_clock::time_point now = std::chrono::system_clock::now();
  std::string signed_body;
  std::string unsigned_body;

  Fixture() {
    // A registry of 50 people, the signer last (the lookups scan it).
    for (int i = 0; i < 49; ++i) {
      registry.people.push_back(Person{"person-" + std::to_string(i), {"g"},
                                       {nkeys::encodePublicKey(nkeys::publicKeyOf(nkeys::generateSeed()))}, {}, {}});
    }
    const std::string key = nkeys::encodePublicKey(nkeys::publicKeyOf(seed));
    registry.people.push_back(Person{"alice", {"finance"}, {key}, {}, {}});
    const std::string fields = R"("action":"approve","approver":"alice","at":")" + formatRfc3339(now) +
                               R"(","id":"pay-2024-07-31-000123","job_hash":"sha256:)" + std::string(64, 'a') +
                               R"(","key":")" + key + R"(","policy_snapshot":"v1:sha256:)" + std::string(64, 'b') +
                               R"(","reason":"checked the invoice")";
    const std::string text = "{" + fields + "}";
    signed_body = "{" + fields + R"(,"signature":")" + nkeys::base64UrlEncode(nkeys::sign(seed, text)) + "\"}";
    unsigned_body = R"({"id":"pay-2024-07-31-000123","approver":"alice","reason":"checked the invoice"})";
  }
};

const Fixture& fixture() {
  static const Fixture f;
  return f;
}

void identify(benchmark::State& state, const std::string& body) {
  const Fixture& f = fixture();
  const Governance governance(&f.registry);
  for (auto _ : state) {
    auto request = parseControlRequest(ControlOp::approve, body);
    auto actor = governance.identify(DecisionClaim{"approve", request->approver,
                                                   request->signature ? &*request->signature : nullptr, false},
                                     f.now);
    if (!actor) state.SkipWithError("refused");
    benchmark::DoNotOptimize(actor);
  }
}

void BM_ApprovalIdentity_Unsigned(benchmark::State& state) { identify(state, fixture().unsigned_body); }
void BM_ApprovalIdentity_Signed(benchmark::State& state) { identify(state, fixture().signed_body); }

BENCHMARK(BM_ApprovalIdentity_Unsigned);
BENCHMARK(BM_ApprovalIdentity_Signed);

}  // namespace
