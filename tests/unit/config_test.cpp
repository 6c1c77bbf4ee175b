#include "countersign/config.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <string>

namespace countersign {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;
namespace fs = std::filesystem;

const std::string kRepo = COUNTERSIGN_SOURCE_DIR;

constexpr std::string_view kMinimal = R"(
policy:
  file: policies/p.yaml
routes:
  - name: jobs
    from: "agents.jobs.>"
    to: "jobs.>"
)";

Config parseOk(std::string_view yaml, const std::string& base_dir = "/etc/countersign",
               const Environment& env = {}) {
  auto config = parseConfig(yaml, "test.yaml", base_dir, env);
  EXPECT_TRUE(config.has_value()) << yaml << "\n-> " << (config ? "" : config.error().message);
  return config ? *config : Config{};
}

std::string refusal(std::string_view yaml, const Environment& env = {}) {
  auto config = parseConfig(yaml, "test.yaml", "/etc/countersign", env);
  if (config) return "<accepted>";
  EXPECT_EQ(
      config.error().code == Errc::invalid_argument || config.error().code == Errc::parse_error,
      true);
  return config.error().message;
}

// A folder under the temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() / ("countersign-config-test-" + std::to_string(::getpid()) +
                                         "-" + std::to_string(counter_++));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  std::string write(const std::string& name, std::string_view text) const {
    const fs::path file = path_ / name;
    fs::create_directories(file.parent_path());
    std::ofstream(file) << text;
    return file.string();
  }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

// ---- the repository's config ----------------------------------------------------------------

// The public key of the seed in the NATS nkeys README.
constexpr std::string_view kAliceKey = "UD466L6EBCM3YY5HEGHJANNTN4LSKTSUXTH7RILHCKEQMQHTBNLHJJXT";

TEST(RepoConfig, Parses) {
  const std::string path = kRepo + "/config/countersign.yaml";
  ASSERT_TRUE(fs::exists(path)) << path;
  auto config = loadConfig(path);
  ASSERT_TRUE(config.has_value()) << config.error().message;
  EXPECT_TRUE(config->nats.embedded);
  EXPECT_THAT(config->nats.servers, ElementsAre("nats://127.0.0.1:4222"));
  ASSERT_EQ(config->routes.size(), 1u);
  EXPECT_EQ(config->routes[0].name, "jobs");
  EXPECT_EQ(config->routes[0].from, "agents.jobs.>");
  EXPECT_EQ(config->routes[0].to, "jobs.>");
  EXPECT_EQ(config->routes[0].mode, RouteMode::core);
  EXPECT_EQ(config->control.prefix, "countersign");
  EXPECT_EQ(config->store.bucket, "countersign_approvals");
  EXPECT_EQ(config->source, path);
  // Relative paths are resolved against the file's folder, so the policy file is found.
  const fs::path policy_file(config->policy.file);
  EXPECT_TRUE(policy_file.is_absolute()) << config->policy.file;
  EXPECT_EQ(fs::weakly_canonical(policy_file),
            fs::weakly_canonical(kRepo + "/policies/approval-policy.yaml"));
  EXPECT_TRUE(Policy::loadFile(config->policy.file).has_value());
  EXPECT_TRUE(fs::path(config->nats.data_dir).is_absolute());
}

// ---- defaults and full schema ---------------------------------------------------------------

TEST(ConfigParse, DefaultsFillTheRest) {
  const Config config = parseOk(kMinimal);
  EXPECT_THAT(config.nats.servers, ElementsAre("nats://127.0.0.1:4222"));
  EXPECT_FALSE(config.nats.embedded);
  EXPECT_EQ(config.nats.data_dir, "/etc/countersign/data");
  EXPECT_EQ(config.nats.server_binary, "nats-server");
  EXPECT_EQ(config.nats.name, "countersign");
  EXPECT_EQ(config.policy.file, "/etc/countersign/policies/p.yaml");
  EXPECT_TRUE(config.policy.watch);
  EXPECT_EQ(config.store.bucket, "countersign_approvals");
  EXPECT_EQ(config.store.replicas, 1);
  EXPECT_EQ(config.store.max_age, std::chrono::seconds(0));
  EXPECT_EQ(config.routes[0].mode, RouteMode::core);
  EXPECT_EQ(config.routes[0].queue, "countersign");
  EXPECT_TRUE(config.routes[0].to_stream.empty());
  EXPECT_TRUE(config.routes[0].labels.empty());
  EXPECT_EQ(config.control.prefix, "countersign");
  EXPECT_THAT(config.control.reply_subjects, ElementsAre("_INBOX.>"));
  EXPECT_EQ(config.admin.listen, "127.0.0.1:9464");
  EXPECT_EQ(config.release.replay_interval, std::chrono::milliseconds(1000));
  EXPECT_EQ(config.release.lease, std::chrono::milliseconds(5000));
  EXPECT_EQ(config.release.publish_timeout, std::chrono::milliseconds(5000));
  EXPECT_FALSE(config.events.allowed);
  EXPECT_EQ(config.concurrency.holds, 1024);
  EXPECT_EQ(config.concurrency.control, 8);
  EXPECT_EQ(config.concurrency.receipt_signers, -1);  // unset: decided from the cores
}

