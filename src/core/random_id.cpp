#include <openssl/rand.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>

#include "countersign/clock.hpp"

namespace countersign {

std::string RandomIdSource::newId() {
  std::array<unsigned char, 16> bytes{};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
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
