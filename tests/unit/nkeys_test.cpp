#include "countersign/nkeys.hpp"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace countersign::nkeys {
namespace {

// The pair given in the README of the NATS project's nkeys.
constexpr std::string_view kReadmeSeed = "SUAKYRHVIOREXV7EUZTBHUHL7NUMHPMAS7QMDU3GTIUWEI5LDNOXD43IZY";
constexpr std::string_view kReadmePublic =
    "UD466L6EBCM3YY5HEGHJANNTN4LSKTSUXTH7RILHCKEQMQHTBNLHJJXT";

std::string errorOf(const Result<PublicKey>& result) {
  return result ? "<accepted>" : result.error().message;
}

// Replaces character `index` with another base32 character.
std::string corrupt(std::string_view text, std::size_t index) {
  std::string out(text);
  out[index] = out[index] == 'A' ? 'B' : 'A';
  return out;
}

TEST(Nkeys, ReadmeSeedGivesReadmePublicKey) {
  auto seed = parseSeed(kReadmeSeed);
  ASSERT_TRUE(seed) << seed.error().message;
  const PublicKey key = publicKeyOf(*seed);
  EXPECT_EQ(encodePublicKey(key), kReadmePublic);
  auto parsed = parsePublicKey(kReadmePublic);
  ASSERT_TRUE(parsed) << parsed.error().message;
  EXPECT_EQ(*parsed, key);
  EXPECT_EQ(encodeSeed(*seed), kReadmeSeed);
}

TEST(Nkeys, RoundTripsGeneratedKeys) {
  for (int i = 0; i < 50; ++i) {
    const Seed seed = generateSeed();
    const std::string encoded = encodeSeed(seed);
    ASSERT_EQ(encoded.substr(0, 2), "SU");
    ASSERT_EQ(encoded.size(), 58u);
    auto back = parseSeed(encoded);
    ASSERT_TRUE(back) << back.error().message;
    EXPECT_EQ(*back, seed);
    const std::string pub = encodePublicKey(publicKeyOf(seed));
    ASSERT_EQ(pub[0], 'U');
    ASSERT_EQ(pub.size(), 56u);
    auto key = parsePublicKey(pub);
    ASSERT_TRUE(key) << key.error().message;
    EXPECT_EQ(*key, publicKeyOf(seed));
  }
  EXPECT_NE(generateSeed(), generateSeed());
}

TEST(Nkeys, CorruptedCharacterFailsTheChecksum) {
  // Every single-character change in the body is caught (CRC-16 detects all of them).
  for (std::size_t i = 1; i + 4 < kReadmePublic.size(); ++i) {
    const auto result = parsePublicKey(corrupt(kReadmePublic, i));
    ASSERT_FALSE(result) << "position " << i;
    EXPECT_EQ(result.error().code, Errc::invalid_argument);
    EXPECT_NE(errorOf(result).find("checksum"), std::string::npos) << errorOf(result);
  }
  for (std::size_t i = 2; i + 4 < kReadmeSeed.size(); ++i) {
    const auto result = parseSeed(corrupt(kReadmeSeed, i));
    ASSERT_FALSE(result) << "position " << i;
    EXPECT_NE(errorOf(result).find("checksum"), std::string::npos) << errorOf(result);
  }
}

TEST(Nkeys, CorruptedChecksumBytesAreRefused) {
  const std::string key(kReadmePublic);
  EXPECT_NE(errorOf(parsePublicKey(corrupt(key, key.size() - 1))).find("checksum"),
            std::string::npos);
  EXPECT_NE(errorOf(parsePublicKey(corrupt(key, key.size() - 2))).find("checksum"),
            std::string::npos);
}

TEST(Nkeys, SeedIsNotAPublicKeyAndBack) {
  EXPECT_NE(errorOf(parseSeed(kReadmePublic)).find("characters"), std::string::npos);
  EXPECT_NE(errorOf(parsePublicKey(kReadmeSeed)).find("characters"), std::string::npos);
}

// Encodes prefix + key + CRC-16 by hand, to make keys of other kinds with valid checksums.
std::string encodeRaw(std::initializer_list<unsigned char> prefix, const PublicKey& key) {
  std::string bytes(prefix.begin(), prefix.end());
  bytes.append(reinterpret_cast<const char*>(key.data()), key.size());
  std::uint16_t crc = 0;
  for (const char c : bytes) {
    crc = static_cast<std::uint16_t>(crc ^ (static_cast<unsigned char>(c) << 8));
    for (int bit = 0; bit < 8; ++bit) {
      crc = (crc & 0x8000) ? static_cast<std::uint16_t>((crc << 1) ^ 0x1021)
                           : static_cast<std::uint16_t>(crc << 1);
    }
  }
  bytes += static_cast<char>(crc & 0xff);
  bytes += static_cast<char>(crc >> 8);
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  std::string out;
  unsigned buffer = 0;
  int bits = 0;
  for (const char c : bytes) {
    buffer = (buffer << 8) | static_cast<unsigned char>(c);
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += kAlphabet[(buffer >> bits) & 31];
    }
  }
  if (bits > 0) out += kAlphabet[(buffer << (5 - bits)) & 31];
  return out;
}

