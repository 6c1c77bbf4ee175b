#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "countersign/clock.hpp"

namespace countersign {

namespace {

// Each thread draws from OpenSSL's generator 32 ids' worth at a time: a call costs about as
// much for 512 bytes as for 16, and every call goes through the library's shared state, which
// the control threads would otherwise contend for with each event they sign. The bytes are
// still the generator's; a process that forks only runs exec in the child.
bool takeRandom(std::array<unsigned char, 16>& out) {
  struct Pool {
    std::array<unsigned char, 512> bytes{};
    std::size_t used = 512;
  };
  thread_local Pool pool;
  if (pool.used + out.size() > pool.bytes.size()) {
    if (RAND_bytes(pool.bytes.data(), static_cast<int>(pool.bytes.size())) != 1) return false;
    pool.used = 0;
  }
  std::memcpy(out.data(), pool.bytes.data() + pool.used, out.size());
  OPENSSL_cleanse(pool.bytes.data() + pool.used, out.size());
  pool.used += out.size();
  return true;
}

}  // namespace

std::string RandomIdSource::newId() {
  std::array<unsigned char, 16> bytes{};
  if (!takeRandom(bytes)) {
    // OpenSSL's generator failed (no entropy): fall back to time and a counter, still unique
    // within this process, never empty.
    static std::atomic<std::uint64_t> counter{0};
    const auto now = static_cast<std::uint64_t>(
        std::chrono::system_clock::now().time_since_epoch().count());
    const std::uint64_t n = counter.fetch_add(1);
    for (int i = 0; i < 8; ++i) {
      bytes[static_cast<std::size_t>(i)] = static_cast<unsigned char>(now >> (8 * i));
      bytes[static_cast<std::size_t>(8 + i)] = static_cast<unsigned char>(n >> (8 * i));
    }
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id;
  id.reserve(32);
  for (const unsigned char b : bytes) {
    id += kHex[b >> 4];
    id += kHex[b & 0xf];
  }
  return id;
}

}  // namespace countersign
