// Black-box tests of the binary's configuration and policy commands (docs/configuration.md
// and 3): `run --check`, `policy check`, `policy explain`, and `run` without a server.
#include <gtest/gtest.h>

#include <chrono>
#include <regex>
#include <string>
#include <vector>

#include "integration/harness/harness.hpp"
#include "integration/harness/wire.hpp"

namespace countersign::testing {
namespace {

std::string deadUrl() {
  return "nats://127.0.0.1:" + std::to_string(freePort());
}

// A complete valid config; `routes` replaces the routes block, `control` is added to the
// control block and `tail` appended.
std::string config(const std::string& url, const std::string& routes = "",
                   const std::string& tail = "", const std::string& control = "") {
  const std::string default_routes =
      "routes:\n"
      "  - name: jobs\n"
      "    from: \"agents.jobs.>\"\n"
      "    to: \"jobs.>\"\n"
      "    mode: core\n";
  return "nats:\n"
         "  servers: [\"" +
         url +
         "\"]\n"
         "policy:\n"
         "  file: policy.yaml\n"
         "store:\n"
         "  bucket: countersign_approvals\n"
         "  replicas: 1\n" +
         (routes.empty() ? default_routes : routes) +
         "control:\n"
         "  prefix: countersign\n" +
         control +
         "admin:\n"
         "  listen: \"\"\n" +
         tail;
}

std::string both(const CommandResult& r) {
  return r.out + r.err;
}

CommandResult check(const TempDir& dir, const std::string& config_text,
                    const std::string& policy_text = seedPolicy()) {
  dir.write("policy.yaml", policy_text);
  const auto path = dir.write("countersign.yaml", config_text);
  return runCountersign({"run", "--config", path.string(), "--check"}, {}, 20s);
}

std::string snapshotLine(const CommandResult& r) {
  const std::regex line("ok (v1:sha256:[0-9a-f]{64})\n?");
  std::smatch m;
  if (!std::regex_match(r.out, m, line)) return "<bad output: " + r.out + r.err + ">";
  return m[1];
}

// ---- run --check -----------------------------------------------------------------------

TEST(ConfigCliTest, RunCheckAcceptsAValidConfigWithoutConnecting) {
  TempDir dir;
  const auto started = std::chrono::steady_clock::now();
  CommandResult r = check(dir, config(deadUrl()));
  EXPECT_EQ(r.exit_code, 0) << both(r);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 10s);
}

TEST(ConfigCliTest, RunCheckRefusesBadConfigsNamingTheKey) {
  const std::string url = deadUrl();
  struct Case {
    std::string name;
    std::string text;
    std::vector<std::string> expected;  // substrings of the message
  };
  const std::string route_head =
      "routes:\n"
      "  - name: jobs\n"
      "    from: \"agents.jobs.>\"\n";
  const std::vector<Case> cases = {
      {"misspelt mode",
       config(url, route_head + "    to: \"jobs.>\"\n    mode: jetsream\n"),
       {"routes[0].mode", "jetsream"}},
      {"unknown top-level key", config(url, "", "natz:\n  x: 1\n"), {"natz"}},
      {"unknown nested key",
       config(url, route_head + "    to: \"jobs.>\"\n    too: \"x.>\"\n"),
       {"routes[0].too"}},
      {"replicas not a number",
       "nats:\n  servers: [\"" + url +
           "\"]\npolicy:\n  file: policy.yaml\nstore:\n  bucket: b\n  replicas: \"three\"\n"
           "routes:\n  - name: jobs\n    from: \"agents.jobs.>\"\n    to: \"jobs.>\"\n",
       {"store.replicas"}},
      {"route loops onto its own from",
       config(url, route_head + "    to: \"agents.jobs.>\"\n"),
       {"routes[0].to"}},
      {"route into the control prefix",
       config(url, route_head + "    to: \"countersign.>\"\n"),
       {"routes[0].to"}},
      {"route without from",
       config(url, "routes:\n  - name: jobs\n    to: \"jobs.>\"\n"),
       {"routes[0].from"}},
      {"servers of the wrong type",
       "nats:\n  servers: 5\npolicy:\n  file: policy.yaml\n"
       "routes:\n  - name: jobs\n    from: \"agents.jobs.>\"\n    to: \"jobs.>\"\n",
       {"nats.servers"}},
      {"second route bad",
       config(url, route_head + "    to: \"jobs.>\"\n  - name: other\n    from: \"x.>\"\n"
                                "    to: \"y.>\"\n    mode: fast\n"),
       {"routes[1].mode"}},
      {"reply subject not a subject",
       config(url, "", "", "  reply_subjects: [\"a b\"]\n"),
       {"control.reply_subjects"}},
  };
  for (const auto& c : cases) {
    TempDir dir;
    CommandResult r = check(dir, c.text);
    EXPECT_NE(r.exit_code, 0) << c.name << ": accepted\n" << c.text;
    for (const auto& needle : c.expected) {
      EXPECT_NE(both(r).find(needle), std::string::npos)
          << c.name << ": the message does not name `" << needle << "`: " << both(r);
    }
  }
}

TEST(ConfigCliTest, RunCheckRefusesSyntaxErrorsAndMissingFiles) {
  {
    TempDir dir;
    CommandResult r = check(dir, "nats: [unclosed\n");
    EXPECT_NE(r.exit_code, 0) << both(r);
    EXPECT_FALSE(r.err.empty());
  }
  {
    TempDir dir;
    const std::string missing = (dir.path() / "nope.yaml").string();
    CommandResult r = runCountersign({"run", "--config", missing, "--check"}, {}, 20s);
    EXPECT_NE(r.exit_code, 0) << both(r);
    EXPECT_NE(both(r).find("nope.yaml"), std::string::npos) << both(r);
  }
}

TEST(ConfigCliTest, RunCheckRefusesAnInvalidPolicy) {
  TempDir dir;
  CommandResult r = check(dir, config(deadUrl()),
                          "version: v1\nrules:\n  - id: a\n    when: { topic: x }\n"
                          "    decision: maybe\n");
  EXPECT_NE(r.exit_code, 0) << both(r);
  EXPECT_NE(both(r).find("rules[0].decision"), std::string::npos) << both(r);
}

TEST(ConfigCliTest, RunAgainstAServerThatIsNotThereExitsNonZero) {
  TempDir dir;
  const std::string url = deadUrl();
  dir.write("policy.yaml", seedPolicy());
  const auto path = dir.write("countersign.yaml", config(url));
  CommandResult r = runCountersign({"run", "--config", path.string()}, {}, 20s);
  EXPECT_NE(r.exit_code, 0) << both(r);
  EXPECT_NE(r.exit_code, -1) << "did not exit within 20 s";
  const std::string port = url.substr(url.rfind(':') + 1);
  EXPECT_NE(both(r).find(port), std::string::npos)
      << "the message should say which server could not be reached: " << both(r);
}

// ---- policy check ----------------------------------------------------------------------

TEST(ConfigCliTest, PolicyCheckOfTheSeedPrintsItsSnapshot) {
  TempDir dir;
  CommandResult r = runCountersign({"policy", "check", dir.write("p.yaml", seedPolicy()).string()});
  EXPECT_EQ(r.exit_code, 0) << both(r);
  EXPECT_TRUE(std::regex_match(r.out, std::regex("ok v1:sha256:[0-9a-f]{64}\n?"))) << r.out;
  // The file in the source tree is the same policy.
  CommandResult tree = runCountersign(
      {"policy", "check", std::string(COUNTERSIGN_SOURCE_DIR) + "/policies/approval-policy.yaml"});
  EXPECT_EQ(tree.exit_code, 0) << both(tree);
  EXPECT_EQ(snapshotLine(tree), snapshotLine(r));
}

TEST(ConfigCliTest, SnapshotIgnoresFormattingAndDefaultsButNotMeaning) {
  TempDir dir;
  const std::string seed = snapshotLine(
      runCountersign({"policy", "check", dir.write("seed.yaml", seedPolicy()).string()}));
  ASSERT_EQ(seed.rfind("v1:sha256:", 0), 0u) << seed;
  // Flow style, comments, other key order, the default made explicit: same meaning.
  const std::string reformatted = R"(# reformatted seed
rules:
  - { decision: allow, when: { topic: knowledge.read }, id: allow-readonly }   # reads
  - id: require-approval-prod-finance
    decision: require_human
    when:
      env: production
      topic: finance.payment.execute
  - when: { channel: external, topic: customer.notify }
    id: require-approval-external-notify
    decision: require_human
default_decision: deny
version: v1
)";
  EXPECT_EQ(
      snapshotLine(runCountersign({"policy", "check", dir.write("r.yaml", reformatted).string()})),
      seed);
  std::string changed = seedPolicy();
  changed.replace(changed.find("production"), std::string("production").size(), "staging");
  EXPECT_NE(
      snapshotLine(runCountersign({"policy", "check", dir.write("c.yaml", changed).string()})),
      seed);
  std::string renamed = seedPolicy();
  renamed.replace(renamed.find("allow-readonly"), std::string("allow-readonly").size(), "reads");
  EXPECT_NE(
      snapshotLine(runCountersign({"policy", "check", dir.write("n.yaml", renamed).string()})),
      seed);
}

