// Micro-benchmarks of the per-approval crypto that is not a signature: the store tags
// (HMAC-SHA256 over a record or a decision) and the random part of ids and event Msg-Ids. Each
// against the way it was done before, in the same run, on 1 and 4 threads at once (the control
// threads tag and draw ids concurrently): the one-shot OpenSSL call looks the algorithm up (and
// sets the key) on every call and goes through the library's shared state.
#include <benchmark/benchmark.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <array>
#include <string>

#include "countersign/clock.hpp"
#include "countersign/store_tags.hpp"

namespace {

using namespace countersign;

ApprovalRecord sampleRecord() {
  ApprovalRecord r;
  r.id = "pay-2024-07-31-000123";
  r.route = "jobs";
  r.subject = "agents.jobs.finance.payment.execute";
  r.target = "jobs.finance.payment.execute";
  r.topic = "finance.payment.execute";
  r.headers = {{"Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}};
  r.payload = std::string(R"({"amount":125000.75,"currency":"EUR","note":")") + std::string(200, 'x') + "\"}";
  r.payload_is_json = true;
  r.job_id = r.id;
  r.job_hash = "sha256:4bf92f3577b34da6a3ce929d0e0e47364bf92f3577b34da6a3ce929d0e0e4736";
  r.created_at = "2026-12-07T02:00:00.000Z";
  return r;
}

const StoreTags& tags() {
  static const StoreTags instance([] {
    nkeys::Seed seed;
    seed.fill(7);
    return seed;
  }());
  return instance;
}

void BM_RecordTag(benchmark::State& state) {
  const ApprovalRecord record = sampleRecord();
  for (auto _ : state) benchmark::DoNotOptimize(tags().recordTag(record));
}
BENCHMARK(BM_RecordTag)->Threads(1)->Threads(4)->UseRealTime();

// The baseline: OpenSSL's one-shot HMAC() over text of the same length as the record tag's.
void BM_RecordTagOneShotHmac(benchmark::State& state) {
  const ApprovalRecord record = sampleRecord();
  const std::string text(record.payload.size() + 260, 'r');
  const std::array<unsigned char, 32> key{7};
  std::array<unsigned char, 32> out{};
  unsigned int size = 0;
  for (auto _ : state) {
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(text.data()),
         text.size(), out.data(), &size);
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_RecordTagOneShotHmac)->Threads(1)->Threads(4)->UseRealTime();

// The way before: a copy of the keyed context for each tag (EVP_MAC_CTX_dup), over text of the
// same length as the record tag's. Now each thread keeps one copy and starts it again per tag.
void BM_RecordTagCopyPerTag(benchmark::State& state) {
  const ApprovalRecord record = sampleRecord();
  const std::string text(record.payload.size() + 260, 'r');
  const std::array<unsigned char, 32> key{7};
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, OSSL_MAC_NAME_HMAC, nullptr);
  EVP_MAC_CTX* keyed = EVP_MAC_CTX_new(mac);
  char digest_name[] = OSSL_DIGEST_NAME_SHA2_256;
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
                               OSSL_PARAM_construct_end()};
  EVP_MAC_init(keyed, key.data(), key.size(), params);
  std::array<unsigned char, 32> out{};
  for (auto _ : state) {
    EVP_MAC_CTX* copy = EVP_MAC_CTX_dup(keyed);
    std::size_t size = 0;
    EVP_MAC_update(copy, reinterpret_cast<const unsigned char*>(text.data()), text.size());
    EVP_MAC_final(copy, out.data(), &size, out.size());
    EVP_MAC_CTX_free(copy);
    benchmark::DoNotOptimize(out);
  }
  EVP_MAC_CTX_free(keyed);
  EVP_MAC_free(mac);
}
BENCHMARK(BM_RecordTagCopyPerTag)->Threads(1)->Threads(4)->UseRealTime();

void BM_RandomId(benchmark::State& state) {
  RandomIdSource ids;
  for (auto _ : state) benchmark::DoNotOptimize(ids.newId());
}
BENCHMARK(BM_RandomId)->Threads(1)->Threads(4)->UseRealTime();

// The baseline: one RAND_bytes call per id, then the same hex.
void BM_RandomIdOneCallEach(benchmark::State& state) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (auto _ : state) {
    std::array<unsigned char, 16> bytes{};
    RAND_bytes(bytes.data(), static_cast<int>(bytes.size()));
    std::string id;
    id.reserve(32);
    for (const unsigned char b : bytes) {
      id += kHex[b >> 4];
      id += kHex[b & 0xf];
    }
    benchmark::DoNotOptimize(id);
  }
}
BENCHMARK(BM_RandomIdOneCallEach)->Threads(1)->Threads(4)->UseRealTime();

}  // namespace
