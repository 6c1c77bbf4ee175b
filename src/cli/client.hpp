// What the client subcommands share: where countersign is, who to connect as, a connection to
// it, and what a failed request means.
#pragma once

#include <nats/nats.h>

#include <memory>
#include <optional>
#include <string>

#include "commands.hpp"
#include "countersign/config.hpp"
#include "nats/connection.hpp"

namespace countersign::cli {

// Exit codes, the same for the same outcome in every command (docs/cli.md).
inline constexpr int kExitOk = 0;
inline constexpr int kExitRefused = 1;      // a 4xx/5xx answer, a failed check, a permission refused
inline constexpr int kExitUsage = 2;        // bad options, an invalid config or policy file
inline constexpr int kExitUnreachable = 3;  // no server, or no answer

struct Target {
  NatsConfig nats;     // servers, credentials, TLS
  std::string server;  // the first server, for messages (credentials masked)
  std::string prefix = "countersign";
  std::string audit_stream = "COUNTERSIGN_AUDIT";
  std::string receipt_seed_file;  // the config's receipts.seed_file ("" without a config)
};

// Servers: --server, else NATS_URL, else the --context's url, else --config's (or
// ./config/countersign.yaml's) servers, else nats://127.0.0.1:4222. Credentials and TLS: the
// flags (and their NATS_* variables), else the context's, else the config's. Prints the reason
// and returns nullopt when --config or --context is unreadable.
std::optional<Target> resolveTarget(const ClientOptions& options);

// Connects (printing a hint, never a password, on failure).
std::unique_ptr<natsio::Connection> connectTo(const Target& target);

// Resolves and connects; on failure prints why and sets `exit_code`.
std::unique_ptr<natsio::Connection> connectFor(const ClientOptions& options, Target& target, int& exit_code);

// Owns a subscription of `connection` that the server may still be sending to (an inbox a late
// answer may reach, a subject others publish on): at the end, Connection::retire() unsubscribes,
// makes a round trip and only then frees it, so cnats' reader thread never hands a message to a
// freed subscription. The connection must outlive it (declare it after the connection).
class RetiringSubscription {
 public:
  RetiringSubscription(natsio::Connection& connection, natsSubscription* sub) : connection_(connection), sub_(sub) {}
  ~RetiringSubscription() { connection_.retire(sub_); }
  RetiringSubscription(const RetiringSubscription&) = delete;
  RetiringSubscription& operator=(const RetiringSubscription&) = delete;
  natsSubscription* get() const { return sub_; }

 private:
  natsio::Connection& connection_;
  natsSubscription* sub_;
};

// Prints why a request on `subject` got no answer: a permission refused by the server (with
// the server's words), nobody subscribed, or a timeout. Returns the exit code for it.
int reportNoAnswer(natsConnection* connection, natsStatus status, const std::string& subject,
                   const Target& target, std::string_view hint);

// The directory of the `nats` CLI's contexts: $XDG_CONFIG_HOME/nats/context, else
// $HOME/.config/nats/context.
std::string natsContextDir();

}  // namespace countersign::cli
