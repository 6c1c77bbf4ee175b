// Fuzz target for the config loader: arbitrary bytes as a gateway config and as a bridge config,
// with and without environment overrides. Loading must succeed or fail with a message that names
// the file; a config that loads, loads again to the same result. Nothing may crash or throw.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "countersign/config.hpp"

namespace {

using namespace countersign;

void check(bool condition) {
  if (!condition) std::abort();
}

void load(std::string_view text, const Environment& env, ConfigUse use) {
  // A base directory that does not exist: relative file names (token_file) cannot be opened.
  const auto config = parseConfig(text, "fuzz.yaml", "/nonexistent/countersign-fuzz", env, use);
  if (!config) {
    check(config.error().message.starts_with("fuzz.yaml"));
    return;
  }
  const auto again = parseConfig(text, "fuzz.yaml", "/nonexistent/countersign-fuzz", env, use);
  check(again.has_value() && again->routes.size() == config->routes.size() &&
        again->nats.servers == config->nats.servers && again->admin.tokens.size() == config->admin.tokens.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  // A token_file with an absolute path would make the loader read this machine's files (a FIFO or
  // /dev/zero never ends a line): such inputs are not run.
  if (text.find("token_file") != std::string_view::npos && text.find('/') != std::string_view::npos) {
    return 0;
  }
  load(text, {}, ConfigUse::gateway);
  load(text, {}, ConfigUse::bridge);
  const Environment env{{"COUNTERSIGN_NATS_URL", "nats://a:4222,nats://b:4222"},
                        {"COUNTERSIGN_PREFIX", "cs"},
                        {"COUNTERSIGN_ADMIN_LISTEN", "127.0.0.1:0"},
                        {"COUNTERSIGN_NATS_EMBEDDED", "false"}};
  load(text, env, ConfigUse::gateway);
  return 0;
}
