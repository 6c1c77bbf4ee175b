// Keys and signatures made by nkeys.js (the NATS project's implementation, installed by
// scripts/setup.sh into tests/node/node_modules) verify with countersign's codec, and ours verify
// in nkeys.js. Runs `node tests/node/nkeys_interop.js`.
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "countersign/json.hpp"
#include "countersign/nkeys.hpp"

namespace countersign::nkeys {
namespace {

const std::string kScript = std::string(COUNTERSIGN_SOURCE_DIR) + "/tests/node/nkeys_interop.js";

// Runs `command`, returns its standard output; fails the test on a non-zero exit.
std::string run(const std::string& command) {
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) {
    ADD_FAILURE() << "cannot run " << command;
    return {};
  }
  std::string out;
  std::array<char, 4096> buffer{};
  std::size_t n = 0;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) out.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  EXPECT_EQ(status, 0) << command << " failed; is tests/node/node_modules installed "
                       << "(scripts/setup.sh)?";
  return out;
}

std::vector<rapidjson::Document> lines(const std::string& text) {
  std::vector<rapidjson::Document> out;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    if (end > start) {
      auto parsed = json::parseStrict(std::string_view(text).substr(start, end - start));
      EXPECT_TRUE(parsed) << text.substr(start, end - start);
      if (parsed) out.push_back(std::move(*parsed));
    }
    start = end + 1;
  }
  return out;
}

std::string field(const rapidjson::Value& value, const char* name) {
  return value.HasMember(name) && value[name].IsString() ? value[name].GetString() : "";
}

TEST(NkeysInterop, KeysAndSignaturesFromNkeysJsVerify) {
  const auto items = lines(run("node " + kScript + " generate 20"));
  ASSERT_EQ(items.size(), 20u);
  for (const auto& item : items) {
    const std::string seed_text = field(item, "seed");
    const std::string public_text = field(item, "public");
    auto seed = parseSeed(seed_text);
    ASSERT_TRUE(seed) << seed_text << ": " << seed.error().message;
    auto key = parsePublicKey(public_text);
    ASSERT_TRUE(key) << public_text << ": " << key.error().message;
    EXPECT_EQ(publicKeyOf(*seed), *key);
    EXPECT_EQ(encodeSeed(*seed), seed_text);
    EXPECT_EQ(encodePublicKey(*key), public_text);
    const auto message = base64UrlDecode(field(item, "message"));
    const auto signature = base64UrlDecode(field(item, "signature"));
    ASSERT_TRUE(message && signature);
    EXPECT_TRUE(verify(*key, *message, *signature));
    EXPECT_EQ(sign(*seed, *message), *signature);  // Ed25519 is deterministic
    std::string tampered = *message;
    tampered[1] = static_cast<char>(tampered[1] ^ 1);
    EXPECT_FALSE(verify(*key, tampered, *signature));
  }
}

TEST(NkeysInterop, OurKeysAndSignaturesVerifyInNkeysJs) {
  const auto input = std::filesystem::temp_directory_path() /
                     ("nkeys_interop_" + std::to_string(::getpid()) + ".jsonl");
  {
    std::ofstream out(input);
    for (int i = 0; i < 20; ++i) {
      const Seed seed = generateSeed();
      const std::string message = R"({"action":"approve","at":"2026-01-01T00:00:00Z","n":)" +
                                  std::to_string(i) + "}";
      out << R"({"seed":")" << encodeSeed(seed) << R"(","public":")"
          << encodePublicKey(publicKeyOf(seed)) << R"(","message":")" << base64UrlEncode(message)
          << R"(","signature":")" << base64UrlEncode(Signer(seed).sign(message)) << "\"}\n";
    }
  }
  const auto results = lines(run("node " + kScript + " check < " + input.string()));
  std::filesystem::remove(input);
  ASSERT_EQ(results.size(), 20u);
  for (const auto& result : results) {
    EXPECT_TRUE(result["public_matches"].IsTrue()) << json::toString(result);
    EXPECT_TRUE(result["verifies"].IsTrue()) << json::toString(result);
    EXPECT_TRUE(result["tampered"].IsFalse()) << json::toString(result);
  }
}

}  // namespace
}  // namespace countersign::nkeys