TEST(Nkeys, KeysOfOtherKindsWithValidChecksumsAreRefused) {
  const PublicKey key = *parsePublicKey(kReadmePublic);
  EXPECT_EQ(encodeRaw({20 << 3}, key), kReadmePublic);  // the helper agrees with the codec
  for (const unsigned char prefix : {0u << 3, 14u << 3, 13u << 3, 2u << 3, 23u << 3}) {
    const std::string other = encodeRaw({prefix}, key);  // account, operator, server, ...
    const auto result = parsePublicKey(other);
    ASSERT_FALSE(result) << other;
    EXPECT_NE(errorOf(result).find("prefix"), std::string::npos) << errorOf(result);
  }
  // An account seed ("SA...") is not a user seed.
  const Seed seed = *parseSeed(kReadmeSeed);
  const std::string account_seed = encodeRaw({18 << 3, 0}, seed);
  ASSERT_EQ(account_seed.substr(0, 2), "SA");
  EXPECT_NE(errorOf(parseSeed(account_seed)).find("prefix"), std::string::npos);
}

TEST(Nkeys, BadBase32IsRefused) {
  std::string lower(kReadmePublic);
  lower[5] = static_cast<char>(std::tolower(lower[5]));
  EXPECT_NE(errorOf(parsePublicKey(lower)).find("base32"), std::string::npos);
  std::string digit(kReadmePublic);
  digit[7] = '1';
  EXPECT_NE(errorOf(parsePublicKey(digit)).find("base32"), std::string::npos);
  std::string padded(kReadmePublic);
  padded[55] = '=';
  EXPECT_NE(errorOf(parsePublicKey(padded)).find("base32"), std::string::npos);
  EXPECT_NE(errorOf(parsePublicKey("")).find("characters"), std::string::npos);
  EXPECT_NE(errorOf(parsePublicKey(std::string(kReadmePublic) + "A")).find("characters"),
            std::string::npos);
  EXPECT_NE(errorOf(parsePublicKey(kReadmePublic.substr(0, 55))).find("characters"),
            std::string::npos);
  EXPECT_NE(errorOf(parseSeed(std::string(kReadmeSeed) + " ")).find("characters"),
            std::string::npos);
  // The last character of a seed carries two unused bits, which must be zero.
  std::string seed(kReadmeSeed);
  ASSERT_EQ(seed.back(), 'Y');
  seed.back() = 'Z';  // same leading bits, a non-zero unused bit
  EXPECT_FALSE(parseSeed(seed));
}

