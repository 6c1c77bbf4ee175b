#include "countersign/nkeys.hpp"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <vector>

namespace countersign::nkeys {
namespace {

constexpr unsigned char kUserPrefix = 20 << 3;  // 'U'
constexpr unsigned char kSeedPrefix = 18 << 3;  // 'S'
constexpr unsigned char kSeedByte0 = kSeedPrefix | (kUserPrefix >> 5);
constexpr unsigned char kSeedByte1 = (kUserPrefix & 31) << 3;

constexpr char kBase32Alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

std::uint16_t crc16(const unsigned char* data, std::size_t size) {
  std::uint16_t crc = 0;
  for (std::size_t i = 0; i < size; ++i) {
    crc = static_cast<std::uint16_t>(crc ^ (data[i] << 8));
    for (int bit = 0; bit < 8; ++bit) {
      crc = (crc & 0x8000) != 0 ? static_cast<std::uint16_t>((crc << 1) ^ 0x1021)
                                : static_cast<std::uint16_t>(crc << 1);
    }
  }
  return crc;
}

std::string base32Encode(const std::vector<unsigned char>& bytes) {
  std::string out;
  out.reserve((bytes.size() * 8 + 4) / 5);
  unsigned buffer = 0;
  int bits = 0;
  for (const unsigned char byte : bytes) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += kBase32Alphabet[(buffer >> bits) & 31];
    }
  }
  if (bits > 0) out += kBase32Alphabet[(buffer << (5 - bits)) & 31];
  return out;
}

// Strict RFC 4648 base32 without padding: upper-case alphabet only, unused trailing bits zero.
Result<std::vector<unsigned char>> base32Decode(std::string_view text, std::string_view what) {
  std::vector<unsigned char> out;
  out.reserve(text.size() * 5 / 8);
  unsigned buffer = 0;
  int bits = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    unsigned value = 0;
    if (c >= 'A' && c <= 'Z') {
      value = static_cast<unsigned>(c - 'A');
    } else if (c >= '2' && c <= '7') {
      value = static_cast<unsigned>(c - '2') + 26;
    } else {
      return fail(Errc::invalid_argument, std::string(what) + ": character " +
                                              std::to_string(i + 1) +
                                              " is not in the base32 alphabet (A-Z, 2-7)");
    }
    buffer = ((buffer << 5) | value) & 0xfff;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<unsigned char>(buffer >> bits));
    }
  }
  if ((buffer & ((1u << bits) - 1)) != 0) {
    return fail(Errc::invalid_argument, std::string(what) + ": not canonical base32 (trailing bits)");
  }
  return out;
}

// Decodes `encoded`, checks its length, CRC-16 and prefix bytes, and returns the 32 key bytes.
Result<std::array<unsigned char, 32>> decode(std::string_view encoded, std::string_view what,
                                             std::string_view expected_start,
                                             std::initializer_list<unsigned char> prefix) {
  const std::size_t raw_size = prefix.size() + 32 + 2;
  const std::size_t text_size = (raw_size * 8 + 4) / 5;
  if (encoded.size() != text_size) {
    return fail(Errc::invalid_argument, std::string(what) + ": expected " +
                                            std::to_string(text_size) + " characters, got " +
                                            std::to_string(encoded.size()));
  }
  auto raw = base32Decode(encoded, what);
  if (!raw) return std::unexpected(raw.error());
  const std::vector<unsigned char>& bytes = *raw;
  const std::size_t body = bytes.size() - 2;
  const auto stored = static_cast<std::uint16_t>(bytes[body] | (bytes[body + 1] << 8));
  if (crc16(bytes.data(), body) != stored) {
    return fail(Errc::invalid_argument, std::string(what) + ": checksum (CRC-16) does not match");
  }
  std::size_t i = 0;
  for (const unsigned char expected : prefix) {
    if (bytes[i++] != expected) {
      return fail(Errc::invalid_argument, std::string(what) + ": wrong prefix (expected a key "
                                                              "starting with \"" +
                                              std::string(expected_start) + "\")");
    }
  }
  std::array<unsigned char, 32> key{};
  std::memcpy(key.data(), bytes.data() + prefix.size(), key.size());
  return key;
}

