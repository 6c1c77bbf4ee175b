// countersign: one binary, subcommands. main only parses the command line and wires.
#include <CLI/CLI.hpp>

#include <cstdlib>
#include <cstring>
#include <iostream>

#include "client.hpp"
#include "commands.hpp"
#include "countersign/version.hpp"
#include "output.hpp"

namespace {

using countersign::cli::ClientOptions;

std::string defaultApprover() {
  if (const char* user = std::getenv("USER"); user != nullptr && *user != '\0') return user;
  return "cli";
}

// The connection options of every client command, named as the `nats` CLI names them.
void addClientOptions(CLI::App* command, ClientOptions& client) {
  command->add_option("--server,-s", client.server, "NATS URL(s), comma-separated (default: $NATS_URL, else the context's, else the config's)");
  command->add_option("--config,-c", client.config_path, "countersign config file to read the servers and prefix from");
  command->add_option("--context", client.context, "use the `nats` CLI context NAME (~/.config/nats/context/NAME.json)")
      ->envname("NATS_CONTEXT");
  command->add_option("--creds", client.creds, "NATS user credentials file")->envname("NATS_CREDS");
  command->add_option("--user", client.user, "NATS user name")->envname("NATS_USER");
  command->add_option("--password", client.password, "NATS password")->envname("NATS_PASSWORD");
  command->add_option("--token", client.token, "NATS token")->envname("NATS_TOKEN");
  command->add_option("--nkey", client.nkey, "NATS user nkey seed file")->envname("NATS_NKEY");
  command->add_option("--tlscert", client.tls_cert, "TLS client certificate")->envname("NATS_CERT");
  command->add_option("--tlskey", client.tls_key, "TLS client key")->envname("NATS_KEY");
  command->add_option("--tlsca", client.tls_ca, "TLS certificate authority chain")->envname("NATS_CA");
  command->add_option("--inbox-prefix", client.inbox_prefix, "prefix of the reply inboxes (default _INBOX)");
  command->add_option("--prefix", client.prefix, "control subject prefix (default: the config's, else countersign)");
  command->add_flag("--json", client.json, "print JSON (docs/cli.md gives each command's shape)");
  command->add_option("--timeout-ms", client.timeout_ms, "how long to wait for an answer")->check(CLI::Range(1, 600000));
}

// A mistyped subcommand gets a suggestion instead of the usage: `countersign aprove` ->
// did you mean "approve"? Returns true when it printed one.
bool suggestSubcommand(CLI::App& app, int argc, char** argv) {
  CLI::App* level = &app;
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    if (word.empty() || word[0] == '-') return false;
    std::vector<std::string> names;
    CLI::App* next = nullptr;
    for (auto* sub : level->get_subcommands([](CLI::App*) { return true; })) {
      names.push_back(sub->get_name());
      if (sub->get_name() == word) next = sub;
    }
    if (names.empty()) return false;
    if (next != nullptr) {
      level = next;
      continue;
    }
    if (!level->get_require_subcommand_min()) return false;  // a positional argument, not a command
    const std::string close = countersign::cli::closestName(word, names);
    std::cerr << "countersign: unknown command \"" << word << "\"";
    if (!close.empty()) std::cerr << ". Did you mean \"" << close << "\"?";
    std::cerr << "\nRun `" << (level == &app ? std::string("countersign") : "countersign " + level->get_name())
              << " --help` for the list.\n";
    return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace countersign::cli;
  CLI::App app{"countersign: human approval for NATS job pipelines"};
  app.name("countersign");
  app.require_subcommand(1);
  app.set_version_flag("--version", "countersign " COUNTERSIGN_VERSION " (commit " COUNTERSIGN_GIT_COMMIT ")");
  app.footer("Exit codes: 0 ok, 1 refused or failed (a 4xx/5xx answer, a failed check, a permission "
             "refused), 2 usage or invalid config/policy, 3 no server or no answer. docs/cli.md has the details.");

  RunOptions run;
  auto* run_cmd = app.add_subcommand("run", "run the gateway");
  run_cmd->add_option("--config,-c", run.config_path, "config file")->capture_default_str();
  run_cmd->add_flag("--check", run.check, "validate the config and the policy, then exit");
  run_cmd->add_option("--log-format", run.log_format, "json or text")
      ->check(CLI::IsMember({"json", "text"}))->capture_default_str();
  run_cmd->add_option("--log-level", run.log_level, "debug, info, warn or error")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}))->capture_default_str();
  run_cmd->add_flag("--json", run.json, "with --check: print the result as JSON; otherwise JSON logs (the default)");

  RunOptions bridge;
  auto* bridge_cmd = app.add_subcommand("bridge", "run the Slack bridge and webhook notifier");
  bridge_cmd->add_option("--config,-c", bridge.config_path, "config file")->capture_default_str();
  bridge_cmd->add_flag("--check", bridge.check, "validate the config, tokens and key, then exit");
  bridge_cmd->add_flag("--json", bridge.json, "with --check: print the result as JSON; otherwise JSON logs (the default)");
  bridge_cmd->add_option("--log-format", bridge.log_format, "json or text")
      ->check(CLI::IsMember({"json", "text"}))->capture_default_str();
  bridge_cmd->add_option("--log-level", bridge.log_level, "debug, info, warn or error")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}))->capture_default_str();

  auto* policy_cmd = app.add_subcommand("policy", "check or explain a policy file");
  policy_cmd->require_subcommand(1);
  std::string check_file;
  bool check_json = false;
  auto* check_cmd = policy_cmd->add_subcommand("check", "validate a policy file and print its snapshot");
  check_cmd->add_option("file", check_file, "policy file")->required();
  check_cmd->add_flag("--json", check_json, "print the result as JSON");
  ExplainOptions explain;
  auto* explain_cmd = policy_cmd->add_subcommand("explain", "show how a policy decides one job");
  explain_cmd->add_option("file", explain.file, "policy file")->required();
  explain_cmd->add_option("--subject", explain.subject, "subject the job is published on")->required();
  explain_cmd->add_option("--route-from", explain.route_from, "the route's from pattern")->capture_default_str();
  explain_cmd->add_option("--payload", explain.payload, "the job's payload (JSON or any text)");
  explain_cmd->add_option("--header", explain.headers, "a header K=V (repeatable)");
  explain_cmd->add_option("--label", explain.labels, "a route label K=V (repeatable)");
  explain_cmd->add_flag("--json", explain.json, "print the explanation as JSON");

  ClientOptions client;
  std::string id;
  std::string approver = defaultApprover();
  std::string key_file;
  std::string reason;
  std::string job_hash;
  auto* approve_cmd = app.add_subcommand("approve", "approve a held job (it is released once)");
  approve_cmd->add_option("id", id, "approval id (or the job id)")->required();
  approve_cmd->add_option("--as", approver, "approver name recorded with the decision (default: $USER)");
  approve_cmd->add_option("--reason,-r", reason, "why");
  approve_cmd->add_option("--job-hash", job_hash, "the job hash you reviewed (refused if the job differs)");
  approve_cmd->add_option("--key", key_file, "sign the approval with this nkey seed file (countersign keys generate)");
  addClientOptions(approve_cmd, client);
  auto* reject_cmd = app.add_subcommand("reject", "reject a held job");
  reject_cmd->add_option("id", id, "approval id (or the job id)")->required();
  reject_cmd->add_option("--as", approver, "approver name recorded with the decision (default: $USER)");
  reject_cmd->add_option("--reason,-r", reason, "why");
  reject_cmd->add_option("--key", key_file, "sign the rejection with this nkey seed file");
  addClientOptions(reject_cmd, client);
  auto* show_cmd = app.add_subcommand("show", "show one approval record");
  show_cmd->add_option("id", id, "approval id (or the job id)")->required();
  addClientOptions(show_cmd, client);
  std::string state = "pending";
  int limit = 100;
  auto* pending_cmd = app.add_subcommand("pending", "list approvals (pending by default)");
  pending_cmd->add_option("--state", state, "pending, approved, released, rejected, expired, release_unknown or all")
      ->capture_default_str();
  pending_cmd->add_option("--limit", limit, "at most this many")->check(CLI::Range(1, 1000))->capture_default_str();
  std::string after;
  pending_cmd->add_option("--after", after, "start after this approval id (paging)");
  addClientOptions(pending_cmd, client);

  std::string who = approver;
  std::string mode;
  auto* release_cmd = app.add_subcommand("release", "operator decision on an approved job whose release is unknown");
  release_cmd->add_option("id", id, "approval id")->required();
  auto* mode_group = release_cmd->add_option_group("mode", "what to do");
  bool force = false;
  bool mark = false;
  mode_group->add_flag("--force", force, "publish it again (same Nats-Msg-Id), whatever the duplicate window");
  mode_group->add_flag("--mark-released", mark, "record it as released without publishing (you checked the worker got it)");
  mode_group->require_option(1);
  release_cmd->add_option("--as", who, "operator name recorded with the decision (default: $USER)");
  release_cmd->add_option("--reason,-r", reason, "why");
  addClientOptions(release_cmd, client);

  std::string submit_subject;
  std::string submit_payload;
  std::vector<std::string> submit_headers;
  auto* submit_cmd = app.add_subcommand("submit", "publish a job as a producer would, and print countersign's decision");
  submit_cmd->add_option("subject", submit_subject, "e.g. agents.jobs.finance.payment.execute")->required();
  submit_cmd->add_option("payload", submit_payload, "the job's payload (JSON or any text)");
  submit_cmd->add_option("--header", submit_headers, "a header K=V (repeatable)");
  addClientOptions(submit_cmd, client);

  WatchOptions watch;
  auto* watch_cmd = app.add_subcommand("watch", "tail decisions and releases as they happen, in words");
  watch_cmd->add_option("--topic", watch.topic, "only jobs whose topic matches this pattern")->capture_default_str();
  watch_cmd->add_option("--event", watch.events, "only this event (repeatable): held, approved, released, denied, ...");
  watch_cmd->add_option("--count", watch.count, "stop after this many events")->check(CLI::Range(1, 1000000));
  watch_cmd->add_option("--key", watch.keys,
                        "a trusted countersign public key, U... (repeatable): events it did not sign are marked "
                        "NOT VERIFIED; the key of the config's receipts.seed_file is trusted too when it can be read");
  addClientOptions(watch_cmd, client);

  auto* audit_cmd = app.add_subcommand("audit", "the event trail of one approval; `audit verify` checks the chains");
  std::string audit_id;
  audit_cmd->add_option("id", audit_id, "approval id");
  auto* verify_cmd = audit_cmd->add_subcommand("verify", "verify the audit stream's hash chains and signatures");
  AuditVerifyOptions audit_verify;
  audit_cmd->add_option("--key", audit_verify.keys,
                        "a trusted countersign public key, U... (repeatable): each event is marked verified or "
                        "not; the key of the config's receipts.seed_file is trusted too when it can be read");
  verify_cmd->add_option("--key", audit_verify.keys,
                         "a trusted countersign public key, U... (repeatable; `countersign keys show` prints it); "
                         "the key of the config's receipts.seed_file is trusted too when it can be read");
  verify_cmd->add_option("--from", audit_verify.from,
                         "check from this stream sequence on (events written before countersign signed them)");
  addClientOptions(audit_cmd, client);
  addClientOptions(verify_cmd, client);

  const auto run_key_commands = addKeyCommands(app);

  if (suggestSubcommand(app, argc, argv)) return kExitUsage;
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);  // --help, --version
  } catch (const CLI::ParseError& e) {
    app.exit(e);       // prints the message and the usage
    return kExitUsage;  // usage errors always exit 2
  }

  if (run_cmd->parsed()) return run.check ? configCheck(run) : runGateway(run);
  if (bridge_cmd->parsed()) return bridgeCommand(bridge);
  if (const auto code = run_key_commands()) return *code;
  if (check_cmd->parsed()) return policyCheck(check_file, check_json);
  if (explain_cmd->parsed()) return policyExplain(explain);
  if (approve_cmd->parsed()) return approveCommand(client, id, approver, reason, job_hash, key_file);
  if (reject_cmd->parsed()) return rejectCommand(client, id, approver, reason, key_file);
  if (show_cmd->parsed()) return showCommand(client, id);
  if (pending_cmd->parsed()) return pendingCommand(client, state, limit, after);
  if (release_cmd->parsed()) return releaseCommand(client, id, who, force ? "force" : "mark_released", reason);
  if (submit_cmd->parsed()) return submitCommand(client, submit_subject, submit_payload, submit_headers);
  if (watch_cmd->parsed()) {
    watch.limit_wait = watch_cmd->get_option("--timeout-ms")->count() > 0;
    return watchCommand(client, watch);
  }
  if (verify_cmd->parsed()) return auditVerifyCommand(client, audit_verify);
  if (audit_cmd->parsed()) {
    if (audit_id.empty()) {
      std::cerr << "countersign: audit: give an approval id, or `audit verify`\n";
      return kExitUsage;
    }
    return auditCommand(client, audit_id, audit_verify);
  }
  std::cerr << app.help();
  return kExitUsage;
}
