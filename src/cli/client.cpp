#include "client.hpp"

#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "countersign/config.hpp"

namespace countersign::cli {

std::optional<Target> resolveTarget(const ClientOptions& options) {
  Target target;
  std::string config_path = options.config_path;
  if (config_path.empty() && std::filesystem::exists("config/countersign.yaml")) {
    config_path = "config/countersign.yaml";
  }
  if (!config_path.empty()) {
    auto config = loadConfig(config_path, processEnvironment());
    if (!config) {
      std::cerr << "countersign: " << config.error().message << '\n';
      if (!options.config_path.empty()) return std::nullopt;
    } else {
      target.server = config->nats.servers.front();
      target.prefix = config->control.prefix;
      target.audit_stream = config->audit.stream;
    }
  }
  if (const char* env = std::getenv("NATS_URL"); env != nullptr && *env != '\0') target.server = env;
  if (!options.server.empty()) target.server = options.server;
  if (target.server.empty()) target.server = "nats://127.0.0.1:4222";
  if (!options.prefix.empty()) target.prefix = options.prefix;
  return target;
}

std::unique_ptr<natsio::Connection> connectTo(const Target& target) {
  NatsConfig nats;
  nats.servers = {target.server};
  nats.name = "countersign-cli";
  auto connection = natsio::Connection::connect(nats, "", false);
  if (!connection) {
    std::cerr << "countersign: cannot connect to " << target.server << ": "
              << connection.error().message << "\n(set --server, NATS_URL or --config)\n";
    return nullptr;
  }
  return std::move(*connection);
}

}  // namespace countersign::cli