std::string encode(const std::array<unsigned char, 32>& key,
                   std::initializer_list<unsigned char> prefix) {
  std::vector<unsigned char> bytes(prefix);
  bytes.insert(bytes.end(), key.begin(), key.end());
  const std::uint16_t crc = crc16(bytes.data(), bytes.size());
  bytes.push_back(static_cast<unsigned char>(crc & 0xff));
  bytes.push_back(static_cast<unsigned char>(crc >> 8));
  std::string out = base32Encode(bytes);
  OPENSSL_cleanse(bytes.data(), bytes.size());
  return out;
}

struct PkeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

PkeyPtr privateKey(const Seed& seed) {
  PkeyPtr key(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, seed.data(), seed.size()));
  // Only an out-of-memory OpenSSL fails here: no key means no signature, never a weak one.
  if (!key) std::abort();
  return key;
}

int base64UrlValue(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

}  // namespace

Result<PublicKey> parsePublicKey(std::string_view encoded) {
  return decode(encoded, "nkey public key", "U", {kUserPrefix});
}

Result<Seed> parseSeed(std::string_view encoded) {
  return decode(encoded, "nkey seed", "SU", {kSeedByte0, kSeedByte1});
}

std::string encodePublicKey(const PublicKey& key) { return encode(key, {kUserPrefix}); }

std::string encodeSeed(const Seed& seed) { return encode(seed, {kSeedByte0, kSeedByte1}); }

PublicKey publicKeyOf(const Seed& seed) {
  const PkeyPtr key = privateKey(seed);
  PublicKey out{};
  std::size_t size = out.size();
  if (EVP_PKEY_get_raw_public_key(key.get(), out.data(), &size) != 1 || size != out.size()) {
    std::abort();
  }
  return out;
}

Seed generateSeed() {
  Seed seed{};
  if (RAND_bytes(seed.data(), static_cast<int>(seed.size())) != 1) std::abort();
  return seed;
}

std::string sign(const Seed& seed, std::string_view message) {
  return Signer(seed).sign(message);
}

bool verify(const PublicKey& key, std::string_view message, std::string_view signature) {
  // libsodium: less than half OpenSSL's CPU per verification (bench_micro BM_VerifyOpenSslEvp),
  // and stricter (it also refuses small-order keys and R points, which no honest signer makes).
  if (signature.size() != crypto_sign_BYTES || sodium_init() < 0) return false;
  return crypto_sign_verify_detached(reinterpret_cast<const unsigned char*>(signature.data()),
                                     reinterpret_cast<const unsigned char*>(message.data()), message.size(),
                                     key.data()) == 0;
}

// Signing is libsodium's crypto_sign_detached: the same deterministic Ed25519 signature
// (RFC 8032) as OpenSSL's, byte for byte, in less than half the CPU (bench_micro
// BM_SignWithLoadedKey against BM_SignOpenSslEvp), and one is made for every allowed job.
struct Signer::Key {
  std::array<unsigned char, crypto_sign_SECRETKEYBYTES> secret{};  // seed + public key
  ~Key() { sodium_memzero(secret.data(), secret.size()); }
};

Signer::Signer(const Seed& seed) : key_(std::make_unique<Key>()) {
  // Thread-safe and idempotent; fails only when the system has no entropy source at all.
  if (sodium_init() < 0) std::abort();
  static_assert(crypto_sign_PUBLICKEYBYTES == std::tuple_size_v<PublicKey>);
  static_assert(crypto_sign_SEEDBYTES == std::tuple_size_v<Seed>);
  if (crypto_sign_seed_keypair(public_key_.data(), key_->secret.data(), seed.data()) != 0) std::abort();
  encoded_public_key_ = encodePublicKey(public_key_);
}

Signer::~Signer() = default;

std::string Signer::sign(std::string_view message) const {
  std::string signature(crypto_sign_BYTES, '\0');
  unsigned long long size = 0;
  if (crypto_sign_detached(reinterpret_cast<unsigned char*>(signature.data()), &size,
                           reinterpret_cast<const unsigned char*>(message.data()), message.size(),
                           key_->secret.data()) != 0 ||
      size != crypto_sign_BYTES) {
    std::abort();  // cannot fail on a valid key
  }
  return signature;
}