TEST(ConfigParse, EveryField) {
  const Config config = parseOk(R"(
nats:
  servers: ["nats://a:4222", "tls://b:4223"]
  embedded: true
  data_dir: /var/lib/countersign
  server_binary: bin/nats-server
  credentials: secrets/cs.creds
  tls: {ca: tls/ca.pem, cert: tls/cert.pem, key: /abs/key.pem}
  name: cs-eu-1
policy:
  file: ../policies/p.yaml
  watch: false
store:
  bucket: approvals-eu_1
  replicas: 3
  max_age: 720h
routes:
  - name: jobs
    from: "agents.jobs.>"
    to: "jobs.>"
    mode: jetstream
    to_stream: JOBS
    queue: cs-jobs
    labels: {env: production, team: payments}
  - name: tasks
    from: "producers.*.tasks.>"
    to: "work.*.>"
control:
  prefix: cs.eu
  reply_subjects: ["_INBOX.>", "replies.*"]
admin:
  listen: "[::1]:0"
release:
  replay_interval: 500ms
  lease: 10s
  publish_timeout: 2s
events:
  allowed: true
concurrency:
  holds: 32
  control: 1
  receipt_signers: 3
)");
  EXPECT_THAT(config.nats.servers, ElementsAre("nats://a:4222", "tls://b:4223"));
  EXPECT_TRUE(config.nats.embedded);
  EXPECT_EQ(config.nats.data_dir, "/var/lib/countersign");
  EXPECT_EQ(config.nats.server_binary, "/etc/countersign/bin/nats-server");
  EXPECT_EQ(config.nats.credentials, "/etc/countersign/secrets/cs.creds");
  EXPECT_EQ(config.nats.tls_ca, "/etc/countersign/tls/ca.pem");
  EXPECT_EQ(config.nats.tls_cert, "/etc/countersign/tls/cert.pem");
  EXPECT_EQ(config.nats.tls_key, "/abs/key.pem");
  EXPECT_EQ(config.nats.name, "cs-eu-1");
  EXPECT_EQ(config.policy.file, "/etc/policies/p.yaml");
  EXPECT_FALSE(config.policy.watch);
  EXPECT_EQ(config.store.bucket, "approvals-eu_1");
  EXPECT_EQ(config.store.replicas, 3);
  EXPECT_EQ(config.store.max_age, std::chrono::hours(720));
  ASSERT_EQ(config.routes.size(), 2u);
  EXPECT_EQ(config.routes[0].mode, RouteMode::jetstream);
  EXPECT_EQ(config.routes[0].to_stream, "JOBS");
  EXPECT_EQ(config.routes[0].queue, "cs-jobs");
  EXPECT_EQ(config.routes[0].labels.at("env"), "production");
  EXPECT_EQ(config.routes[0].labels.at("team"), "payments");
  EXPECT_EQ(config.routes[1].to, "work.*.>");
  EXPECT_EQ(config.control.prefix, "cs.eu");
  EXPECT_THAT(config.control.reply_subjects, ElementsAre("_INBOX.>", "replies.*"));
  EXPECT_EQ(config.admin.listen, "[::1]:0");
  EXPECT_EQ(config.release.replay_interval, std::chrono::milliseconds(500));
  EXPECT_EQ(config.release.lease, std::chrono::seconds(10));
  EXPECT_EQ(config.release.publish_timeout, std::chrono::seconds(2));
  EXPECT_TRUE(config.events.allowed);
  EXPECT_EQ(config.concurrency.holds, 32);
  EXPECT_EQ(config.concurrency.control, 1);
  EXPECT_EQ(config.concurrency.receipt_signers, 3);
}

