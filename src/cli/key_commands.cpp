// `countersign keys generate|show` and `countersign receipt verify` (docs/receipts.md).
#include <CLI/CLI.hpp>
#include <nats/nats.h>

#include <iostream>
#include <iterator>
#include <memory>

#include "client.hpp"
#include "commands.hpp"
#include "countersign/config.hpp"
#include "countersign/nkeys.hpp"
#include "countersign/receipt.hpp"
#include "core/json_writer.hpp"
#include "nats/message_convert.hpp"

namespace countersign::cli {
namespace {

struct KeyOptions {
  std::string out;          // keys generate --out
  std::string config_path;  // keys show --config
  ClientOptions client;     // receipt verify --server/--config
  std::string key;          // receipt verify --key
  std::string subject;      // receipt verify --subject (else stdin)
  std::string target;       // receipt verify --target (stdin: the subject it arrived on)
  int count = 1;
  bool json = false;
};

int keysGenerate(const KeyOptions& options) {
  const nkeys::Seed seed = nkeys::generateSeed();
  const std::string public_key = nkeys::encodePublicKey(nkeys::publicKeyOf(seed));
  if (!options.out.empty()) {
    if (auto written = nkeys::writeSeedFile(options.out, seed); !written) {
      std::cerr << "countersign: " << written.error().message << '\n';
      return kExitRefused;
    }
    if (options.json) {
      std::cout << detail::JsonObjectWriter().field("public_key", public_key).field("seed_file", options.out).finish()
                << '\n';
      return kExitOk;
    }
    std::cerr << "seed written to " << options.out << " (mode 0600); public key:\n";
  } else if (options.json) {
    std::cout << detail::JsonObjectWriter().field("public_key", public_key).field("seed", nkeys::encodeSeed(seed)).finish()
              << '\n';
    return kExitOk;
  } else {
    std::cout << nkeys::encodeSeed(seed) << '\n';
  }
  std::cout << public_key << '\n';
  return kExitOk;
}

int keysShow(const KeyOptions& options) {
  const std::string path = options.config_path.empty() ? "config/countersign.yaml" : options.config_path;
  auto config = loadConfig(path, processEnvironment());
  if (!config) {
    std::cerr << "countersign: " << config.error().message << '\n';
    return kExitUsage;
  }
  auto seed = nkeys::readSeedFile(config->receipts.seed_file);
  if (!seed) {
    std::cerr << "countersign: receipts.seed_file: " << seed.error().message
              << (seed.error().code == Errc::io ? "\n(countersign creates it at its first start)" : "")
              << '\n';
    return kExitRefused;
  }
  const std::string public_key = nkeys::encodePublicKey(nkeys::publicKeyOf(*seed));
  if (options.json) {
    std::cout << detail::JsonObjectWriter()
                     .field("public_key", public_key)
                     .field("seed_file", config->receipts.seed_file)
                     .finish()
              << '\n';
  } else {
    std::cout << public_key << '\n';
  }
  return kExitOk;
}

// A message on stdin: optional "NATS/1.0" line, "Name: value" header lines, an empty line, then
// the payload to the end. No header lines at all: an empty first line, then the payload.
Result<Message> readMessage(std::istream& in, const std::string& subject) {
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Message message;
  message.subject = subject;
  std::size_t at = 0;
  bool first = true;
  while (true) {
    const std::size_t end = text.find('\n', at);
    if (end == std::string::npos) return fail(Errc::invalid_argument, "no empty line after the headers");
    std::string_view line(text.data() + at, end - at);
    at = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) break;
    if (first && line.starts_with("NATS/1.0")) {
      first = false;
      continue;
    }
    first = false;
    const auto colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      return fail(Errc::invalid_argument, "not a header line: " + std::string(line));
    }
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    message.headers.emplace_back(std::string(line.substr(0, colon)), std::string(value));
  }
  message.payload = text.substr(at);
  return message;
}

std::string yesNo(bool value) { return value ? "yes" : "NO"; }

// Prints the check; true when the receipt is valid for this message.
bool report(const Message& message, const receipt::Check& check, bool target_given, bool json) {
  const bool ok = check.ok() || (!target_given && check.signature_valid && check.hash_matches &&
                                 check.msg_id_matches);
  if (json) {
    detail::JsonObjectWriter w;
    w.field("subject", message.subject)
        .field("valid", ok)
        .field("present", check.present)
        .field("signature_valid", check.signature_valid)
        .field("signed_by_other_key", check.signed_by_other_key)
        .field("hash_matches", check.hash_matches)
        .field("target_matches", check.target_matches)
        .field("msg_id_matches", check.msg_id_matches)
        .field("job_hash", check.claims.job_hash)
        .field("recomputed_hash", check.recomputed_hash)
        .field("approval_id", check.claims.approval_id.value_or(""))
        .field("problem", ok ? std::string() : check.problem);
    std::cout << w.finish() << '\n';
    return ok;
  }
  std::cout << (message.subject.empty() ? "message" : message.subject) << ": receipt "
            << (ok ? "VALID" : "INVALID") << '\n';
  if (!check.present || !check.well_formed) {
    std::cout << "  " << check.problem << '\n';
    return false;
  }
  const auto& c = check.claims;
  std::cout << "  signature with the given key: " << yesNo(check.signature_valid)
            << (check.signed_by_other_key ? " (signed with another key)" : "") << '\n'
            << "  job hash recomputed from the message matches: " << yesNo(check.hash_matches) << " ("
            << check.recomputed_hash << ")\n"
            << "  target " << c.target << ": "
            << (target_given ? yesNo(check.target_matches) : std::string("not checked (give --target)")) << '\n'
            << "  msg_id " << (c.msg_id.empty() ? "(none)" : c.msg_id) << ": " << yesNo(check.msg_id_matches) << '\n';
  if (c.approval_id) {
    std::string approvers;
    for (const auto& name : c.approvers) approvers += (approvers.empty() ? "" : ",") + name;
    std::cout << "  approval " << *c.approval_id << " by " << approvers << " at " << c.decided_at << '\n';
  } else {
    std::cout << "  allowed by policy at " << c.decided_at << '\n';
  }
  std::cout << "  rule " << c.rule << ", policy " << c.policy_snapshot << ", received on " << c.subject << '\n';
  if (!ok) std::cout << "  problem: " << check.problem << '\n';
  return ok;
}

