// NATS nkeys (user public keys "U...", user seeds "SU...") and Ed25519 signatures (signed and
// verified with libsodium; OpenSSL 3 makes seeds and derives public keys).
//
// Encoding, as the nkeys implementations of the NATS project write it: base32 (RFC 4648
// alphabet, no padding) of prefix bytes + 32 key bytes + CRC-16/XMODEM of the preceding bytes,
// little-endian. A public user key has one prefix byte (20 << 3, which base32-encodes to 'U');
// a user seed has two (18 << 3 | (20 << 3) >> 5, ((20 << 3) & 31) << 3), which encode to "SU".
#pragma once

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "countersign/result.hpp"

namespace countersign::nkeys {

using PublicKey = std::array<unsigned char, 32>;
using Seed = std::array<unsigned char, 32>;

// "U..." -> the 32-byte Ed25519 public key. Errc::invalid_argument with a message naming what is
// wrong (length, a character outside the base32 alphabet, the prefix, the checksum).
Result<PublicKey> parsePublicKey(std::string_view encoded);
// "SU..." -> the 32-byte Ed25519 seed (the private key).
Result<Seed> parseSeed(std::string_view encoded);

std::string encodePublicKey(const PublicKey& key);
std::string encodeSeed(const Seed& seed);

PublicKey publicKeyOf(const Seed& seed);
// A new seed from OpenSSL's generator (RAND_bytes). Aborts if the generator fails: a key made
// from anything weaker must never exist.
Seed generateSeed();

// The 64 raw bytes of the Ed25519 signature of `message`.
std::string sign(const Seed& seed, std::string_view message);
// True only for a valid 64-byte Ed25519 signature of `message` by `key`; false on any malformed
// input. Never throws.
bool verify(const PublicKey& key, std::string_view message, std::string_view signature);

// A seed expanded once into a signing key, for signing many messages (receipts, audit events) without
// deriving the key pair again each time. Thread-safe: sign() may run on several threads at once.
class Signer {
 public:
  explicit Signer(const Seed& seed);
  ~Signer();
  Signer(const Signer&) = delete;
  Signer& operator=(const Signer&) = delete;

  std::string sign(std::string_view message) const;  // 64 raw signature bytes
  const PublicKey& publicKey() const { return public_key_; }
  const std::string& encodedPublicKey() const { return encoded_public_key_; }

 private:
  struct Key;
  std::unique_ptr<Key> key_;
  PublicKey public_key_{};
  std::string encoded_public_key_;
};

// RFC 4648 base64url without padding.
std::string base64UrlEncode(std::string_view bytes);
// Strict: nullopt on a character outside the url-safe alphabet, on padding, on an impossible
// length (1 mod 4) and on non-zero unused bits in the last character.
std::optional<std::string> base64UrlDecode(std::string_view text);

// A seed file holds the seed alone on its first line, as `nk -gen user` writes it; later lines
// (and surrounding whitespace) are ignored.
Result<Seed> readSeedFile(const std::string& path);
// Writes the seed and a newline to a new file with mode 0600. Refuses (Errc::exists) to overwrite
// an existing file. Atomic: the file appears complete or not at all (written aside, then linked
// into place), so that processes starting at once never read half a seed.
Status writeSeedFile(const std::string& path, const Seed& seed);
// The seed in `path`; when there is no such file, a new seed written there (0600). `created` says
// which. Of several processes creating it at once, one writes and the others read its seed.
Result<Seed> readOrCreateSeedFile(const std::string& path, bool* created = nullptr);

}  // namespace countersign::nkeys
