// `countersign run`: the arguments, the config and the policy; the Gateway does the rest.
// (`run --check` is configCheck, in policy_commands.cpp.)
#include <iostream>

#include "app/gateway.hpp"
#include "commands.hpp"
#include "countersign/config.hpp"
#include "countersign/log.hpp"
#include "countersign/policy.hpp"

namespace countersign::cli {
namespace {

constexpr int kExitConfig = 2;

LogLevel parseLevel(const std::string& text) {
  if (text == "debug") return LogLevel::debug;
  if (text == "warn") return LogLevel::warn;
  if (text == "error") return LogLevel::error;
  return LogLevel::info;
}

}  // namespace

int runGateway(const RunOptions& options) {
  auto loaded = loadConfig(options.config_path, processEnvironment());
  if (!loaded) {
    std::cerr << "countersign: " << loaded.error().message << '\n';
    return kExitConfig;
  }
  auto policy = Policy::loadFile(loaded->policy.file);
  if (!policy) {
    std::cerr << "countersign: " << policy.error().message << '\n';
    return kExitConfig;
  }
  StreamLogger log(options.log_format == "text" ? LogFormat::text : LogFormat::json,
                   parseLevel(options.log_level));
  app::Gateway gateway(std::move(*loaded), std::move(*policy), log);
  return gateway.run();
}

}  // namespace countersign::cli
