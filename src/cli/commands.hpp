// The subcommands of the countersign binary. Each returns the process exit code.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "countersign/events.hpp"

namespace CLI {
class App;
}

namespace countersign::cli {

struct Target;

struct RunOptions {
  std::string config_path = "config/countersign.yaml";
  bool check = false;
  std::string log_format = "json";
  std::string log_level = "info";
  bool json = false;  // --check: print the result as JSON
};
int runGateway(const RunOptions& options);
// `run --check`: validates the config and its policy; exit 0, or 2 when either is invalid.
int configCheck(const RunOptions& options);

int policyCheck(const std::string& file, bool json);

// `countersign bridge`: the Slack bridge and webhook notifier (same options as `run`).
int bridgeCommand(const RunOptions& options);

struct ExplainOptions {
  std::string file;
  std::string subject;
  std::string route_from = "agents.jobs.>";
  std::string payload;
  std::vector<std::string> headers;  // K=V
  std::vector<std::string> labels;   // K=V (route labels)
  bool json = false;
};
int policyExplain(const ExplainOptions& options);

// Talking to a running countersign over its control subjects.
struct ClientOptions {
  std::string server;       // --server, else NATS_URL, else the context's, else the config's first server
  std::string config_path;  // --config: prefix and servers from it
  std::string prefix;       // --prefix (default from config, else "countersign")
  bool json = false;        // print the raw JSON reply
  int timeout_ms = 5000;
  // Who to connect as (flags and NATS_* variables win over the context's values).
  std::string context;      // --context NAME: the `nats` CLI's ~/.config/nats/context/NAME.json
  std::string creds;        // --creds FILE
  std::string user;         // --user (NATS_USER)
  std::string password;     // --password (NATS_PASSWORD)
  std::string token;        // --token (NATS_TOKEN)
  std::string nkey;         // --nkey SEEDFILE
  std::string tls_cert;     // --tlscert
  std::string tls_key;      // --tlskey
  std::string tls_ca;       // --tlsca
  std::string inbox_prefix;  // --inbox-prefix: the prefix of this connection's reply inboxes
};
// --key SEEDFILE: the request is signed with that nkey seed (the record is fetched first, so
// that the signature binds the job hash and policy snapshot it shows).
int approveCommand(const ClientOptions& client, const std::string& id, const std::string& approver,
                   const std::string& reason, const std::string& job_hash, const std::string& key_file = {});
int rejectCommand(const ClientOptions& client, const std::string& id, const std::string& approver,
                  const std::string& reason, const std::string& key_file = {});
int showCommand(const ClientOptions& client, const std::string& id);
int pendingCommand(const ClientOptions& client, const std::string& state, int limit,
                   const std::string& after);
// Operator decision on an approved job whose release is unknown: mode force | mark_released.
int releaseCommand(const ClientOptions& client, const std::string& id, const std::string& who,
                   const std::string& mode, const std::string& reason);
// Publishes one job as a request (what a producer does) and prints the answer.
int submitCommand(const ClientOptions& client, const std::string& subject, const std::string& payload,
                  const std::vector<std::string>& headers);
// The event trail of one approval (each event marked by its signature check), and the
// verification of every audit chain.
struct AuditVerifyOptions {
  std::vector<std::string> keys;  // --key: trusted public keys ("U..."), beside the config's own
  std::uint64_t from = 0;         // --from: the first stream sequence to check (0: the whole stream)
};
int auditCommand(const ClientOptions& client, const std::string& id, const AuditVerifyOptions& keys);
int auditVerifyCommand(const ClientOptions& client, const AuditVerifyOptions& verify);

// Tails the events: one line in words per decision (or the event's JSON with --json).
struct WatchOptions {
  std::string topic = ">";          // the topic pattern after <prefix>.events.<event>.
  std::vector<std::string> events;  // only these events (default: all)
  int count = 0;                    // stop after this many (0: never)
  bool limit_wait = false;          // --timeout-ms given: give up when no event comes that long
  std::vector<std::string> keys;    // --key: countersign's public keys, beside the config's own
};
// The keys events are checked against: every `keys` entry (--key U...), and the public key of
// the config's receipts.seed_file when it can be read. nullopt (the reason printed) when a --key
// is not a public key.
std::optional<EventVerifier> trustedEventKeys(const std::vector<std::string>& keys, const Target& target);
int watchCommand(const ClientOptions& client, const WatchOptions& watch);

// `keys generate|show` and `receipt verify`: adds them to `app`; the returned function runs the
// one that was parsed (nullopt: none of them).
std::function<std::optional<int>()> addKeyCommands(CLI::App& app);

}  // namespace countersign::cli