TEST(Nkeys, SignAndVerify) {
  const Seed seed = *parseSeed(kReadmeSeed);
  const PublicKey key = publicKeyOf(seed);
  const std::string signature = sign(seed, "hello");
  ASSERT_EQ(signature.size(), 64u);
  EXPECT_TRUE(verify(key, "hello", signature));
  // Ed25519 is deterministic.
  EXPECT_EQ(sign(seed, "hello"), signature);
  const Signer signer(seed);
  EXPECT_EQ(signer.sign("hello"), signature);
  EXPECT_EQ(signer.publicKey(), key);
  EXPECT_EQ(signer.encodedPublicKey(), kReadmePublic);
  EXPECT_TRUE(verify(key, "", sign(seed, "")));
}

// Signing (libsodium) and OpenSSL's Ed25519 give the same bytes: receipts signed before and
// after the switch are the same, and any RFC 8032 verifier accepts them.
TEST(Nkeys, SignerGivesOpenSslsSignatureByteForByte) {
  for (int i = 0; i < 20; ++i) {
    const Seed seed = i == 0 ? *parseSeed(kReadmeSeed) : generateSeed();
    const std::string message = "message " + std::string(static_cast<std::size_t>(i) * 37, 'x');
    EVP_PKEY* key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, seed.data(), seed.size());
    ASSERT_NE(key, nullptr);
    EVP_MD_CTX* context = EVP_MD_CTX_new();
    std::string expected(64, '\0');
    std::size_t size = expected.size();
    const bool signed_ok =
        EVP_DigestSignInit(context, nullptr, nullptr, nullptr, key) == 1 &&
        EVP_DigestSign(context, reinterpret_cast<unsigned char*>(expected.data()), &size,
                       reinterpret_cast<const unsigned char*>(message.data()), message.size()) == 1;
    EVP_MD_CTX_free(context);
    EVP_PKEY_free(key);
    ASSERT_TRUE(signed_ok);
    EXPECT_EQ(Signer(seed).sign(message), expected) << "message " << i;
    EXPECT_TRUE(verify(publicKeyOf(seed), message, Signer(seed).sign(message)));
  }
}

TEST(Nkeys, TamperedMessagesAndSignaturesFail) {
  const Seed seed = generateSeed();
  const PublicKey key = publicKeyOf(seed);
  const std::string message = R"({"action":"approve","id":"job-1"})";
  const std::string signature = sign(seed, message);
  ASSERT_TRUE(verify(key, message, signature));
  std::string changed = message;
  changed[20] = 'x';
  EXPECT_FALSE(verify(key, changed, signature));
  EXPECT_FALSE(verify(key, message + " ", signature));
  for (std::size_t i = 0; i < signature.size(); i += 7) {
    std::string bad = signature;
    bad[i] = static_cast<char>(bad[i] ^ 1);
    EXPECT_FALSE(verify(key, message, bad)) << i;
  }
  EXPECT_FALSE(verify(key, message, signature.substr(0, 63)));
  EXPECT_FALSE(verify(key, message, signature + "x"));
  EXPECT_FALSE(verify(key, message, ""));
  EXPECT_FALSE(verify(publicKeyOf(generateSeed()), message, signature));  // another person's key
  PublicKey not_a_point{};
  not_a_point.fill(0xff);
  EXPECT_FALSE(verify(not_a_point, message, signature));
}

TEST(Base64Url, RoundTripsAndHasNoPadding) {
  EXPECT_EQ(base64UrlEncode(""), "");
  EXPECT_EQ(base64UrlEncode("f"), "Zg");
  EXPECT_EQ(base64UrlEncode("fo"), "Zm8");
  EXPECT_EQ(base64UrlEncode("foo"), "Zm9v");
  EXPECT_EQ(base64UrlEncode("\xfb\xff\xfe"), "-__-");
  for (std::size_t n = 0; n < 70; ++n) {
    std::string bytes;
    for (std::size_t i = 0; i < n; ++i) bytes += static_cast<char>((i * 37 + n) & 0xff);
    const auto back = base64UrlDecode(base64UrlEncode(bytes));
    ASSERT_TRUE(back) << n;
    EXPECT_EQ(*back, bytes);
  }
}

