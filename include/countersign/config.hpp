// countersign's configuration file (docs/configuration.md), validated once into an immutable value.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "countersign/approvers.hpp"
#include "countersign/bridge_config.hpp"
#include "countersign/policy.hpp"
#include "countersign/result.hpp"

namespace countersign {

struct NatsConfig {
  std::vector<std::string> servers{"nats://127.0.0.1:4222"};
  bool embedded = false;         // start a local nats-server child with JetStream
  std::string data_dir = "data";  // resolved against the config file's folder
  std::string server_binary = "nats-server";  // for embedded mode (searched on PATH)
  std::string credentials;       // optional .creds file
  std::string tls_ca;            // optional
  std::string tls_cert;          // optional
  std::string tls_key;           // optional
  // Set by the CLI's --user/--password, --token and --nkey (not read from the config file).
  std::string user;
  std::string password;
  std::string token;
  std::string nkey_seed_file;    // a file holding a user nkey seed (SU...)
  std::string name = "countersign";  // connection name shown by the server
  // Prefix of countersign's own reply inboxes (KV, JetStream and request replies). Empty:
  // cnats' "_INBOX". Give countersign its own (e.g. "_CS_INBOX") so that producers allowed to
  // subscribe "_INBOX.>" cannot read answers meant for countersign (deploy/nats/README.md).
  std::string inbox_prefix;
};

struct PolicyConfig {
  std::string file;   // resolved against the config file's folder
  bool watch = true;  // reload when the file changes (SIGHUP always reloads)
};

struct StoreConfig {
  std::string bucket = "countersign_approvals";
  int replicas = 1;
  std::chrono::seconds max_age{0};  // 0: records never age out
};

enum class RouteMode { core, jetstream };

struct RouteConfig {
  std::string name;
  std::string from;
  std::string to;
  RouteMode mode = RouteMode::core;
  std::string to_stream;  // empty: releases are core publishes (at most once)
  std::string queue = "countersign";  // queue group shared by replicas
  Labels labels;
  // mode: jetstream only. Empty: COUNTERSIGN_<NAME> (upper-cased, '-' -> '_') and
  // countersign-<name>.
  std::string ingress_stream;
  std::string durable;
  // mode: jetstream only: how long a taken job may stay unacked before it is redelivered.
  std::chrono::milliseconds ack_wait{30000};
};

struct ControlConfig {
  std::string prefix = "countersign";
  std::vector<std::string> reply_subjects{"_INBOX.>"};
};

// A bearer token of the admin HTTP API, mapped to the approver name it acts as (a person of
// `approvers.people` when the registry exists).
struct ApiToken {
  std::string approver;
  std::string token;  // resolved at load from token_env / token_file / token
  enum class Scope { read, approve } scope = Scope::approve;
};

struct AdminConfig {
  std::string listen = "127.0.0.1:9464";  // empty: no admin listener
  std::vector<ApiToken> tokens;           // admin.tokens[]: {approver, token_env|token_file|token, scope}
  // Open connections at most; beyond it the longest-idle one is closed to admit a new one.
  int max_connections = 1024;
};

struct ReleaseConfig {
  std::chrono::milliseconds replay_interval{1000};
  std::chrono::milliseconds lease{5000};
  std::chrono::milliseconds publish_timeout{5000};
};

struct EventsConfig {
  bool allowed = false;          // `allowed` events are off by default (volume)
  bool include_payload = false;  // put the job's payload (redacted) into held/approved events
  // Payload fields replaced by "[REDACTED]" in events and in get/show: dotted JSON paths
  // ("card.number", "customer.email").
  std::vector<std::string> redact;
};

// The audit trail: a JetStream stream over <prefix>.events.> (created at start when missing;
// file storage, deny delete and purge). Events carry a hash chain (docs/audit.md).
struct AuditConfig {
  bool enabled = true;
  std::string stream = "COUNTERSIGN_AUDIT";
  int replicas = 1;
  std::chrono::seconds max_age{0};  // 0: kept forever
  // countersign's public key (U...; `countersign keys show`), trusted beside the gateway's own
  // when events are read back: the bridge checks every event's signature with it (or with the
  // key of a readable receipts.seed_file), and refuses to start with neither (docs/audit.md).
  std::string public_key;
};

// Receipts: countersign's own Ed25519 nkey signs a receipt on every released job and, with
// `allowed`, on every allowed job (docs/receipts.md). The seed file is created (mode 0600) at
// the first start when it does not exist.
struct ReceiptsConfig {
  std::string seed_file = "receipt.nk";
  bool allowed = true;
};

// How much work runs at the same time (each a thread with its own KV round trips in flight).
struct ConcurrencyConfig {
  int holds = 1024;  // core-route holds whose KV create is in flight at once (then intake waits)
  int control = 8;   // queue subscribers per control subject (approve, reject, ...) and process
  // Bytes of jobs a core route may hold in memory, twice over: jobs received and not yet taken
  // (beyond it a job is answered 503 "overloaded" at once), and held jobs whose record's create
  // is in flight (beyond it too: 503 "overloaded"). docs/configuration.md.
  int intake_bytes = 64 * 1024 * 1024;
  // Threads that sign allowed jobs' receipts in parallel (the jobs still go out in arrival
  // order); 0: each core route signs in line on its own intake thread. -1 (unset): half the
  // cores (at most 8) on a machine with 4 or more, else 0. docs/configuration.md.
  int receipt_signers = -1;
};

struct Config {
  NatsConfig nats;
  PolicyConfig policy;
  StoreConfig store;
  std::vector<RouteConfig> routes;
  ControlConfig control;
  AdminConfig admin;
  ReleaseConfig release;
  EventsConfig events;
  AuditConfig audit;
  ReceiptsConfig receipts;
  ConcurrencyConfig concurrency;
  SlackConfig slack;    // read by `countersign bridge`; `run` ignores it
  NotifyConfig notify;  // read by `countersign bridge`; `run` ignores it
  // The approver registry; absent: open mode (an approve/reject's `approver` is a claim guarded
  // only by NATS permissions on the control subjects).
  std::optional<ApproverRegistry> approvers;
  std::string source;  // the file it came from, for messages
};

using Environment = std::map<std::string, std::string, std::less<>>;

// Parses and validates. Unknown keys, wrong types and impossible values fail with the key's
// full path (`routes[0].mode: expected core or jetstream, got "jetsream"`). Relative paths are
// resolved against `base_dir`. Environment overrides (applied after the file, validated the
// same way): COUNTERSIGN_NATS_URL (comma-separated servers), COUNTERSIGN_NATS_EMBEDDED
// (true/false), COUNTERSIGN_DATA_DIR, COUNTERSIGN_POLICY_FILE, COUNTERSIGN_BUCKET,
// COUNTERSIGN_PREFIX, COUNTERSIGN_ADMIN_LISTEN.
// Who reads the file: the gateway needs `policy` and `routes`; the bridge (`countersign bridge`)
// needs `slack` and/or `notify` and may leave `policy` and `routes` out.
enum class ConfigUse { gateway, bridge };
Result<Config> parseConfig(std::string_view yaml_text, std::string_view source,
                           const std::string& base_dir, const Environment& env = {},
                           ConfigUse use = ConfigUse::gateway);
Result<Config> loadConfig(const std::string& path, const Environment& env = {},
                          ConfigUse use = ConfigUse::gateway);

// The process environment as an Environment (only COUNTERSIGN_* variables).
Environment processEnvironment();

}  // namespace countersign
