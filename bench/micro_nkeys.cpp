// Micro-benchmarks of Ed25519 on nkeys: verifying a signed approval (budget: under 100 us of CPU)
// and signing a receipt. The baseline in the same run is the SHA-256 job hash of the same bytes,
// which every approval pays already. The BM_SignOpenSsl* rows are the signing paths tried on
// OpenSSL 3 (countersign signs with libsodium: nkeys.cpp Signer); BM_ReceiptAllowed is the whole
// receipt of an allowed job (canonical JSON, signature, base64url).
#include <benchmark/benchmark.h>
#include <openssl/evp.h>

#include <string>

#include "countersign/json.hpp"
#include "countersign/nkeys.hpp"
#include "countersign/receipt.hpp"

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

// The receipt of an allowed job as intake signs it (about 330 bytes of canonical JSON).
const countersign::receipt::Claims kAllowedClaims{
    .job_hash = "sha256:6c1b0d5e8f0e2a4b9f3c1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6f708",
    .policy_snapshot = "sha256:0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9",
    .rule = "allow-readonly",
    .decided_at = "2026-12-06T04:00:00.123Z",
    .subject = "agents.jobs.knowledge.read",
    .target = "jobs.knowledge.read",
    .msg_id = ""};

void BM_ReceiptAllowed(benchmark::State& state) {
  const nkeys::Signer signer(nkeys::generateSeed());
  for (auto _ : state) benchmark::DoNotOptimize(countersign::receipt::make(signer, kAllowedClaims));
}
BENCHMARK(BM_ReceiptAllowed);

// OpenSSL 3 EVP, as countersign signed before: the key loaded once, a new EVP_MD_CTX and
// EVP_DigestSignInit (which fetches the algorithm) per signature.
struct OpenSslKey {
  EVP_PKEY* key;
  explicit OpenSslKey(const nkeys::Seed& seed)
      : key(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, seed.data(), seed.size())) {}
  ~OpenSslKey() { EVP_PKEY_free(key); }
};

void signOpenSsl(EVP_MD_CTX* context, EVP_PKEY* key, const std::string& message) {
  unsigned char signature[64];
  std::size_t size = sizeof signature;
  if (EVP_DigestSignInit(context, nullptr, nullptr, nullptr, key) != 1 ||
      EVP_DigestSign(context, signature, &size, reinterpret_cast<const unsigned char*>(message.data()),
                     message.size()) != 1) {
    std::abort();
  }
  benchmark::DoNotOptimize(signature);
}

void BM_SignOpenSslEvp(benchmark::State& state) {
  const OpenSslKey key(nkeys::generateSeed());
  for (auto _ : state) {
    EVP_MD_CTX* context = EVP_MD_CTX_new();
    signOpenSsl(context, key.key, kApproval);
    EVP_MD_CTX_free(context);
  }
}
BENCHMARK(BM_SignOpenSslEvp);

// The same with one EVP_MD_CTX reused (re-initialised per signature): what the allocation and
// free of the context cost.
void BM_SignOpenSslEvpReusedContext(benchmark::State& state) {
  const OpenSslKey key(nkeys::generateSeed());
  EVP_MD_CTX* context = EVP_MD_CTX_new();
  for (auto _ : state) signOpenSsl(context, key.key, kApproval);
  EVP_MD_CTX_free(context);
}
BENCHMARK(BM_SignOpenSslEvpReusedContext);

// A context initialised once and copied per signature: no algorithm fetch per signature.
void BM_SignOpenSslEvpCopiedContext(benchmark::State& state) {
  const OpenSslKey key(nkeys::generateSeed());
  EVP_MD_CTX* initialised = EVP_MD_CTX_new();
  EVP_MD_CTX* context = EVP_MD_CTX_new();
  if (EVP_DigestSignInit(initialised, nullptr, nullptr, nullptr, key.key) != 1) std::abort();
  for (auto _ : state) {
    unsigned char signature[64];
    std::size_t size = sizeof signature;
    if (EVP_MD_CTX_copy_ex(context, initialised) != 1 ||
        EVP_DigestSign(context, signature, &size, reinterpret_cast<const unsigned char*>(kApproval.data()),
                       kApproval.size()) != 1) {
      std::abort();
    }
    benchmark::DoNotOptimize(signature);
  }
  EVP_MD_CTX_free(context);
  EVP_MD_CTX_free(initialised);
}
BENCHMARK(BM_SignOpenSslEvpCopiedContext);

// Verifying on OpenSSL 3 EVP, as countersign did before (nkeys::verify is libsodium's now).
void BM_VerifyOpenSslEvp(benchmark::State& state) {
  const nkeys::Seed seed = nkeys::generateSeed();
  const nkeys::PublicKey key = nkeys::publicKeyOf(seed);
  const std::string signature = nkeys::sign(seed, kApproval);
  for (auto _ : state) {
    EVP_PKEY* pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, key.data(), key.size());
    EVP_MD_CTX* context = EVP_MD_CTX_new();
    const bool ok =
        EVP_DigestVerifyInit(context, nullptr, nullptr, nullptr, pkey) == 1 &&
        EVP_DigestVerify(context, reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                         reinterpret_cast<const unsigned char*>(kApproval.data()), kApproval.size()) == 1;
    EVP_MD_CTX_free(context);
    EVP_PKEY_free(pkey);
    if (!ok) std::abort();
  }
}
BENCHMARK(BM_VerifyOpenSslEvp);

}  // namespace