TEST(ConfigCliTest, PolicyCheckRefusesInvalidRulesNamingThePath) {
  struct Case {
    std::string name;
    std::string text;
    std::string expected;
  };
  const std::string head = "version: v1\nrules:\n";
  const std::string ok_rule = "  - id: ok\n    when: { topic: a }\n    decision: allow\n";
  const std::vector<Case> cases = {
      {"unknown decision", head + "  - id: a\n    when: { topic: x }\n    decision: maybe\n",
       "rules[0].decision"},
      {"unknown rule key", head + "  - id: a\n    whenn: { topic: x }\n    decision: allow\n",
       "rules[0].whenn"},
      {"bad regex",
       head + ok_rule + "  - id: b\n    when: { name: { matches: \"(\" } }\n    decision: deny\n",
       "rules[1].when.name.matches"},
      {"number operator on a string",
       head + "  - id: a\n    when: { amount: { gt: ten } }\n    decision: deny\n",
       "rules[0].when.amount.gt"},
      {"unknown operator",
       head + "  - id: a\n    when: { amount: { bigger: 3 } }\n    decision: deny\n",
       "rules[0].when.amount.bigger"},
      {"duplicate rule id", head + ok_rule + ok_rule, "rules[1].id"},
      {"missing id", head + "  - when: { topic: x }\n    decision: allow\n", "rules[0]"},
      {"bad throttle rate",
       head + "  - id: a\n    when: { topic: x }\n    decision: throttle\n    rate: fast\n",
       "rules[0].rate"},
      {"bad topic pattern",
       head + "  - id: a\n    when: { topic: \"a.>.b\" }\n    decision: allow\n",
       "rules[0].when.topic"},
      {"bad default", head + ok_rule + "default_decision: maybe\n", "default_decision"},
      {"missing version", "rules:\n" + ok_rule, "version"},
      {"not yaml", "rules: [unclosed\n", ""},
  };
  for (const auto& c : cases) {
    TempDir dir;
    CommandResult r = runCountersign({"policy", "check", dir.write("p.yaml", c.text).string()});
    EXPECT_EQ(r.exit_code, 2) << c.name << ": " << both(r);
    EXPECT_EQ(r.out.find("ok "), std::string::npos) << c.name << ": " << r.out;
    EXPECT_FALSE(r.err.empty()) << c.name;
    EXPECT_NE(r.err.find(c.expected), std::string::npos)
        << c.name << ": stderr does not name `" << c.expected << "`: " << r.err;
  }
  CommandResult missing = runCountersign({"policy", "check", "/nonexistent/policy.yaml"});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("/nonexistent/policy.yaml"), std::string::npos) << missing.err;
}

