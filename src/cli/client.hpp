// What the client subcommands share: where countersign is, and a connection to it.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "commands.hpp"
#include "nats/connection.hpp"

namespace countersign::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitRefused = 1;      // a 4xx/5xx answer, or a failed check
inline constexpr int kExitUsage = 2;        // bad options or config
inline constexpr int kExitUnreachable = 3;  // no server or no answer

struct Target {
  std::string server;
  std::string prefix = "countersign";
  std::string audit_stream = "COUNTERSIGN_AUDIT";
};

// --server, else NATS_URL, else --config's (or ./config/countersign.yaml's) first server, else
// nats://127.0.0.1:4222. Prints the reason and returns nullopt when --config is unreadable.
std::optional<Target> resolveTarget(const ClientOptions& options);

// Connects (printing a hint on failure).
std::unique_ptr<natsio::Connection> connectTo(const Target& target);

}  // namespace countersign::cli