TEST(ConfigParse, EmptyAdminListenDisablesIt) {
  const Config config = parseOk(std::string(kMinimal) + "admin: {listen: \"\"}\n");
  EXPECT_EQ(config.admin.listen, "");
}

TEST(ConfigParse, ApproverRegistry) {
  const Config config = parseOk(std::string(kMinimal) + R"(approvers:
  require_signature: true
  people:
    - name: alice
      groups: [finance-leads]
      keys: ["UD466L6EBCM3YY5HEGHJANNTN4LSKTSUXTH7RILHCKEQMQHTBNLHJJXT"]
      slack: U024BE7LH
      email: alice@example.com
    - name: bob
  channels:
    - name: slack
      keys: ["UBX6L4RLQKYUP3FTSBPYNYRNORO2AITI4F5WCBBC2T6YJHNVXSUE2BT3"]
      may_act_for: ["group:finance-leads", bob]
admin:
  tokens: [{approver: bob, token: 0123456789abcdef0123}]
)");
  ASSERT_TRUE(config.approvers);
  EXPECT_TRUE(config.approvers->require_signature);
  ASSERT_EQ(config.approvers->people.size(), 2u);
  EXPECT_EQ(config.approvers->people[0].slack, "U024BE7LH");
  EXPECT_EQ(config.approvers->people[0].groups, std::vector<std::string>{"finance-leads"});
  ASSERT_NE(config.approvers->channel("slack"), nullptr);
  EXPECT_EQ(config.approvers->channelWithKey("UBX6L4RLQKYUP3FTSBPYNYRNORO2AITI4F5WCBBC2T6YJHNVXSUE2BT3")->name, "slack");
  EXPECT_EQ(config.approvers->personWithKey(std::string(kAliceKey))->name, "alice");
}

TEST(ConfigParse, NoApproversIsOpenMode) {
  EXPECT_FALSE(parseOk(kMinimal).approvers);
}

TEST(ConfigParse, WithoutBaseDirPathsStayAsWritten) {
  const Config config = parseOk(kMinimal, "");
  EXPECT_EQ(config.policy.file, "policies/p.yaml");
  EXPECT_EQ(config.nats.data_dir, "data");
}

// ---- refusals: each names the path ----------------------------------------------------------

struct RefusalCase {
  std::string name;
  std::string yaml;
  std::string message;
};

void PrintTo(const RefusalCase& c, std::ostream* out) {
  *out << c.name;
}

class ConfigRefusals : public ::testing::TestWithParam<RefusalCase> {};

TEST_P(ConfigRefusals, NameThePath) {
  const RefusalCase& c = GetParam();
  const std::string message = refusal(c.yaml);
  EXPECT_THAT(message, HasSubstr(c.message)) << c.yaml;
  EXPECT_THAT(message, StartsWith("test.yaml"));
}