// ---- policy explain --------------------------------------------------------------------

TEST(ConfigCliTest, PolicyExplainDecidesLikeTheGateway) {
  TempDir dir;
  const std::string file = dir.write("seed.yaml", seedPolicy()).string();
  const std::string pay = "agents.jobs.finance.payment.execute";
  auto explain = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = {"policy", "explain", file, "--subject"};
    args.insert(args.end(), extra.begin(), extra.end());
    return runCountersign(args);
  };
  auto has = [](const CommandResult& r, const std::string& line) {
    return r.out.find(line + "\n") != std::string::npos;
  };

  CommandResult payload = explain({pay, "--payload", R"({"labels":{"env":"production"}})"});
  EXPECT_EQ(payload.exit_code, 0) << both(payload);
  EXPECT_TRUE(has(payload, "decision: require_human")) << payload.out;
  EXPECT_TRUE(has(payload, "rule: require-approval-prod-finance")) << payload.out;

  CommandResult header = explain({pay, "--header", "env=production"});
  EXPECT_EQ(header.exit_code, 0) << both(header);
  EXPECT_TRUE(has(header, "decision: require_human")) << header.out;
  EXPECT_TRUE(has(header, "rule: require-approval-prod-finance")) << header.out;

  CommandResult staging = explain({pay, "--header", "env=staging"});
  EXPECT_TRUE(has(staging, "decision: deny")) << staging.out;
  EXPECT_TRUE(has(staging, "rule: default")) << staging.out;

  CommandResult dup = explain({pay, "--payload", R"({"env":"staging","env":"production"})"});
  EXPECT_TRUE(has(dup, "decision: deny")) << dup.out;

  CommandResult read = explain({"agents.jobs.knowledge.read"});
  EXPECT_TRUE(has(read, "decision: allow")) << read.out;
  EXPECT_TRUE(has(read, "rule: allow-readonly")) << read.out;

  CommandResult other_route =
      explain({"in.finance.payment.execute", "--route-from", "in.>", "--header", "env=production"});
  EXPECT_TRUE(has(other_route, "decision: require_human")) << both(other_route);

  CommandResult off_route = explain({"elsewhere.x"});
  EXPECT_NE(off_route.exit_code, 0) << both(off_route);
  CommandResult bad_header = explain({pay, "--header", "novalue"});
  EXPECT_NE(bad_header.exit_code, 0) << both(bad_header);
}

}  // namespace
}  // namespace countersign::testing
