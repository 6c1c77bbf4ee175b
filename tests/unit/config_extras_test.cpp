// Config keys added with the audit trail, the admin API, JetStream intake and inbox prefixes.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "countersign/config.hpp"

namespace countersign {
namespace {

constexpr const char* kBase = R"(policy: { file: p.yaml }
routes:
  - { name: jobs, from: "agents.jobs.>", to: "jobs.>" }
)";

Result<Config> parse(const std::string& extra, const Environment& env = {}) {
  return parseConfig(std::string(kBase) + extra, "test.yaml", "/etc/cs", env);
}

TEST(ConfigExtras, AdminTokensFromEnvFileAndInline) {
  const auto dir = std::filesystem::temp_directory_path() / "cs-config-extras";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "bob.token") << "bob-token-0123456789\n";
  auto config = parseConfig(std::string(kBase) + R"(admin:
  listen: "127.0.0.1:0"
  tokens:
    - { approver: alice, token_env: COUNTERSIGN_TOKEN_ALICE }
    - { approver: bob, token_file: bob.token, scope: read }
    - { approver: carol, token: "carol-token-0123456789" }
)", "test.yaml", dir.string(), {{"COUNTERSIGN_TOKEN_ALICE", "alice-token-0123456789"}});
  ASSERT_TRUE(config) << config.error().message;
  ASSERT_EQ(config->admin.tokens.size(), 3u);
  EXPECT_EQ(config->admin.tokens[0].token, "alice-token-0123456789");
  EXPECT_EQ(config->admin.tokens[0].scope, ApiToken::Scope::approve);
  EXPECT_EQ(config->admin.tokens[1].token, "bob-token-0123456789");
  EXPECT_EQ(config->admin.tokens[1].scope, ApiToken::Scope::read);
  EXPECT_EQ(config->admin.tokens[2].approver, "carol");
  std::filesystem::remove_all(dir);
}

TEST(ConfigExtras, BadTokensAreRefusedWithTheirPath) {
  struct Case {
    std::string yaml;
    std::string expected;
  };
  const Case cases[] = {
      {"admin: { tokens: [ { approver: a } ] }\n", "admin.tokens[0]: expected exactly one of token_env"},
      {"admin: { tokens: [ { approver: a, token: short } ] }\n", "admin.tokens[0]: tokens must be at least 16"},
      {"admin: { tokens: [ { token: \"0123456789abcdefgh\" } ] }\n", "admin.tokens[0].approver"},
      {"admin: { tokens: [ { approver: a, token_env: NOPE_NOT_SET_ANYWHERE } ] }\n", "admin.tokens[0].token_env"},
      {"admin: { tokens: [ { approver: a, token: \"0123456789abcdefgh\", scope: admin } ] }\n",
       "admin.tokens[0].scope"},
      {"admin: { tokens: { approver: a } }\n", "admin.tokens"},
  };
  for (const auto& c : cases) {
    auto config = parse(c.yaml);
    ASSERT_FALSE(config) << c.yaml;
    EXPECT_NE(config.error().message.find(c.expected), std::string::npos)
        << c.yaml << " -> " << config.error().message;
  }
}

TEST(ConfigExtras, AuditEventsIngressAndInbox) {
  auto config = parse(R"(audit: { enabled: false, stream: MY_AUDIT, replicas: 3, max_age: 720h }
events: { include_payload: true, redact: [card.number, email] }
nats: { inbox_prefix: _CS_INBOX }
)");
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_FALSE(config->audit.enabled);
  EXPECT_EQ(config->audit.stream, "MY_AUDIT");
  EXPECT_EQ(config->audit.replicas, 3);
  EXPECT_EQ(config->audit.max_age, std::chrono::hours(720));
  EXPECT_TRUE(config->events.include_payload);
  EXPECT_EQ(config->events.redact, (std::vector<std::string>{"card.number", "email"}));
  EXPECT_EQ(config->nats.inbox_prefix, "_CS_INBOX");

  auto routes = parseConfig(R"(policy: { file: p.yaml }
routes:
  - { name: jobs, from: "agents.jobs.>", to: "jobs.>", mode: jetstream, ingress_stream: IN_JOBS, durable: cs-jobs, ack_wait: 45s }
)", "t.yaml", "/etc");
  ASSERT_TRUE(routes) << routes.error().message;
  EXPECT_EQ(routes->routes[0].ingress_stream, "IN_JOBS");
  EXPECT_EQ(routes->routes[0].durable, "cs-jobs");
  EXPECT_EQ(routes->routes[0].ack_wait, std::chrono::seconds(45));
  auto short_wait = parseConfig(R"(policy: { file: p.yaml }
routes:
  - { name: jobs, from: "agents.jobs.>", to: "jobs.>", mode: jetstream, ack_wait: 10ms }
)", "t.yaml", "/etc");
  ASSERT_FALSE(short_wait);
  EXPECT_NE(short_wait.error().message.find("routes[0].ack_wait: expected at least 1s"), std::string::npos)
      << short_wait.error().message;

  for (const auto& [yaml, path] : std::vector<std::pair<std::string, std::string>>{
           {"audit: { replicas: 9 }\n", "audit.replicas"},
           {"audit: { stream: \"a.b\" }\n", "audit.stream"},
           {"audit: { sync: true }\n", "audit.sync"},
           {"events: { redact: [\"a..b\"] }\n", "events.redact[0]"},
           {"nats: { inbox_prefix: \"_X.*\" }\n", "nats.inbox_prefix"},
       }) {
    auto bad = parse(yaml);
    ASSERT_FALSE(bad) << yaml;
    EXPECT_NE(bad.error().message.find(path), std::string::npos) << bad.error().message;
  }
}

}  // namespace
}  // namespace countersign
