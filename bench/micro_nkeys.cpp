// Micro-benchmarks of Ed25519 on nkeys: verifying a signed approval (budget: under 100 us of CPU)
// and signing a receipt. The baseline in the same run is the SHA-256 job hash of the same bytes,
// which every approval pays already.
#include <benchmark/benchmark.h>

#include <string>

#include "countersign/json.hpp"
#include "countersign/nkeys.hpp"

namespace {

namespace nkeys = countersign::nkeys;

// The canonical JSON of a signed approve request, as a client signs it.
const std::string kApproval =
    R"({"action":"approve","approver":"alice","at":"2026-12-06T04:00:00Z","id":"pay-2024-07-31-)"
    R"(000123","job_hash":"sha256:6c1b0d5e8f0e2a4b9f3c1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6f708",)"
    R"("key":"UD466L6EBCM3YY5HEGHJANNTN4LSKTSUXTH7RILHCKEQMQHTBNLHJJXT","policy_snapshot":"sha256:)"
    R"(0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"})";

void BM_Sha256Baseline(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(countersign::json::sha256Hex(kApproval));
}
BENCHMARK(BM_Sha256Baseline);

// What the control path does per signed approval: parse the nkey, decode the base64url
// signature, verify.
void BM_VerifySignedApproval(benchmark::State& state) {
  const nkeys::Seed seed = nkeys::generateSeed();
  const std::string key = nkeys::encodePublicKey(nkeys::publicKeyOf(seed));
  const std::string signature = nkeys::base64UrlEncode(nkeys::sign(seed, kApproval));
  for (auto _ : state) {
    const auto public_key = nkeys::parsePublicKey(key);
    const auto raw = nkeys::base64UrlDecode(signature);
    benchmark::DoNotOptimize(nkeys::verify(*public_key, kApproval, *raw));
  }
}
BENCHMARK(BM_VerifySignedApproval);

// Signing with the key loaded once (receipts and audit events).
void BM_SignWithLoadedKey(benchmark::State& state) {
  const nkeys::Signer signer(nkeys::generateSeed());
  for (auto _ : state) benchmark::DoNotOptimize(signer.sign(kApproval));
}
BENCHMARK(BM_SignWithLoadedKey);

// Signing from the seed alone (derives the key pair each time): what `Signer` saves.
void BM_SignFromSeed(benchmark::State& state) {
  const nkeys::Seed seed = nkeys::generateSeed();
  for (auto _ : state) benchmark::DoNotOptimize(nkeys::sign(seed, kApproval));
}
BENCHMARK(BM_SignFromSeed);

}  // namespace