std::string base64UrlEncode(std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((bytes.size() * 4 + 2) / 3);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const unsigned n = (static_cast<unsigned char>(bytes[i]) << 16) |
                       (static_cast<unsigned char>(bytes[i + 1]) << 8) |
                       static_cast<unsigned char>(bytes[i + 2]);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += kAlphabet[(n >> 6) & 63];
    out += kAlphabet[n & 63];
  }
  const std::size_t rest = bytes.size() - i;
  if (rest == 1) {
    const unsigned n = static_cast<unsigned char>(bytes[i]) << 16;
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
  } else if (rest == 2) {
    const unsigned n = (static_cast<unsigned char>(bytes[i]) << 16) |
                       (static_cast<unsigned char>(bytes[i + 1]) << 8);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += kAlphabet[(n >> 6) & 63];
  }
  return out;
}

std::optional<std::string> base64UrlDecode(std::string_view text) {
  if (text.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(text.size() * 3 / 4);
  unsigned buffer = 0;
  int bits = 0;
  for (const char c : text) {
    const int value = base64UrlValue(c);
    if (value < 0) return std::nullopt;
    buffer = ((buffer << 6) | static_cast<unsigned>(value)) & 0xffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((buffer >> bits) & 0xff);
    }
  }
  if ((buffer & ((1u << bits) - 1)) != 0) return std::nullopt;  // non-canonical last character
  return out;
}

Result<Seed> readSeedFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return fail(Errc::io, "cannot read seed file " + path + ": " + std::strerror(errno));
  }
  std::string line;
  std::getline(in, line);
  const auto first = line.find_first_not_of(" \t\r");
  const auto last = line.find_last_not_of(" \t\r");
  const std::string_view text =
      first == std::string::npos ? std::string_view{}
                                 : std::string_view(line).substr(first, last - first + 1);
  auto seed = parseSeed(text);
  OPENSSL_cleanse(line.data(), line.size());
  if (!seed) {
    return fail(Errc::invalid_argument,
                "seed file " + path + ": the first line is not a user seed (" +
                    seed.error().message + ")");
  }
  return seed;
}

Status writeSeedFile(const std::string& path, const Seed& seed) {
  // Written to a file of its own beside the target, then hard-linked to the target name: link()
  // fails when the name exists (never overwrites) and readers see the whole file or none.
  std::array<unsigned char, 8> nonce{};
  if (RAND_bytes(nonce.data(), static_cast<int>(nonce.size())) != 1) std::abort();
  std::string temporary = path + ".tmp-";
  for (const unsigned char b : nonce) temporary += "0123456789abcdef"[b & 15];
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return fail(Errc::io, "cannot create seed file " + path + ": " + std::strerror(errno));
  }
  std::string text = encodeSeed(seed) + "\n";
  bool ok = ::fchmod(fd, 0600) == 0;
  std::size_t written = 0;
  while (ok && written < text.size()) {
    const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) written += static_cast<std::size_t>(n);
  }
  ok = ok && ::fsync(fd) == 0;
  int error = errno;
  ok = (::close(fd) == 0) && ok;
  OPENSSL_cleanse(text.data(), text.size());
  if (ok && ::link(temporary.c_str(), path.c_str()) != 0) {
    error = errno;
    ok = false;
  }
  ::unlink(temporary.c_str());
  if (!ok) {
    if (error == EEXIST) {
      return fail(Errc::exists, "seed file " + path + " exists already: not overwritten");
    }
    return fail(Errc::io, "cannot write seed file " + path + ": " + std::strerror(error));
  }
  return {};
}

Result<Seed> readOrCreateSeedFile(const std::string& path, bool* created) {
  if (created != nullptr) *created = false;
  if (::access(path.c_str(), F_OK) != 0 && errno == ENOENT) {
    const Seed seed = generateSeed();
    auto written = writeSeedFile(path, seed);
    if (written) {
      if (created != nullptr) *created = true;
      return seed;
    }
    if (written.error().code != Errc::exists) return std::unexpected(written.error());
    // Another process created it first: use its seed.
  }
  return readSeedFile(path);
}

}  // namespace countersign::nkeys