TEST(Base64Url, StrictDecoding) {
  EXPECT_EQ(base64UrlDecode("Zm9v"), "foo");
  EXPECT_EQ(base64UrlDecode("Zg"), "f");
  EXPECT_FALSE(base64UrlDecode("Zg=="));  // padding
  EXPECT_FALSE(base64UrlDecode("Zm9v+w"));  // standard alphabet
  EXPECT_FALSE(base64UrlDecode("Zm9v/w"));
  EXPECT_FALSE(base64UrlDecode("Zm9vY"));  // impossible length
  EXPECT_FALSE(base64UrlDecode("Zh"));     // non-zero unused bits
  EXPECT_FALSE(base64UrlDecode("Zm 9v"));
  EXPECT_FALSE(base64UrlDecode(std::string_view("Zm\0v", 4)));
}

class SeedFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("nkeys_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::filesystem::path dir_;
};

TEST_F(SeedFileTest, WritesMode0600AndReadsBack) {
  const Seed seed = generateSeed();
  ASSERT_TRUE(writeSeedFile(path("user.nk"), seed));
  struct stat info {};
  ASSERT_EQ(::stat(path("user.nk").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  auto back = readSeedFile(path("user.nk"));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, seed);
  std::ifstream in(path("user.nk"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, encodeSeed(seed) + "\n");
}

TEST_F(SeedFileTest, RefusesToOverwrite) {
  const Seed first = generateSeed();
  ASSERT_TRUE(writeSeedFile(path("user.nk"), first));
  const auto again = writeSeedFile(path("user.nk"), generateSeed());
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Errc::exists);
  EXPECT_EQ(*readSeedFile(path("user.nk")), first);
}

TEST_F(SeedFileTest, ReadOrCreateMakesTheSeedOnceAndThenReadsIt) {
  bool created = false;
  auto first = readOrCreateSeedFile(path("receipt.nk"), &created);
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_TRUE(created);
  struct stat info {};
  ASSERT_EQ(::stat(path("receipt.nk").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  auto again = readOrCreateSeedFile(path("receipt.nk"), &created);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_FALSE(created);
  EXPECT_EQ(*again, *first);
  // No temporary files left beside it.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_), std::filesystem::directory_iterator()), 1);
  // A file that is not a seed is an error, never replaced.
  { std::ofstream out(path("bad.nk")); out << "not a seed\n"; }
  EXPECT_FALSE(readOrCreateSeedFile(path("bad.nk")));
  EXPECT_FALSE(readOrCreateSeedFile(path("no-such-dir/receipt.nk")));
}

TEST_F(SeedFileTest, ReadsTheFirstLineOnlyAndReportsBadFiles) {
  {
    std::ofstream out(path("nk.txt"));
    out << "  " << kReadmeSeed << "  \r\n" << "# a comment nk does not write\n";
  }
  auto seed = readSeedFile(path("nk.txt"));
  ASSERT_TRUE(seed) << seed.error().message;
  EXPECT_EQ(encodeSeed(*seed), kReadmeSeed);

  {
    std::ofstream out(path("public.txt"));
    out << kReadmePublic << "\n";
  }
  auto wrong = readSeedFile(path("public.txt"));
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code, Errc::invalid_argument);
  EXPECT_NE(wrong.error().message.find("public.txt"), std::string::npos);
  EXPECT_EQ(wrong.error().message.find(kReadmePublic), std::string::npos);  // never echoed

  { std::ofstream out(path("empty.txt")); }
  EXPECT_FALSE(readSeedFile(path("empty.txt")));
  auto missing = readSeedFile(path("missing.txt"));
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::io);
}

}  // namespace
}  // namespace countersign::nkeys