// kMinimal with `from` replaced by `to`.
std::string with(std::string_view from, std::string_view to) {
  std::string text(kMinimal);
  const auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

std::string plus(std::string_view extra) {
  return std::string(kMinimal) + std::string(extra);
}

const std::string kRouteEnd = "to: \"jobs.>\"\n";

INSTANTIATE_TEST_SUITE_P(
    Config, ConfigRefusals,
    ::testing::Values(
        RefusalCase{"Empty", "", "test.yaml: empty document"},
        RefusalCase{"BadSyntax", "policy: {file: a\nroutes: [\n", "test.yaml:"},
        RefusalCase{"UnknownTopLevelKey", plus("polcy: {}\n"),
                    "polcy: unknown key (expected one of: nats, policy, store, routes, control, "
                    "admin, release, events, audit, concurrency, slack, notify, approvers, receipts)"},
        // The approver registry: names, keys, duplicates and tokens naming unknown people.
        RefusalCase{"ApproverBadName", plus("approvers: {people: [{name: \"al ice\"}]}\n"),
                    "approvers.people[0].name: expected a name of letters, digits"},
        RefusalCase{"ApproverNameTooLong",
                    plus("approvers: {people: [{name: " + std::string(65, 'a') + "}]}\n"),
                    "approvers.people[0].name: expected a name"},
        RefusalCase{"ApproverDuplicateName", plus("approvers: {people: [{name: a}, {name: a}]}\n"),
                    "approvers.people[1].name: duplicate name \"a\" (also approvers.people[0].name)"},
        RefusalCase{"ChannelSameNameAsPerson",
                    plus("approvers: {people: [{name: a}], channels: [{name: a, keys: [" + std::string(kAliceKey) +
                         "], may_act_for: [\"*\"]}]}\n"),
                    "approvers.channels[0].name: duplicate name \"a\""},
        RefusalCase{"ApproverBadKeyChecksum",
                    plus("approvers: {people: [{name: a, keys: [UD466L6EBCM3YY5HEGHJANNTN4LSKTSUXTH7RILHCKEQMQHTBNLHJJXA]}]}\n"),
                    "approvers.people[0].keys[0]: expected an nkey user public key"},
        RefusalCase{"ApproverSeedAsKey",
                    plus("approvers: {people: [{name: a, keys: [SUAKYRHVIOREXV7EUZTBHUHL7NUMHPMAS7QMDU3GTIUWEI5LDNOXD43IZY]}]}\n"),
                    "approvers.people[0].keys[0]: expected an nkey user public key"},
        RefusalCase{"ApproverDuplicateKey",
                    plus("approvers: {people: [{name: a, keys: [" + std::string(kAliceKey) + "]}, {name: b, keys: [" +
                         std::string(kAliceKey) + "]}]}\n"),
                    "approvers.people[1].keys[0]: the same key is also at approvers.people[0].keys[0]"},
        RefusalCase{"ApproverUnknownKey", plus("approvers: {people: [{name: a, phone: 1}]}\n"),
                    "approvers.people[0].phone: unknown key"},
        RefusalCase{"ChannelBadMayActFor",
                    plus("approvers: {channels: [{name: s, keys: [" + std::string(kAliceKey) +
                         "], may_act_for: [\"group:\"]}]}\n"),
                    "approvers.channels[0].may_act_for[0]: expected a person's name, group:<group> or \"*\""},
        RefusalCase{"ChannelWithoutKeys", plus("approvers: {channels: [{name: s, may_act_for: [\"*\"]}]}\n"),
                    "approvers.channels[0].keys: required key is missing"},
        RefusalCase{"RequireSignatureWord", plus("approvers: {require_signature: yes}\n"),
                    "approvers.require_signature: expected true or false, got \"yes\""},
        RefusalCase{"TokenForUnknownPerson",
                    plus("approvers: {people: [{name: alice}]}\nadmin: {tokens: [{approver: mallory, token: "
                         "0123456789abcdef0123}]}\n"),
                    "admin.tokens[0].approver: \"mallory\" is not in approvers.people"},
        RefusalCase{"ConcurrencyZero", plus("concurrency: {holds: 0}\n"),
                    "concurrency.holds: expected an integer from 1 to 65536, got 0"},
        RefusalCase{"ConcurrencyWord", plus("concurrency: {control: many}\n"),
                    "concurrency.control: expected an integer, got \"many\""},
        RefusalCase{"ConcurrencyUnknownKey", plus("concurrency: {approvals: 4}\n"),
                    "concurrency.approvals: unknown key (expected one of: holds, control, intake_bytes, receipt_signers)"},
        RefusalCase{"ReceiptSignersNegative", plus("concurrency: {receipt_signers: -1}\n"),
                    "concurrency.receipt_signers: expected an integer from 0 to 64, got -1"},
        RefusalCase{"ModeTypo", with(kRouteEnd, kRouteEnd + "    mode: jetsream\n"),
                    "routes[0].mode: expected core or jetstream, got \"jetsream\""},
        RefusalCase{"UnknownRouteKey", with(kRouteEnd, kRouteEnd + "    modee: core\n"),
                    "routes[0].modee: unknown key (expected one of: name, from, to, mode, "
                    "to_stream, queue, labels, ingress_stream, durable, ack_wait)"},
        RefusalCase{"ReplicasWord", plus("store: {replicas: three}\n"),
                    "store.replicas: expected an integer, got \"three\""},
        RefusalCase{"ReplicasQuoted", plus("store: {replicas: \"3\"}\n"),
                    "store.replicas: expected an integer, got \"3\""},
        RefusalCase{"ReplicasTooMany", plus("store: {replicas: 7}\n"),
                    "store.replicas: expected an integer from 1 to 5, got 7"},
        RefusalCase{"ReplicasZero", plus("store: {replicas: 0}\n"),
                    "store.replicas: expected an integer from 1 to 5, got 0"},
        RefusalCase{"BucketCharset", plus("store: {bucket: \"a.b\"}\n"),
                    "store.bucket: expected a bucket name of letters, digits, '_' and '-', got "
                    "\"a.b\""},
        RefusalCase{"MaxAgeFraction", plus("store: {max_age: 1500ms}\n"),
                    "store.max_age: expected a whole number of seconds, got \"1500ms\""},
        RefusalCase{"MaxAgeWord", plus("store: {max_age: forever}\n"),
                    "store.max_age: expected a duration like 500ms, 5s, 30m or 2h, got "
                    "\"forever\""},
        RefusalCase{"NoPolicy", "routes: [{name: a, from: \"a.>\", to: \"b.>\"}]\n",
                    "policy: required key is missing"},
        RefusalCase{"NoPolicyFile", with("file: policies/p.yaml", "watch: true"),
                    "policy.file: required key is missing"},
        RefusalCase{"EmptyPolicyFile", with("file: policies/p.yaml", "file: \"\""),
                    "policy.file: expected a non-empty path"},
        RefusalCase{"PolicyWatchString", with("file: policies/p.yaml", "file: p\n  watch: on"),
                    "policy.watch: expected true or false, got \"on\""},
        RefusalCase{"NoRoutes", "policy: {file: p.yaml}\n", "routes: required key is missing"},
        RefusalCase{"EmptyRoutes", "policy: {file: p.yaml}\nroutes: []\n",
                    "routes: expected at least one route"},
        RefusalCase{"RoutesNotAList", "policy: {file: p.yaml}\nroutes: {a: 1}\n",
                    "routes: expected a list, got a mapping"},
        RefusalCase{"DuplicateRouteName",
                    plus("  - {name: jobs, from: \"other.>\", to: \"done.>\"}\n"),
                    "routes[1].name: duplicate route name \"jobs\" (also routes[0].name)"},
        RefusalCase{"EmptyRouteName", with("name: jobs", "name: \"\""),
                    "routes[0].name: expected a route name of letters, digits, '_' and '-', got "
                    "\"\""},
        RefusalCase{"MissingRouteName", with("- name: jobs\n    from:", "- from:"),
                    "routes[0].name: required key is missing"},
        RefusalCase{"MissingFrom", with("from: \"agents.jobs.>\"", "mode: core"),
                    "routes[0].from: required key is missing"},
        RefusalCase{"MissingTo", with(kRouteEnd, "mode: core\n"),
                    "routes[0].to: required key is missing"},
        RefusalCase{"FromWithoutWildcard", with("\"agents.jobs.>\"", "agents.jobs"),
                    "routes[0].from: expected a pattern with at least one wildcard"},
        RefusalCase{"InvalidFrom", with("\"agents.jobs.>\"", "\"agents..>\""),
                    "routes[0].from: expected a NATS subject pattern, got \"agents..>\""},
        RefusalCase{"InvalidTo", with("\"jobs.>\"", "\"jobs.>.x\""),
                    "routes[0].to: expected a NATS subject pattern, got \"jobs.>.x\""},
        RefusalCase{"ToWithoutWildcard", with("\"jobs.>\"", "jobs.all"),
                    "routes[0].to: \"jobs.all\" must have the same wildcards in the same order "
                    "as from \"agents.jobs.>\""},
        RefusalCase{"ToWithOtherWildcards", with("\"jobs.>\"", "\"jobs.*\""),
                    "routes[0].to: \"jobs.*\" must have the same wildcards"},
        RefusalCase{"ToMissingAWildcard", with("\"agents.jobs.>\"", "\"agents.*.>\""),
                    "routes[0].to: \"jobs.>\" must have the same wildcards"},
        RefusalCase{"ToOverlapsOwnFrom", with("\"jobs.>\"", "\"agents.jobs.out.>\""),
                    "routes[0].to: \"agents.jobs.out.>\" overlaps routes[0].from "
                    "\"agents.jobs.>\": released jobs would be taken in again (a loop)"},
        RefusalCase{"ToOverlapsOtherFrom",
                    plus("  - {name: more, from: \"producers.>\", to: \"agents.jobs.x.>\"}\n"),
                    "routes[1].to: \"agents.jobs.x.>\" overlaps routes[0].from \"agents.jobs.>\""},
        RefusalCase{"ToOverlapsLaterFrom",
                    plus("  - {name: more, from: \"jobs.extra.>\", to: \"w.>\"}\n"),
                    "routes[0].to: \"jobs.>\" overlaps routes[1].from \"jobs.extra.>\""},
        RefusalCase{"FromsOverlap",
                    plus("  - {name: more, from: \"agents.*.x.>\", to: \"w.*.>\"}\n"),
                    "routes[1].from: \"agents.*.x.>\" overlaps routes[0].from \"agents.jobs.>\": "
                    "a job would be taken by both routes"},
        RefusalCase{"ToOverlapsControl", with("\"jobs.>\"", "\"countersign.>\""),
                    "routes[0].to: \"countersign.>\" overlaps \"countersign.>\" (control.prefix "
                    "\"countersign\")"},
        RefusalCase{"FromOverlapsControl",
                    "policy: {file: p.yaml}\nroutes:\n  - {name: a, from: \"*.events.>\", to: "
                    "\"w.x.*.>\"}\n",
                    "routes[0].from: \"*.events.>\" overlaps \"countersign.>\" (control.prefix "
                    "\"countersign\")"},
        RefusalCase{"BadToStream", with(kRouteEnd, kRouteEnd + "    to_stream: \"JOBS.x\"\n"),
                    "routes[0].to_stream: expected a stream name"},
        RefusalCase{"BadQueue", with(kRouteEnd, kRouteEnd + "    queue: \"q.*\"\n"),
                    "routes[0].queue: expected a queue group name"},
        RefusalCase{"NonStringLabel", with(kRouteEnd, kRouteEnd + "    labels: {tier: 1}\n"),
                    "routes[0].labels.tier: expected a string, got 1"},
        RefusalCase{"DottedLabelName", with(kRouteEnd, kRouteEnd + "    labels: {a.b: x}\n"),
                    "routes[0].labels.a.b: label names are letters, digits, '_' and '-'"},
        RefusalCase{"LabelsNotAMap", with(kRouteEnd, kRouteEnd + "    labels: [a]\n"),
                    "routes[0].labels: expected a mapping, got a list"},
        RefusalCase{"PrefixWithWildcard", plus("control: {prefix: \"cs.>\"}\n"),
                    "control.prefix: expected a subject without wildcards, got \"cs.>\""},
        RefusalCase{"BadReplySubject", plus("control: {reply_subjects: [\"_INBOX.>\", \"a b\"]}\n"),
                    "control.reply_subjects[1]: expected a NATS subject pattern, got \"a b\""},
        RefusalCase{"ListenWithoutHost", plus("admin: {listen: \"9464\"}\n"),
                    "admin.listen: expected host:port (or empty), got \"9464\""},
        RefusalCase{"ListenBadPort", plus("admin: {listen: \"127.0.0.1:99999\"}\n"),
                    "admin.listen: expected host:port"},
        RefusalCase{"ListenBareIpv6", plus("admin: {listen: \"::1:9464\"}\n"),
                    "admin.listen: expected host:port"},
        RefusalCase{"ZeroLease", plus("release: {lease: 0s}\n"),
                    "release.lease: expected a positive duration, got \"0s\""},
        RefusalCase{"NumericInterval", plus("release: {replay_interval: 5}\n"),
                    "release.replay_interval: expected a duration like 500ms, 5s, 30m or 2h, got "
                    "5"},
        RefusalCase{"UnknownReleaseKey", plus("release: {timeout: 5s}\n"),
                    "release.timeout: unknown key"},
        RefusalCase{"EventsAllowedString", plus("events: {allowed: \"yes\"}\n"),
                    "events.allowed: expected true or false, got \"yes\""},
        RefusalCase{"NoServers", plus("nats: {servers: []}\n"),
                    "nats.servers: expected at least one server"},
        RefusalCase{"ServersNotAList", plus("nats: {servers: \"nats://a:1\"}\n"),
                    "nats.servers: expected a list of strings"},
        RefusalCase{"BadServer", plus("nats: {servers: [\"nats://a:1\", \"a b\"]}\n"),
                    "nats.servers[1]: expected a server URL"},
        RefusalCase{"EmbeddedQuoted", plus("nats: {embedded: \"true\"}\n"),
                    "nats.embedded: expected true or false, got \"true\""},
        RefusalCase{"CertWithoutKey", plus("nats: {tls: {cert: c.pem}}\n"),
                    "nats.tls: cert and key go together"},
        RefusalCase{"UnknownTlsKey", plus("nats: {tls: {crt: c.pem}}\n"),
                    "nats.tls.crt: unknown key (expected one of: ca, cert, key)"},
        RefusalCase{"DuplicateKey", plus("store: {replicas: 1, replicas: 2}\n"),
                    "store.replicas: duplicate key"}),
    [](const ::testing::TestParamInfo<RefusalCase>& param_info) { return param_info.param.name; });

// ---- environment overrides ------------------------------------------------------------------

TEST(ConfigEnvironment, OverridesTheFile) {
  const Environment env{{"COUNTERSIGN_NATS_URL", "nats://a:1, nats://b:2"},
                        {"COUNTERSIGN_NATS_EMBEDDED", "true"},
                        {"COUNTERSIGN_DATA_DIR", "/srv/data"},
                        {"COUNTERSIGN_POLICY_FILE", "/srv/policy.yaml"},
                        {"COUNTERSIGN_BUCKET", "other_bucket"},
                        {"COUNTERSIGN_PREFIX", "cs"},
                        {"COUNTERSIGN_ADMIN_LISTEN", "0.0.0.0:9000"},
                        {"COUNTERSIGN_CRASH_AT", "not-a-config-variable"}};
  const Config config = parseOk(kMinimal, "/etc/countersign", env);
  EXPECT_THAT(config.nats.servers, ElementsAre("nats://a:1", "nats://b:2"));
  EXPECT_TRUE(config.nats.embedded);
  EXPECT_EQ(config.nats.data_dir, "/srv/data");
  EXPECT_EQ(config.policy.file, "/srv/policy.yaml");
  EXPECT_EQ(config.store.bucket, "other_bucket");
  EXPECT_EQ(config.control.prefix, "cs");
  EXPECT_EQ(config.admin.listen, "0.0.0.0:9000");
}

TEST(ConfigEnvironment, EmbeddedFalseAndEmptyListen) {
  const Config config = parseOk(
      plus("nats: {embedded: true}\n"), "/etc/countersign",
      Environment{{"COUNTERSIGN_NATS_EMBEDDED", "false"}, {"COUNTERSIGN_ADMIN_LISTEN", ""}});
  EXPECT_FALSE(config.nats.embedded);
  EXPECT_EQ(config.admin.listen, "");
}

TEST(ConfigEnvironment, RelativePathsAreTakenFromTheWorkingDirectory) {
  const Config config = parseOk(
      kMinimal, "/etc/countersign",
      Environment{{"COUNTERSIGN_POLICY_FILE", "local/p.yaml"}, {"COUNTERSIGN_DATA_DIR", "d"}});
  EXPECT_EQ(fs::path(config.policy.file), (fs::current_path() / "local/p.yaml").lexically_normal());
  EXPECT_EQ(fs::path(config.nats.data_dir), (fs::current_path() / "d").lexically_normal());
}

struct EnvCase {
  std::string name;
  std::string variable;
  std::string value;
  std::string message;
};

void PrintTo(const EnvCase& c, std::ostream* out) {
  *out << c.name;
}

class EnvRefusals : public ::testing::TestWithParam<EnvCase> {};

TEST_P(EnvRefusals, NameTheVariable) {
  const EnvCase& c = GetParam();
  EXPECT_THAT(refusal(kMinimal, Environment{{c.variable, c.value}}), HasSubstr(c.message));
}

INSTANTIATE_TEST_SUITE_P(
    Config, EnvRefusals,
    ::testing::Values(
        EnvCase{"EmptyServerInList", "COUNTERSIGN_NATS_URL", "nats://a:1,,nats://b:2",
                "COUNTERSIGN_NATS_URL: expected a server URL"},
        EnvCase{"EmptyServers", "COUNTERSIGN_NATS_URL", "", "COUNTERSIGN_NATS_URL: expected"},
        EnvCase{"EmbeddedYes", "COUNTERSIGN_NATS_EMBEDDED", "yes",
                "COUNTERSIGN_NATS_EMBEDDED: expected true or false, got \"yes\""},
        EnvCase{"EmptyDataDir", "COUNTERSIGN_DATA_DIR", "",
                "COUNTERSIGN_DATA_DIR: expected a non-empty path"},
        EnvCase{"EmptyPolicyFile", "COUNTERSIGN_POLICY_FILE", "",
                "COUNTERSIGN_POLICY_FILE: expected a non-empty path"},
        EnvCase{"BadBucket", "COUNTERSIGN_BUCKET", "a b",
                "COUNTERSIGN_BUCKET: expected a bucket name"},
        EnvCase{"WildcardPrefix", "COUNTERSIGN_PREFIX", "cs.*",
                "COUNTERSIGN_PREFIX: expected a subject without wildcards"},
        EnvCase{"PrefixOverlappingARoute", "COUNTERSIGN_PREFIX", "jobs",
                "routes[0].to: \"jobs.>\" overlaps \"jobs.>\" (COUNTERSIGN_PREFIX \"jobs\")"},
        EnvCase{"BadListen", "COUNTERSIGN_ADMIN_LISTEN", "localhost",
                "COUNTERSIGN_ADMIN_LISTEN: expected host:port (or empty), got \"localhost\""}),
    [](const ::testing::TestParamInfo<EnvCase>& param_info) { return param_info.param.name; });

TEST(ConfigEnvironment, ProcessEnvironmentKeepsOnlyCountersignVariables) {
  ::setenv("COUNTERSIGN_CONFIG_TEST_VAR", "a=b", 1);
  ::setenv("CONFIG_TEST_OTHER_VAR", "x", 1);
  const Environment env = processEnvironment();
  ::unsetenv("COUNTERSIGN_CONFIG_TEST_VAR");
  ::unsetenv("CONFIG_TEST_OTHER_VAR");
  ASSERT_TRUE(env.contains("COUNTERSIGN_CONFIG_TEST_VAR"));
  EXPECT_EQ(env.at("COUNTERSIGN_CONFIG_TEST_VAR"), "a=b");
  EXPECT_FALSE(env.contains("CONFIG_TEST_OTHER_VAR"));
  for (const auto& [name, value] : env) EXPECT_THAT(name, StartsWith("COUNTERSIGN_"));
}

// ---- files ----------------------------------------------------------------------------------

TEST(ConfigFile, RelativePathsResolveAgainstTheFilesFolder) {
  const TempDir dir;
  const std::string path =
      dir.write("conf/countersign.yaml", std::string(kMinimal) + "nats: {data_dir: ../state}\n");
  auto config = loadConfig(path);
  ASSERT_TRUE(config.has_value()) << config.error().message;
  EXPECT_EQ(fs::path(config->policy.file),
            (dir.path() / "conf/policies/p.yaml").lexically_normal());
  EXPECT_EQ(fs::path(config->nats.data_dir), (dir.path() / "state").lexically_normal());
}

TEST(ConfigFile, ErrorsNameTheFile) {
  const TempDir dir;
  const std::string path = dir.write("bad.yaml", "store: {replicas: 9}\n");
  auto config = loadConfig(path);
  ASSERT_FALSE(config.has_value());
  EXPECT_THAT(config.error().message, StartsWith(path + ": "));
}

TEST(ConfigFile, MissingFileIsAnIoError) {
  auto config = loadConfig("/nonexistent/countersign.yaml");
  ASSERT_FALSE(config.has_value());
  EXPECT_EQ(config.error().code, Errc::io);
  EXPECT_THAT(config.error().message, HasSubstr("/nonexistent/countersign.yaml"));
}

TEST(ConfigFile, AuditPublicKeyIsAnNkeyOrEmpty) {
  EXPECT_EQ(parseOk(std::string(kMinimal) + "audit:\n  public_key: \"" + std::string(kAliceKey) + "\"\n").audit.public_key,
            kAliceKey);
  EXPECT_EQ(parseOk(std::string(kMinimal) + "audit:\n  public_key: \"\"\n").audit.public_key, "");
  EXPECT_THAT(refusal(std::string(kMinimal) + "audit:\n  public_key: UNOTAKEY\n"),
              HasSubstr("audit.public_key: expected an nkey user public key"));
}

TEST(ConfigFile, DesignExampleParses) {
  // The documented example config (docs/configuration.md), verbatim.
  const Config config = parseOk(R"(
nats:
  servers: ["nats://127.0.0.1:4222"]   # list; TLS and credentials files optional
  embedded: false
  data_dir: ./data
policy:
  file: policies/approval-policy.yaml  # reloaded on SIGHUP and when the file changes
store:
  bucket: countersign_approvals
  replicas: 1
routes:
  - name: jobs
    from: "agents.jobs.>"   # producers publish here
    to: "jobs.>"            # workers listen here; the tail matched by '>' (or '*') is carried over
    mode: core              # core | jetstream
    to_stream: JOBS         # optional
    labels: {}              # optional: labels set by the route; they win over payload labels
control:
  prefix: countersign       # control, event and audit subjects live under this prefix
  reply_subjects: ["_INBOX.>"]   # countersign answers only on subjects matching these
admin:
  listen: "127.0.0.1:9464"
)",
                                "/opt/cs");
  EXPECT_EQ(config.nats.data_dir, "/opt/cs/data");
  EXPECT_EQ(config.policy.file, "/opt/cs/policies/approval-policy.yaml");
  EXPECT_EQ(config.routes[0].to_stream, "JOBS");
}

}  // namespace
}  // namespace countersign