int receiptVerify(const KeyOptions& options) {
  auto key = nkeys::parsePublicKey(options.key);
  if (!key) {
    std::cerr << "countersign: --key: " << key.error().message << '\n';
    return kExitUsage;
  }
  if (options.subject.empty()) {
    auto message = readMessage(std::cin, options.target);
    if (!message) {
      std::cerr << "countersign: stdin: " << message.error().message << '\n';
      return kExitUsage;
    }
    const bool target_given = !options.target.empty();
    auto check = receipt::verify(*message, *key);
    if (!target_given && check.well_formed) {
      // Without the subject it arrived on, the hash is recomputed for the receipt's target.
      message->subject = check.claims.target;
      check = receipt::verify(*message, *key);
    }
    return report(*message, check, target_given, options.json) ? kExitOk : kExitRefused;
  }

  const auto target = resolveTarget(options.client);
  if (!target) return kExitUsage;
  auto connection = connectTo(*target);
  if (!connection) return kExitUnreachable;
  natsSubscription* raw = nullptr;
  if (natsConnection_SubscribeSync(&raw, connection->raw(), options.subject.c_str()) != NATS_OK) {
    std::cerr << "countersign: cannot subscribe to " << options.subject << ": " << nats_GetLastError(nullptr) << '\n';
    return kExitUsage;
  }
  const RetiringSubscription subscription(*connection, raw);  // others may go on publishing
  (void)natsConnection_Flush(connection->raw());
  if (!options.json) std::cerr << "waiting for " << options.count << " message(s) on " << options.subject << "...\n";
  bool all_ok = true;
  for (int i = 0; i < options.count; ++i) {
    natsMsg* received = nullptr;
    const natsStatus status = natsSubscription_NextMsg(&received, subscription.get(), options.client.timeout_ms);
    if (status != NATS_OK) {
      std::cerr << "countersign: no message on " << options.subject << " within "
                << options.client.timeout_ms << " ms\n";
      return kExitUnreachable;
    }
    const natsio::NatsMsgPtr owned(received);
    auto message = natsio::fromNatsMsg(received);
    if (!message) {
      std::cerr << "countersign: a message with malformed headers: " << message.error().message << '\n';
      all_ok = false;
      continue;
    }
    all_ok = report(*message, receipt::verify(*message, *key), true, options.json) && all_ok;
  }
  return all_ok ? kExitOk : kExitRefused;
}

}  // namespace

std::function<std::optional<int>()> addKeyCommands(CLI::App& app) {
  auto options = std::make_shared<KeyOptions>();
  options->client.timeout_ms = 60000;
  auto* keys = app.add_subcommand("keys", "nkeys: make an approver's key; show countersign's receipt key");
  keys->require_subcommand(1);
  auto* generate = keys->add_subcommand("generate", "make a user nkey: the seed (secret) and its public key");
  generate->add_option("--out,-o", options->out, "write the seed to this new file (mode 0600) instead of stdout");
  auto* show = keys->add_subcommand("show", "print the public key countersign signs receipts with");
  show->add_option("--config,-c", options->config_path, "countersign config file (default config/countersign.yaml)");
  generate->add_flag("--json", options->json, "print {\"public_key\", \"seed\"} (or \"seed_file\" with --out)");
  show->add_flag("--json", options->json, "print {\"public_key\", \"seed_file\"}");

  auto* receipt_cmd = app.add_subcommand("receipt", "check the receipt a worker's job carries");
  receipt_cmd->require_subcommand(1);
  auto* verify = receipt_cmd->add_subcommand(
      "verify", "check a message's Countersign-Receipt: read from --subject, or from stdin (headers, empty line, payload)");
  verify->add_option("--key,-k", options->key, "countersign's receipt public key (U...)")->required();
  verify->add_option("--subject", options->subject, "subscribe here and check the messages that arrive");
  verify->add_option("--count,-n", options->count, "with --subject: how many messages to check")
      ->check(CLI::Range(1, 1000000))->capture_default_str();
  verify->add_option("--target", options->target, "stdin: the subject the message arrived on");
  verify->add_option("--server,-s", options->client.server, "NATS URL (default: $NATS_URL, else the config's)");
  verify->add_option("--config,-c", options->client.config_path, "countersign config file to read the servers from");
  verify->add_option("--timeout-ms", options->client.timeout_ms, "with --subject: how long to wait for each message")
      ->check(CLI::Range(1, 86400000))->capture_default_str();
  verify->add_flag("--json", options->json, "one JSON line per message");

  return [=]() -> std::optional<int> {
    if (generate->parsed()) return keysGenerate(*options);
    if (show->parsed()) return keysShow(*options);
    if (verify->parsed()) return receiptVerify(*options);
    return std::nullopt;
  };
}

}  // namespace countersign::cli
