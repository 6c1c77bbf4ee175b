#include "countersign/policy.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <ostream>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

namespace countersign {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

const std::string kSeedPath =
    std::string(COUNTERSIGN_SOURCE_DIR) + "/policies/approval-policy.yaml";

std::shared_ptr<const Policy> load(std::string_view yaml) {
  auto policy = Policy::parse(yaml, "test");
  EXPECT_TRUE(policy.has_value()) << yaml << "\n-> " << (policy ? "" : policy.error().message);
  return policy ? *policy : nullptr;
}

// The error message of a policy that must be refused.
std::string refusal(std::string_view yaml) {
  auto policy = Policy::parse(yaml, "test");
  if (policy) return "<accepted>";
  return policy.error().message;
}

// One job as intake would build it.
struct Job {
  std::string topic;
  std::string payload = "{}";
  Headers headers;
  const Labels* route_labels = nullptr;
  std::string subject = "agents.jobs." + topic;

  JobView view() const { return JobView(subject, topic, headers, payload, route_labels); }
};

Verdict decide(const Policy& policy, const Job& job) {
  return policy.evaluate(job.view());
}

std::string ruleOf(const Policy& policy, const Job& job) {
  return std::string(decide(policy, job).ruleId());
}

// ---- the seed policy ------------------------------------------------------------------------

class SeedPolicy : public ::testing::Test {
 protected:
  void SetUp() override {
    auto loaded = Policy::loadFile(kSeedPath);
    ASSERT_TRUE(loaded.has_value()) << loaded.error().message;
    policy_ = *loaded;
  }
  std::shared_ptr<const Policy> policy_;
};

TEST_F(SeedPolicy, LoadsUnchanged) {
  EXPECT_EQ(policy_->version(), "v1");
  ASSERT_EQ(policy_->rules().size(), 3u);
  EXPECT_EQ(policy_->rules()[0].id, "allow-readonly");
  EXPECT_EQ(policy_->rules()[1].id, "require-approval-prod-finance");
  EXPECT_EQ(policy_->rules()[2].id, "require-approval-external-notify");
  EXPECT_EQ(policy_->defaultDecision(), Decision::deny);
  EXPECT_THAT(policy_->snapshot(), StartsWith("v1:sha256:"));
  EXPECT_EQ(policy_->snapshot().size(), std::string("v1:sha256:").size() + 64);
  EXPECT_FALSE(policy_->rules()[0].reads_payload);
  EXPECT_TRUE(policy_->rules()[1].reads_payload);
}

TEST_F(SeedPolicy, KnowledgeReadIsAllowedWithoutParsingThePayload) {
  Job job{"knowledge.read", R"({"env":"production"})"};
  const JobView view = job.view();
  const Verdict verdict = policy_->evaluate(view);
  EXPECT_EQ(verdict.decision, Decision::allow);
  EXPECT_EQ(verdict.ruleId(), "allow-readonly");
  EXPECT_FALSE(view.payloadParsed());
}

TEST_F(SeedPolicy, ProductionFinanceNeedsAHuman) {
  const Job job{"finance.payment.execute", R"({"labels":{"env":"production"},"amount":10})"};
  const Verdict verdict = decide(*policy_, job);
  EXPECT_EQ(verdict.decision, Decision::require_human);
  EXPECT_EQ(verdict.ruleId(), "require-approval-prod-finance");
  EXPECT_FALSE(verdict.indeterminate);
}

TEST_F(SeedPolicy, StagingFinanceFallsToDefaultDeny) {
  const Job job{"finance.payment.execute", R"({"labels":{"env":"staging"}})"};
  const Verdict verdict = decide(*policy_, job);
  EXPECT_EQ(verdict.decision, Decision::deny);
  EXPECT_EQ(verdict.rule, nullptr);
  EXPECT_EQ(verdict.ruleId(), "default");
}

TEST_F(SeedPolicy, EnvFromTopLevelPayloadField) {
  const Job job{"finance.payment.execute", R"({"env":"production"})"};
  EXPECT_EQ(decide(*policy_, job).decision, Decision::require_human);
}

TEST_F(SeedPolicy, EnvFromHeader) {
  Job job{"finance.payment.execute", R"({"amount":1})"};
  job.headers = {{"env", "production"}};
  EXPECT_EQ(decide(*policy_, job).decision, Decision::require_human);
}

TEST_F(SeedPolicy, ExternalNotifyNeedsAHuman) {
  const Job external{"customer.notify", R"({"channel":"external"})"};
  EXPECT_EQ(decide(*policy_, external).decision, Decision::require_human);
  EXPECT_EQ(ruleOf(*policy_, external), "require-approval-external-notify");
  const Job internal{"customer.notify", R"({"channel":"internal"})"};
  EXPECT_EQ(decide(*policy_, internal).decision, Decision::deny);
}

TEST_F(SeedPolicy, UnknownTopicIsDenied) {
  EXPECT_EQ(decide(*policy_, Job{"something.else"}).decision, Decision::deny);
}

TEST_F(SeedPolicy, ExplainTracesEveryRuleTried) {
  const Job job{"finance.payment.execute", R"({"env":"production"})"};
  const Explanation explanation = policy_->explain(job.view());
  EXPECT_EQ(explanation.verdict.decision, Decision::require_human);
  ASSERT_EQ(explanation.trace.size(), 2u);
  EXPECT_EQ(explanation.trace[0],
            "allow-readonly: no match (topic \"finance.payment.execute\" does not match "
            "\"knowledge.read\")");
  EXPECT_EQ(explanation.trace[1], "require-approval-prod-finance: match -> require_human");
}

TEST_F(SeedPolicy, ExplainEndsWithTheDefault) {
  const Job job{"finance.payment.execute", R"({"env":"staging"})"};
  const Explanation explanation = policy_->explain(job.view());
  EXPECT_EQ(explanation.verdict.decision, Decision::deny);
  ASSERT_EQ(explanation.trace.size(), 4u);
  EXPECT_EQ(explanation.trace[1],
            "require-approval-prod-finance: no match (env \"staging\" fails eq \"production\")");
  EXPECT_EQ(explanation.trace[3], "default: no rule matched -> deny");
}

// ---- rule order and defaults ----------------------------------------------------------------

TEST(PolicyEvaluation, FirstMatchWins) {
  const auto policy = load(R"(
version: v1
rules:
  - id: first
    when: {topic: "a.>"}
    decision: deny
    reason: first rule
  - id: second
    when: {topic: a.b}
    decision: allow
)");
  ASSERT_TRUE(policy);
  const Verdict verdict = decide(*policy, Job{"a.b"});
  EXPECT_EQ(verdict.decision, Decision::deny);
  EXPECT_EQ(verdict.ruleId(), "first");
  EXPECT_EQ(verdict.rule->reason, "first rule");
}

TEST(PolicyEvaluation, RuleWithoutWhenAlwaysMatches) {
  const auto policy = load("version: v1\nrules:\n  - id: all\n    decision: allow\n");
  ASSERT_TRUE(policy);
  EXPECT_EQ(decide(*policy, Job{"x"}).decision, Decision::allow);
}

TEST(PolicyEvaluation, DefaultDecisionIsDenyUnlessSet) {
  const auto deny = load("version: v1\nrules: []\n");
  ASSERT_TRUE(deny);
  EXPECT_EQ(deny->defaultDecision(), Decision::deny);
  EXPECT_EQ(decide(*deny, Job{"x"}).decision, Decision::deny);
  const auto allow = load("version: v1\ndefault_decision: allow\nrules: []\n");
  ASSERT_TRUE(allow);
  EXPECT_EQ(decide(*allow, Job{"x"}).decision, Decision::allow);
  const auto human = load("version: v1\ndefault_decision: require_human\nrules: []\n");
  ASSERT_TRUE(human);
  EXPECT_EQ(decide(*human, Job{"x"}).decision, Decision::require_human);
  EXPECT_EQ(decide(*human, Job{"x"}).rule, nullptr);
}

TEST(PolicyEvaluation, DecisionSpecificFieldsAreLoaded) {
  const auto policy = load(R"(
version: v2
rules:
  - id: slow
    when: {topic: bulk.>}
    decision: throttle
    rate: 600/m
    key: tenant
  - id: slow-burst
    when: {topic: bulk2.>}
    decision: throttle
    rate: "0.5/s"
    burst: 3
  - id: human
    decision: require_human
    timeout: 30m
    on_timeout: allow
    allow_on_timeout_acknowledged: true
)");
  ASSERT_TRUE(policy);
  const Rule& slow = policy->rules()[0];
  EXPECT_EQ(slow.throttle.rate_per_second, 10);
  EXPECT_EQ(slow.throttle.burst, 10);
  EXPECT_EQ(slow.throttle.key, "tenant");
  const Rule& burst = policy->rules()[1];
  EXPECT_EQ(burst.throttle.rate_per_second, 0.5);
  EXPECT_EQ(burst.throttle.burst, 3);
  const Rule& human = policy->rules()[2];
  ASSERT_TRUE(human.human.timeout.has_value());
  EXPECT_EQ(*human.human.timeout, std::chrono::minutes(30));
  EXPECT_EQ(human.human.on_timeout, "allow");
}

// ---- operators ------------------------------------------------------------------------------

// A one-rule policy `payload.x: <condition>` -> allow, else deny; whether the condition holds.
bool holds(const std::string& condition, const std::string& payload) {
  const auto policy =
      load("version: v1\nrules:\n  - id: r\n    when:\n      payload.x: " + condition +
           "\n    decision: allow\n");
  if (!policy) return false;
  return decide(*policy, Job{"t", payload}).decision == Decision::allow;
}

struct OperatorCase {
  std::string condition;
  std::string payload;
  bool expected;
};

void PrintTo(const OperatorCase& c, std::ostream* out) {
  *out << "payload.x: " << c.condition << " on " << c.payload;
}

class Operators : public ::testing::TestWithParam<OperatorCase> {};

TEST_P(Operators, Hold) {
  const OperatorCase& c = GetParam();
  EXPECT_EQ(holds(c.condition, c.payload), c.expected)
      << "payload.x: " << c.condition << " on " << c.payload;
}

INSTANTIATE_TEST_SUITE_P(
    Equality, Operators,
    ::testing::Values(
        OperatorCase{"1", R"({"x":1})", true},
        OperatorCase{"1", R"({"x":1.0})", true},   // numbers compare as doubles
        OperatorCase{"1", R"({"x":"1"})", false},  // type differs
        OperatorCase{"\"1\"", R"({"x":"1"})", true}, OperatorCase{"\"1\"", R"({"x":1})", false},
        OperatorCase{"true", R"({"x":true})", true}, OperatorCase{"true", R"({"x":"true"})", false},
        OperatorCase{"null", R"({"x":null})", true}, OperatorCase{"null", R"({})", false},
        OperatorCase{"prod", R"({"x":"prod"})", true},
        OperatorCase{"prod", R"({"x":"production"})", false},
        OperatorCase{"prod", R"({"x":{"a":1}})", false}, OperatorCase{"prod", R"({})", false},
        OperatorCase{"{eq: 2}", R"({"x":2})", true}, OperatorCase{"{eq: 2}", R"({"x":3})", false}));

INSTANTIATE_TEST_SUITE_P(NotEqual, Operators,
                         ::testing::Values(OperatorCase{"{ne: 5}", R"({"x":4})", true},
                                           OperatorCase{"{ne: 5}", R"({"x":5})", false},
                                           OperatorCase{"{ne: 5}", R"({"x":"4"})",
                                                        false},  // type mismatch
                                           OperatorCase{"{ne: 5}", R"({})", false},  // missing
                                           OperatorCase{"{ne: 5}", "not json", false}));

INSTANTIATE_TEST_SUITE_P(Lists, Operators,
                         ::testing::Values(OperatorCase{"[a, b]", R"({"x":"a"})", true},
                                           OperatorCase{"[a, b]", R"({"x":"b"})", true},
                                           OperatorCase{"[a, b]", R"({"x":"c"})", false},
                                           OperatorCase{"[1, a]", R"({"x":1})", true},
                                           OperatorCase{"[1, a]", R"({"x":"1"})", false},
                                           OperatorCase{"{in: [a, b]}", R"({"x":"a"})", true},
                                           OperatorCase{"{in: [a, b]}", R"({})", false},
                                           OperatorCase{"{not_in: [a, b]}", R"({"x":"c"})", true},
                                           OperatorCase{"{not_in: [a, b]}", R"({"x":"a"})", false},
                                           OperatorCase{"{not_in: [a, b]}", R"({"x":1})", false},
                                           OperatorCase{"{not_in: [a, b]}", R"({})", false}));

INSTANTIATE_TEST_SUITE_P(Comparisons, Operators,
                         ::testing::Values(OperatorCase{"{gt: 10}", R"({"x":11})", true},
                                           OperatorCase{"{gt: 10}", R"({"x":10})", false},
                                           OperatorCase{"{gt: 10}", R"({"x":"11"})", false},
                                           OperatorCase{"{gt: 10}", R"({})", false},
                                           OperatorCase{"{gte: 10}", R"({"x":10})", true},
                                           OperatorCase{"{gte: 10}", R"({"x":9.5})", false},
                                           OperatorCase{"{lt: 10}", R"({"x":9})", true},
                                           OperatorCase{"{lt: 10}", R"({"x":10})", false},
                                           OperatorCase{"{lte: 10}", R"({"x":10})", true},
                                           OperatorCase{"{lte: 10}", R"({"x":true})", false},
                                           OperatorCase{"{gt: -1.5}", R"({"x":-1})", true},
                                           OperatorCase{"{gte: 1, lt: 5}", R"({"x":3})", true},
                                           OperatorCase{"{gte: 1, lt: 5}", R"({"x":5})", false},
                                           OperatorCase{"{gte: 1, lt: 5}", R"({"x":0})", false}));

INSTANTIATE_TEST_SUITE_P(
    Regex, Operators,
    ::testing::Values(OperatorCase{"{matches: \"^ab+c$\"}", R"({"x":"abbbc"})", true},
                      OperatorCase{"{matches: \"^ab+c$\"}", R"({"x":"abd"})", false},
                      OperatorCase{"{matches: \"^ab+c$\"}", R"({"x":"xabc"})", false},
                      OperatorCase{"{matches: prod}", R"({"x":"nonprod-eu"})", true},  // search
                      OperatorCase{"{matches: \"^prod\"}", R"({"x":"nonprod-eu"})", false},
                      OperatorCase{"{matches: \"a|b\"}", R"({"x":"xbx"})", true},
                      OperatorCase{"{matches: \"^a|b$\"}", R"({"x":"cab"})", true},
                      OperatorCase{"{matches: \"^a|b$\"}", R"({"x":"cba"})", false},
                      OperatorCase{"{matches: \"[0-9]+\"}", R"({"x":123})", false},  // not a string
                      OperatorCase{"{matches: \".*\"}", R"({})", false},
                      OperatorCase{"{matches: \"^line2$\"}", "{\"x\":\"line1\\nline2\"}", false},
                      OperatorCase{"{matches: \"line2$\"}", "{\"x\":\"line1\\nline2\"}", true},
                      // RE2 syntax: classes, flags, UTF-8 characters, counted repetition.
                      OperatorCase{"{matches: \"^\\\\d{3}-\\\\w+$\"}", R"({"x":"123-ab_c"})", true},
                      OperatorCase{"{matches: \"(?i)^prod$\"}", R"({"x":"PROD"})", true},
                      OperatorCase{"{matches: \"^caf.$\"}", R"({"x":"café"})", true},
                      OperatorCase{"{matches: \"^[a-z]{2,4}$\"}", R"({"x":"abcde"})", false},
                      OperatorCase{"{matches: \"^a.b$\"}", "{\"x\":\"a\\nb\"}", false},
                      OperatorCase{"{matches: \"(?s)^a.b$\"}", "{\"x\":\"a\\nb\"}", true}));

// A pattern that makes a backtracking engine take exponential time answers at once (RE2 is
// linear), on a string at the input limit and just beyond it (denied: not evaluated).
TEST(PolicyRegex, NestedQuantifiersOnALongStringAreDecided) {
  const auto policy = load("version: v1\nrules:\n  - id: r\n    when: {payload.x: {matches: \"^(a+)+$\"}}\n"
                           "    decision: allow\ndefault_decision: deny\n");
  ASSERT_TRUE(policy);
  const Headers none;
  const std::string at_limit = "{\"x\":\"" + std::string(64 * 1024 - 1, 'a') + "!\"}";
  EXPECT_EQ(policy->evaluate(JobView("s", "t", none, at_limit)).decision, Decision::deny);
  const std::string matching = "{\"x\":\"" + std::string(64 * 1024, 'a') + "\"}";
  EXPECT_EQ(policy->evaluate(JobView("s", "t", none, matching)).decision, Decision::allow);
  const std::string beyond = "{\"x\":\"" + std::string(64 * 1024 + 1, 'a') + "\"}";
  const Verdict verdict = policy->evaluate(JobView("s", "t", none, beyond));
  EXPECT_EQ(verdict.decision, Decision::deny);
  EXPECT_TRUE(verdict.indeterminate);
}

INSTANTIATE_TEST_SUITE_P(Exists, Operators,
                         ::testing::Values(OperatorCase{"{exists: true}", R"({"x":0})", true},
                                           OperatorCase{"{exists: true}", R"({"x":null})", true},
                                           OperatorCase{"{exists: true}", R"({})", false},
                                           OperatorCase{"{exists: false}", R"({})", true},
                                           OperatorCase{"{exists: false}", R"({"x":false})", false},
                                           OperatorCase{"{exists: false}", R"([1,2])",
                                                        true},  // not an object
                                           OperatorCase{"{exists: false}", "not json", false},
                                           OperatorCase{"{exists: true}", "not json", false}));

INSTANTIATE_TEST_SUITE_P(
    NonJsonPayloads, Operators,
    ::testing::Values(OperatorCase{"a", "a", false}, OperatorCase{"a", "", false},
                      OperatorCase{"\"1\"", R"({"x":"1","x":"1"})", false},
                      OperatorCase{"{exists: false}", R"({"y":1,"y":2})", false}));

TEST(PolicyEvaluation, NestedPathsAndArrayIndices) {
  const auto policy = load(R"(
version: v1
rules:
  - id: nested
    when: {payload.order.customer.tier: gold}
    decision: allow
  - id: indexed
    when: {payload.items.1.sku: B-2}
    decision: require_human
)");
  ASSERT_TRUE(policy);
  EXPECT_EQ(ruleOf(*policy, Job{"t", R"({"order":{"customer":{"tier":"gold"}}})"}), "nested");
  EXPECT_EQ(ruleOf(*policy, Job{"t", R"({"order":{"customer":"gold"}})"}), "default");
  EXPECT_EQ(ruleOf(*policy, Job{"t", R"({"items":[{"sku":"A-1"},{"sku":"B-2"}]})"}), "indexed");
  EXPECT_EQ(ruleOf(*policy, Job{"t", R"({"items":[{"sku":"B-2"}]})"}), "default");
  // A numeric segment on an object is a member name.
  EXPECT_EQ(ruleOf(*policy, Job{"t", R"({"items":{"1":{"sku":"B-2"}}})"}), "indexed");
}

TEST(PolicyEvaluation, DuplicateKeyPayloadIsBytes) {
  const auto policy = load(R"(
version: v1
default_decision: allow
rules:
  - id: staging-only
    when: {env: {ne: staging}}
    decision: deny
  - id: missing-env
    when: {payload.env: {exists: false}}
    decision: deny
  - id: any-env
    when: {payload.env: {exists: true}}
    decision: deny
)");
  ASSERT_TRUE(policy);
  Job job{"t", R"({"env":"staging","env":"production"})"};
  job.headers = {{"env", "staging"}};
  const JobView view = job.view();
  EXPECT_EQ(policy->evaluate(view).decision, Decision::allow);
  EXPECT_TRUE(view.payloadParsed());
  EXPECT_EQ(view.payloadJson(), nullptr);
  // Nor does a label fall back to the header when the payload is bytes.
  EXPECT_EQ(view.label("env"), nullptr);
}

TEST(PolicyEvaluation, LabelSources) {
  const auto policy = load(R"(
version: v1
rules:
  - id: prod
    when: {env: production}
    decision: allow
)");
  ASSERT_TRUE(policy);
  const Labels route_prod{{"env", "production"}};
  const Labels route_staging{{"env", "staging"}};
  // Route labels win over payload labels, in both directions.
  Job job{"t", R"({"labels":{"env":"production"}})"};
  job.route_labels = &route_staging;
  EXPECT_EQ(decide(*policy, job).decision, Decision::deny);
  job = Job{"t", R"({"labels":{"env":"staging"}})"};
  job.route_labels = &route_prod;
  EXPECT_EQ(decide(*policy, job).decision, Decision::allow);
  // A route label holds even when the payload is not JSON.
  job = Job{"t", "binary\x01"};
  job.route_labels = &route_prod;
  EXPECT_EQ(decide(*policy, job).decision, Decision::allow);
  // payload labels.env beats top-level env, which beats the header.
  job = Job{"t", R"({"labels":{"env":"production"},"env":"staging"})"};
  EXPECT_EQ(decide(*policy, job).decision, Decision::allow);
  job = Job{"t", R"({"labels":{"env":"staging"},"env":"production"})"};
  EXPECT_EQ(decide(*policy, job).decision, Decision::deny);
  job = Job{"t", R"({"env":"staging"})"};
  job.headers = {{"env", "production"}};
  EXPECT_EQ(decide(*policy, job).decision, Decision::deny);
  // `labels` that is not an object is skipped.
  job = Job{"t", R"({"labels":"x","env":"production"})"};
  EXPECT_EQ(decide(*policy, job).decision, Decision::allow);
  // The header is used only when the payload is JSON.
  job = Job{"t", R"({"other":1})"};
  job.headers = {{"env", "production"}};
  EXPECT_EQ(decide(*policy, job).decision, Decision::allow);
  job.payload = "not json";
  EXPECT_EQ(decide(*policy, job).decision, Decision::deny);
}

TEST(PolicyEvaluation, LabelAccessorReturnsJsonValues) {
  const Labels route{{"team", "payments"}};
  const Headers headers{{"region", "eu"}};
  const std::string payload = R"({"labels":{"tier":2},"env":"prod"})";
  const JobView view("s", "t", headers, payload, &route);
  ASSERT_NE(view.label("team"), nullptr);
  EXPECT_STREQ(view.label("team")->GetString(), "payments");
  ASSERT_NE(view.label("tier"), nullptr);
  EXPECT_EQ(view.label("tier")->GetInt(), 2);
  ASSERT_NE(view.label("env"), nullptr);
  EXPECT_STREQ(view.label("env")->GetString(), "prod");
  ASSERT_NE(view.label("region"), nullptr);
  EXPECT_STREQ(view.label("region")->GetString(), "eu");
  EXPECT_EQ(view.label("missing"), nullptr);
}

TEST(PolicyEvaluation, HeadersAreByteExactAndUseTheFirstValue) {
  const auto policy = load(R"(
version: v1
rules:
  - id: h
    when: {header.X-Env: production}
    decision: allow
)");
  ASSERT_TRUE(policy);
  Job job{"t"};
  job.headers = {{"X-Env", "production"}};
  EXPECT_EQ(decide(*policy, job).decision, Decision::allow);
  job.headers = {{"x-env", "production"}};
  EXPECT_EQ(decide(*policy, job).decision, Decision::deny);
  job.headers = {{"X-Env", "staging"}, {"X-Env", "production"}};
  EXPECT_EQ(decide(*policy, job).decision, Decision::deny);
  job.headers = {{"X-Env", "production"}, {"X-Env", "staging"}};
  EXPECT_EQ(decide(*policy, job).decision, Decision::allow);
  // Header conditions do not need a JSON payload.
  job.payload = "bytes";
  EXPECT_EQ(decide(*policy, job).decision, Decision::allow);
}

TEST(PolicyEvaluation, HeaderOperators) {
  const auto policy = load(R"(
version: v1
rules:
  - id: h
    when:
      header.Priority: {in: ["1", "2"]}
      header.Trace: {exists: false}
      header.Region: {matches: "^eu-"}
    decision: allow
)");
  ASSERT_TRUE(policy);
  Job job{"t"};
  job.headers = {{"Priority", "2"}, {"Region", "eu-west"}};
  EXPECT_EQ(decide(*policy, job).decision, Decision::allow);
  job.headers.emplace_back("Trace", "abc");
  EXPECT_EQ(decide(*policy, job).decision, Decision::deny);
  job.headers = {{"Priority", "3"}, {"Region", "eu-west"}};
  EXPECT_EQ(decide(*policy, job).decision, Decision::deny);
}

TEST(PolicyEvaluation, TopicAndSubjectWildcards) {
  const auto policy = load(R"(
version: v1
rules:
  - id: finance
    when: {topic: "finance.>"}
    decision: require_human
  - id: reads
    when: {topic: ["*.read", "*.list"]}
    decision: allow
  - id: by-subject
    when: {subject: "agents.jobs.*.ping"}
    decision: allow
)");
  ASSERT_TRUE(policy);
  EXPECT_EQ(ruleOf(*policy, Job{"finance.payment.execute"}), "finance");
  EXPECT_EQ(ruleOf(*policy, Job{"finance"}), "default");  // '>' needs one token or more
  EXPECT_EQ(ruleOf(*policy, Job{"knowledge.read"}), "reads");
  EXPECT_EQ(ruleOf(*policy, Job{"knowledge.list"}), "reads");
  EXPECT_EQ(ruleOf(*policy, Job{"knowledge.deep.read"}), "default");
  EXPECT_EQ(ruleOf(*policy, Job{"health.ping"}), "by-subject");
  Job other{"health.ping"};
  other.subject = "other.jobs.health.ping";
  EXPECT_EQ(ruleOf(*policy, other), "default");
}

TEST(PolicyEvaluation, CheapConditionsAreTriedFirst) {
  // The label condition is written first; the topic one still decides without a parse.
  const auto policy = load(R"(
version: v1
rules:
  - id: prod-finance
    when: {env: production, payload.amount: {gt: 1}, topic: finance.pay}
    decision: require_human
  - id: reads
    when: {topic: knowledge.read}
    decision: allow
)");
  ASSERT_TRUE(policy);
  EXPECT_EQ(policy->rules()[0].when.size(), 3u);
  Job job{"knowledge.read", R"({"env":"production","amount":5})"};
  const JobView view = job.view();
  EXPECT_EQ(policy->evaluate(view).decision, Decision::allow);
  EXPECT_FALSE(view.payloadParsed());

  job.topic = "finance.pay";
  const JobView finance = job.view();
  EXPECT_EQ(policy->evaluate(finance).decision, Decision::require_human);
  EXPECT_TRUE(finance.payloadParsed());
}

TEST(PolicyEvaluation, OverlongRegexInputFailsClosed) {
  const auto policy = load(R"(
version: v1
default_decision: allow
rules:
  - id: block-secrets
    when: {payload.note: {matches: "secret"}}
    decision: deny
    reason: secret
  - id: allow-all
    decision: allow
)");
  ASSERT_TRUE(policy);
  // Under the limit: evaluated (the polynomial executor does not recurse per character).
  const std::string near_limit(60 * 1024, 'a');
  EXPECT_EQ(ruleOf(*policy, Job{"t", R"({"note":")" + near_limit + R"("})"}), "allow-all");
  EXPECT_EQ(ruleOf(*policy, Job{"t", R"({"note":")" + near_limit + R"(secret"})"}),
            "block-secrets");
  // Over it: denied by the rule that could not be evaluated, never let through.
  const std::string beyond(70 * 1024, 'a');
  const Job job{"t", R"({"note":")" + beyond + R"("})"};
  const Verdict verdict = decide(*policy, job);
  EXPECT_EQ(verdict.decision, Decision::deny);
  EXPECT_TRUE(verdict.indeterminate);
  EXPECT_EQ(verdict.ruleId(), "block-secrets");
  const Explanation explanation = policy->explain(job.view());
  EXPECT_TRUE(explanation.verdict.indeterminate);
  ASSERT_EQ(explanation.trace.size(), 1u);
  EXPECT_THAT(explanation.trace[0], HasSubstr("cannot evaluate"));
}

TEST(PolicyEvaluation, AFailingConditionBeatsAnIndeterminateOne) {
  const auto policy = load(R"(
version: v1
default_decision: allow
rules:
  - id: r
    when: {payload.note: {matches: "x"}, payload.kind: {eq: special}}
    decision: deny
)");
  ASSERT_TRUE(policy);
  const std::string beyond(70 * 1024, 'a');
  const Verdict verdict =
      decide(*policy, Job{"t", R"({"kind":"plain","note":")" + beyond + R"("})"});
  EXPECT_EQ(verdict.decision, Decision::allow);
  EXPECT_FALSE(verdict.indeterminate);
}

// ---- snapshot -------------------------------------------------------------------------------

std::string snapshotOf(std::string_view yaml) {
  const auto policy = load(yaml);
  return policy ? policy->snapshot() : "<refused>";
}

constexpr std::string_view kBase = R"(
version: v1
rules:
  - id: allow-readonly
    when: {topic: knowledge.read}
    decision: allow
  - id: finance
    when: {topic: finance.payment.execute, env: production, payload.amount: {gt: 100}}
    decision: require_human
  - id: slow
    when: {topic: bulk.>}
    decision: throttle
    rate: 10/s
  - id: no
    when: {channel: [a, b]}
    decision: deny
)";

TEST(PolicySnapshot, StableAcrossFormAndEquivalentSpellings) {
  const std::string base = snapshotOf(kBase);
  EXPECT_THAT(base, StartsWith("v1:sha256:"));
  // Comments, key order, block style, whitespace, explicit defaults, `x` vs `{eq: x}`,
  // one-element lists, equivalent rates.
  const std::string_view same = R"(# the same policy, written differently
rules:
  - decision: allow      # read-only is fine
    id: allow-readonly
    when:
      topic: [knowledge.read]
  - id: finance
    decision: require_human
    when:
      payload.amount:
        gt: 100.0
      env: {eq: production}
      topic: [finance.payment.execute]
  - id: slow
    decision: throttle
    when: {topic: "bulk.>"}
    rate: "600/m"
    burst: 10
  - id: no
    when: {channel: {in: [b, a, a]}}
    decision: deny
    reason: ""
default_decision: deny
version: "v1"
)";
  EXPECT_EQ(snapshotOf(same), base);
}

TEST(PolicySnapshot, ChangesWithAnyChangeOfMeaning) {
  const std::string base = snapshotOf(kBase);
  const std::string text(kBase);
  const auto variant = [&](std::string_view from, std::string_view to) {
    std::string changed = text;
    const auto at = changed.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    changed.replace(at, from.size(), to);
    return snapshotOf(changed);
  };
  std::vector<std::string> snapshots = {
      variant("version: v1", "version: v2"),
      variant("knowledge.read}", "knowledge.write}"),
      variant("decision: allow", "decision: deny"),
      variant("gt: 100", "gt: 101"),
      variant("gt: 100", "gte: 100"),
      variant("env: production", "env: staging"),
      variant("env: production", "env: \"production \""),
      variant("rate: 10/s", "rate: 11/s"),
      variant("rate: 10/s", "rate: 10/s\n    burst: 20"),
      variant("rate: 10/s", "rate: 10/s\n    key: tenant"),
      variant("[a, b]", "[a, c]"),
      variant("decision: deny", "decision: deny\n    reason: no"),
      variant("version: v1", "version: v1\ndefault_decision: allow"),
      variant("decision: require_human", "decision: require_human\n    timeout: 1h"),
      variant("decision: require_human", "decision: require_human\n    quorum: 2"),
      variant("decision: require_human", "decision: require_human\n    quorum: {finance: 1}"),
      variant("decision: require_human", "decision: require_human\n    approvers: [alice]"),
      variant("decision: require_human", "decision: require_human\n    approvers: [group:finance]"),
      variant("decision: require_human", "decision: require_human\n    requester: header.X-By"),
      variant("decision: require_human",
              "decision: require_human\n    requester: header.X-By\n    separation_of_duties: true"),
      variant("decision: require_human",
              "decision: require_human\n    escalate: [{after: 10m, approvers: [cfo]}]"),
      // Rule order is meaning (first match wins).
      variant("  - id: allow-readonly\n    when: {topic: knowledge.read}\n    decision: allow\n",
              ""),
  };
  for (std::size_t i = 0; i < snapshots.size(); ++i) {
    EXPECT_NE(snapshots[i], base) << "variant " << i;
    EXPECT_NE(snapshots[i], "<refused>") << "variant " << i;
    for (std::size_t j = 0; j < i; ++j) EXPECT_NE(snapshots[i], snapshots[j]) << i << " " << j;
  }
  // Swapping two rules.
  const auto swapped = load(R"(
version: v1
rules:
  - {id: b, when: {topic: b}, decision: deny}
  - {id: a, when: {topic: a}, decision: allow}
)");
  const auto ordered = load(R"(
version: v1
rules:
  - {id: a, when: {topic: a}, decision: allow}
  - {id: b, when: {topic: b}, decision: deny}
)");
  ASSERT_TRUE(swapped && ordered);
  EXPECT_NE(swapped->snapshot(), ordered->snapshot());
}

TEST(PolicySnapshot, GovernanceDefaultsWrittenOutChangeNothing) {
  const std::string base = snapshotOf(kBase);
  std::string explicit_defaults(kBase);
  const std::string_view from = "decision: require_human";
  explicit_defaults.replace(explicit_defaults.find(from), from.size(),
                            "decision: require_human\n    quorum: 1\n    separation_of_duties: false");
  EXPECT_EQ(snapshotOf(explicit_defaults), base);
}

TEST(PolicyGovernance, KeysAreLoaded) {
  const auto policy = load(R"(
version: v1
rules:
  - id: pay
    when: {topic: pay}
    decision: require_human
    approvers: [group:finance-leads, carol]
    quorum: {finance-leads: 1, security: 1}
    separation_of_duties: true
    requester: subject.2
    timeout: 30m
    escalate:
      - {after: 10m, approvers: [group:cfo]}
      - {after: 20m, approvers: [dave]}
)");
  ASSERT_TRUE(policy);
  const HumanSpec& h = policy->rules()[0].human;
  EXPECT_EQ(h.approvers, (std::vector<std::string>{"group:finance-leads", "carol"}));
  EXPECT_EQ(h.quorum.per_group.at("security"), 1);
  EXPECT_EQ(h.quorum.needed(), 2);
  EXPECT_TRUE(h.separation_of_duties);
  EXPECT_EQ(h.requester, "subject.2");
  ASSERT_EQ(h.escalate.size(), 2u);
  EXPECT_EQ(h.escalate[1].after, std::chrono::minutes(20));
}

TEST(PolicySnapshot, NumberAndStringLiteralsDiffer) {
  EXPECT_NE(snapshotOf("version: v1\nrules:\n  - {id: a, when: {tier: 1}, decision: allow}\n"),
            snapshotOf("version: v1\nrules:\n  - {id: a, when: {tier: \"1\"}, decision: allow}\n"));
}

TEST(PolicySnapshot, CanonicalJsonIsTheNormalisedPolicy) {
  const auto policy = load(R"(
version: v1
rules:
  - id: a
    when: {topic: x.y, env: prod, payload.n: [2, 1]}
    decision: require_human
    timeout: 2s
  - id: t
    decision: throttle
    rate: 5/s
)");
  ASSERT_TRUE(policy);
  EXPECT_EQ(policy->canonicalJson(),
            R"({"default_decision":"deny","rules":[{"decision":"require_human","id":"a",)"
            R"("on_timeout":"reject","timeout_ms":2000,"when":{"env":{"eq":"prod"},)"
            R"("payload.n":{"in":[1,2]},"topic":{"patterns":["x.y"]}}},)"
            R"({"burst":5,"decision":"throttle","id":"t","key":"","rate_per_second":5,"when":{}}],)"
            R"("version":"v1"})");
}

// ---- refused policies -----------------------------------------------------------------------

struct RefusalCase {
  std::string name;
  std::string yaml;
  std::string message;  // expected substring, starting with the path
};

void PrintTo(const RefusalCase& c, std::ostream* out) {
  *out << c.name;
}

class Refusals : public ::testing::TestWithParam<RefusalCase> {};

TEST_P(Refusals, NameThePath) {
  const RefusalCase& c = GetParam();
  const std::string message = refusal(c.yaml);
  EXPECT_THAT(message, HasSubstr(c.message)) << c.yaml;
  EXPECT_THAT(message, StartsWith("test")) << "the source prefixes every message";
}

std::string rule(std::string_view body) {
  return "version: v1\nrules:\n  - id: r\n" + std::string(body);
}

INSTANTIATE_TEST_SUITE_P(
    Policy, Refusals,
    ::testing::Values(
        RefusalCase{"EmptyFile", "", "test: empty document"},
        RefusalCase{"OnlyComments", "# nothing here\n", "test: empty document"},
        RefusalCase{"BadYamlSyntax", "version: v1\nrules: [\n  - id: a\n", "test:"},
        RefusalCase{"StrayComma", ",version: v1\nrules: []\n", "test:1:1: unexpected content"},
        RefusalCase{"ExplicitNull", "~\n", "test: empty document"},
        RefusalCase{"TwoDocuments", "version: v1\nrules: []\n---\nversion: v2\n",
                    "expected one YAML document"},
        RefusalCase{"NotAMapping", "- a\n- b\n", "test: expected a mapping, got a list"},
        RefusalCase{"UnknownTopLevelKey", "version: v1\nrules: []\nrule: []\n",
                    "rule: unknown key (expected one of: version, rules, default_decision)"},
        RefusalCase{"MissingVersion", "rules: []\n", "version: required key is missing"},
        RefusalCase{"MissingRules", "version: v1\n", "rules: required key is missing"},
        RefusalCase{"NumericVersion", "version: 1\nrules: []\n",
                    "version: expected a string, got 1"},
        RefusalCase{"VersionWithColon", "version: \"a:b\"\nrules: []\n",
                    "version: expected a version"},
        RefusalCase{"RulesNotAList", "version: v1\nrules: {}\n",
                    "rules: expected a list, got a mapping"},
        RefusalCase{"NullRules", "version: v1\nrules:\n", "rules: expected a list, got null"},
        RefusalCase{"ThrottleDefault", "version: v1\ndefault_decision: throttle\nrules: []\n",
                    "default_decision: expected allow, deny or require_human, got \"throttle\""},
        RefusalCase{"UnknownRuleKey", rule("    decison: allow\n"),
                    "rules[0].decison: unknown key (expected one of: id, when, decision"},
        RefusalCase{"ApproversOnAllow", rule("    decision: allow\n    approvers: [a]\n"),
                    "rules[0].approvers: only allowed with decision require_human"},
        RefusalCase{"ApproverBadName", rule("    decision: require_human\n    approvers: [\"a b\"]\n"),
                    "rules[0].approvers[0]: expected a name or group:<group>"},
        RefusalCase{"ApproversEmpty", rule("    decision: require_human\n    approvers: []\n"),
                    "rules[0].approvers: expected at least one approver"},
        RefusalCase{"QuorumZero", rule("    decision: require_human\n    quorum: 0\n"),
                    "rules[0].quorum: expected an integer from 1 to 100, got 0"},
        RefusalCase{"QuorumGroupZero", rule("    decision: require_human\n    quorum: {finance: 0}\n"),
                    "rules[0].quorum.finance: expected an integer from 1 to 100, got 0"},
        RefusalCase{"QuorumWord", rule("    decision: require_human\n    quorum: two\n"),
                    "rules[0].quorum: expected an integer"},
        RefusalCase{"SeparationWithoutRequester",
                    rule("    decision: require_human\n    separation_of_duties: true\n"),
                    "rules[0].separation_of_duties: needs requester"},
        RefusalCase{"RequesterBadSource", rule("    decision: require_human\n    requester: body.user\n"),
                    "rules[0].requester: expected header.<Name>, payload.<path>, labels.<name> or subject.<n>"},
        RefusalCase{"EscalateNotLater",
                    rule("    decision: require_human\n    escalate:\n      - {after: 10m, approvers: [a]}\n"
                         "      - {after: 5m, approvers: [b]}\n"),
                    "rules[0].escalate[1].after: expected a positive duration, later than the step before"},
        RefusalCase{"EscalateWithoutApprovers",
                    rule("    decision: require_human\n    escalate:\n      - {after: 10m}\n"),
                    "rules[0].escalate[0].approvers: required key is missing"},
        RefusalCase{"MissingId", "version: v1\nrules:\n  - decision: allow\n",
                    "rules[0].id: required key is missing"},
        RefusalCase{"MissingDecision", rule("    when: {topic: a}\n"),
                    "rules[0].decision: required key is missing"},
        RefusalCase{"WrongDecision", rule("    decision: alow\n"),
                    "rules[0].decision: expected allow, deny, throttle or require_human, got "
                    "\"alow\""},
        RefusalCase{"DuplicateRuleId",
                    "version: v1\nrules:\n  - {id: a, decision: allow}\n  - {id: b, decision: "
                    "allow}\n  - {id: a, decision: deny}\n",
                    "rules[2].id: duplicate rule id \"a\""},
        RefusalCase{"ReservedRuleId", "version: v1\nrules:\n  - {id: default, decision: allow}\n",
                    "rules[0].id: \"default\" is reserved"},
        RefusalCase{"RuleIdWithSpace", "version: v1\nrules:\n  - {id: \"a b\", decision: allow}\n",
                    "rules[0].id: expected a rule id"},
        RefusalCase{"DuplicateYamlKey", rule("    decision: allow\n    decision: deny\n"),
                    "rules[0].decision: duplicate key"},
        RefusalCase{"DuplicateConditionKey",
                    rule("    when:\n      topic: a\n      topic: b\n    decision: allow\n"),
                    "rules[0].when.topic: duplicate key"},
        RefusalCase{"WhenNotAMapping", rule("    when: [a]\n    decision: allow\n"),
                    "rules[0].when: expected a mapping, got a list"},
        RefusalCase{"ThrottleWithoutRate", rule("    decision: throttle\n"),
                    "rules[0].rate: required key is missing"},
        RefusalCase{"BadRate", rule("    decision: throttle\n    rate: 10/d\n"),
                    "rules[0].rate: expected a rate like \"10/s\", \"600/m\" or \"3600/h\", got "
                    "\"10/d\""},
        RefusalCase{"ZeroRate", rule("    decision: throttle\n    rate: 0/s\n"),
                    "rules[0].rate: expected a rate"},
        RefusalCase{"NumericRate", rule("    decision: throttle\n    rate: 10\n"),
                    "rules[0].rate: expected a string, got 10"},
        RefusalCase{"ZeroBurst", rule("    decision: throttle\n    rate: 1/s\n    burst: 0\n"),
                    "rules[0].burst: expected an integer from 1 to"},
        RefusalCase{"BadThrottleKey",
                    rule("    decision: throttle\n    rate: 1/s\n    key: \"header.\"\n"),
                    "rules[0].key: expected a label name or header.<name>"},
        RefusalCase{"RateOnAllow", rule("    decision: allow\n    rate: 10/s\n"),
                    "rules[0].rate: only allowed with decision throttle"},
        RefusalCase{"KeyOnDeny", rule("    decision: deny\n    key: tenant\n"),
                    "rules[0].key: only allowed with decision throttle"},
        RefusalCase{"ReasonOnAllow", rule("    decision: allow\n    reason: x\n"),
                    "rules[0].reason: only allowed with decision deny"},
        RefusalCase{"TimeoutOnAllow", rule("    decision: allow\n    timeout: 1h\n"),
                    "rules[0].timeout: only allowed with decision require_human"},
        RefusalCase{"BadTimeout", rule("    decision: require_human\n    timeout: 1d\n"),
                    "rules[0].timeout: expected a duration like 500ms, 5s, 30m or 2h, got \"1d\""},
        RefusalCase{"OnTimeoutAllowUnacknowledged",
                    rule("    decision: require_human\n    timeout: 1h\n    on_timeout: allow\n"),
                    "rules[0].on_timeout: \"allow\" releases held jobs without review"},
        RefusalCase{"OnTimeoutAllowAcknowledgedFalse",
                    rule("    decision: require_human\n    timeout: 1h\n    on_timeout: allow\n"
                         "    allow_on_timeout_acknowledged: false\n"),
                    "rules[0].on_timeout: \"allow\" releases held jobs without review"},
        RefusalCase{"OnTimeoutWithoutTimeout",
                    rule("    decision: require_human\n    on_timeout: reject\n"),
                    "rules[0].on_timeout: needs a timeout"},
        RefusalCase{"BadOnTimeout",
                    rule("    decision: require_human\n    timeout: 1h\n    on_timeout: approve\n"),
                    "rules[0].on_timeout: expected reject or allow, got \"approve\""},
        RefusalCase{"GtWithString",
                    rule("    when: {payload.amount: {gt: ten}}\n    decision: allow\n"),
                    "rules[0].when.payload.amount.gt: expected a number, got \"ten\""},
        RefusalCase{"GtOnHeader", rule("    when: {header.Size: {gt: 1}}\n    decision: allow\n"),
                    "rules[0].when.header.Size.gt: header values are strings: gt compares numbers"},
        RefusalCase{"NumberForHeader", rule("    when: {header.Prio: 1}\n    decision: allow\n"),
                    "rules[0].when.header.Prio: header values are strings: expected a string, "
                    "got 1"},
        RefusalCase{"BadRegex",
                    rule("    when: {payload.x: {matches: \"(ab\"}}\n    decision: allow\n"),
                    "rules[0].when.payload.x.matches: invalid regex \"(ab\""},
        RefusalCase{"RegexEscapingItsGroup",
                    rule("    when: {payload.x: {matches: \"a)|(b\"}}\n    decision: allow\n"),
                    "rules[0].when.payload.x.matches: invalid regex"},
        RefusalCase{"RegexBackreference",
                    rule("    when: {payload.x: {matches: \"(a)\\\\1\"}}\n    decision: allow\n"),
                    "rules[0].when.payload.x.matches: invalid regex \"(a)\\\\1\": invalid escape "
                    "sequence: \\1 (RE2 syntax: no lookaround, no backreferences)"},
        RefusalCase{"RegexLookahead",
                    rule("    when: {payload.x: {matches: \"a(?=b)\"}}\n    decision: allow\n"),
                    "rules[0].when.payload.x.matches: invalid regex \"a(?=b)\": invalid perl "
                    "operator: (?= (RE2 syntax: no lookaround, no backreferences)"},
        RefusalCase{"RegexLookbehind",
                    rule("    when: {header.X: {matches: \"(?<!a)b\"}}\n    decision: allow\n"),
                    "rules[0].when.header.X.matches: invalid regex \"(?<!a)b\""},
        RefusalCase{"RegexProgramTooLarge",
                    rule("    when: {payload.x: {matches: \"(a|b|c|d|e|f|g|h){1,500}z\"}}\n"
                         "    decision: allow\n"),
                    "rules[0].when.payload.x.matches: regex \"(a|b|c|d|e|f|g|h){1,500}z\" compiles to "},
        RefusalCase{"RegexRepeatBeyondRe2",
                    rule("    when: {payload.x: {matches: \"a{1001}\"}}\n    decision: allow\n"),
                    "rules[0].when.payload.x.matches: invalid regex \"a{1001}\": invalid "
                    "repetition size: {1001}"},
        RefusalCase{"RegexTooLong",
                    rule("    when: {payload.x: {matches: \"" + std::string(1025, 'a') +
                         "\"}}\n    decision: allow\n"),
                    "rules[0].when.payload.x.matches: regex longer than 1024 characters"},
        RefusalCase{"UnknownOperator",
                    rule("    when: {env: {equals: prod}}\n    decision: allow\n"),
                    "rules[0].when.env.equals: unknown key (expected one of: eq, ne, in, not_in, "
                    "gt, gte, lt, lte, matches, exists)"},
        RefusalCase{"EmptyOperatorMap", rule("    when: {env: {}}\n    decision: allow\n"),
                    "rules[0].when.env: expected at least one operator"},
        RefusalCase{"EmptyInList", rule("    when: {env: {in: []}}\n    decision: allow\n"),
                    "rules[0].when.env.in: expected a non-empty list"},
        RefusalCase{"ListInsideEq", rule("    when: {env: {eq: [a]}}\n    decision: allow\n"),
                    "rules[0].when.env.eq: expected a scalar, got a list"},
        RefusalCase{"ExistsNotBool", rule("    when: {env: {exists: yes}}\n    decision: allow\n"),
                    "rules[0].when.env.exists: expected true or false, got \"yes\""},
        RefusalCase{"InfiniteNumber", rule("    when: {n: {lt: .inf}}\n    decision: allow\n"),
                    "rules[0].when.n.lt: not a finite number"},
        RefusalCase{"HugeInteger", rule("    when: {n: 18014398509481984}\n    decision: allow\n"),
                    "rules[0].when.n: integer out of range"},
        RefusalCase{"BadTopicPattern", rule("    when: {topic: \"a..b\"}\n    decision: allow\n"),
                    "rules[0].when.topic: expected a NATS subject pattern, got \"a..b\""},
        RefusalCase{"BadTopicInList",
                    rule("    when: {topic: [a, \"b.>.c\"]}\n    decision: allow\n"),
                    "rules[0].when.topic[1]: expected a NATS subject pattern"},
        RefusalCase{"TopicOperatorMap", rule("    when: {topic: {eq: a}}\n    decision: allow\n"),
                    "rules[0].when.topic: expected a subject pattern or a list of patterns"},
        RefusalCase{"DottedLabel", rule("    when: {labels.env: prod}\n    decision: allow\n"),
                    "rules[0].when.labels.env: unknown condition"},
        RefusalCase{"BarePayload",
                    rule("    when: {payload: {exists: true}}\n    decision: allow\n"),
                    "rules[0].when.payload: expected payload.<path>"},
        RefusalCase{"EmptyPathSegment", rule("    when: {payload.a..b: 1}\n    decision: allow\n"),
                    "rules[0].when.payload.a..b: empty segment in payload path"},
        RefusalCase{"EmptyHeaderName", rule("    when: {header.: a}\n    decision: allow\n"),
                    "rules[0].when.header.: expected header.<name>"},
        RefusalCase{"UnsupportedTag", rule("    when: {env: !secret x}\n    decision: allow\n"),
                    "rules[0].when.env: unsupported tag !secret"}),
    [](const ::testing::TestParamInfo<RefusalCase>& param_info) { return param_info.param.name; });

TEST(PolicyLoad, SyntaxErrorsCarryLineAndColumn) {
  const std::string message = refusal("version: v1\nrules:\n  - id: a\n    when: {topic: [a}\n");
  EXPECT_THAT(message, ::testing::MatchesRegex("test:[0-9]+:[0-9]+: .*")) << message;
  const auto result = Policy::parse("a: [", "test");
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, Errc::parse_error);
}

TEST(PolicyLoad, ValidationErrorsAreInvalidArgument) {
  const auto result = Policy::parse("version: v1\nrules: 3\n", "test");
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, Errc::invalid_argument);
}

TEST(PolicyLoad, MissingFileIsAnIoError) {
  const auto result = Policy::loadFile("/nonexistent/policy.yaml");
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, Errc::io);
  EXPECT_THAT(result.error().message, HasSubstr("/nonexistent/policy.yaml"));
}

TEST(PolicyLoad, OnTimeoutAllowWithAcknowledgement) {
  const auto policy =
      load(rule("    decision: require_human\n    timeout: 45s\n    on_timeout: allow\n"
                "    allow_on_timeout_acknowledged: true\n"));
  ASSERT_TRUE(policy);
  EXPECT_EQ(policy->rules()[0].human.on_timeout, "allow");
  EXPECT_EQ(*policy->rules()[0].human.timeout, std::chrono::seconds(45));
}

TEST(PolicyLoad, AliasesAreResolved) {
  const auto policy = load(R"(
version: v1
rules:
  - id: r
    when: {topic: [&read knowledge.read, "x.y"], subject: [*read, "agents.jobs.>"]}
    decision: allow
)");
  ASSERT_TRUE(policy);
  EXPECT_EQ(decide(*policy, Job{"knowledge.read"}).decision, Decision::allow);
}

TEST(PolicyLoad, QuotedScalarsAreStrings) {
  const auto policy = load(R"(
version: "1.0"
rules:
  - id: r
    when: {tier: "1", flag: "true", none: "null"}
    decision: allow
)");
  ASSERT_TRUE(policy);
  EXPECT_EQ(policy->version(), "1.0");
  EXPECT_EQ(decide(*policy, Job{"t", R"({"tier":"1","flag":"true","none":"null"})"}).decision,
            Decision::allow);
  EXPECT_EQ(decide(*policy, Job{"t", R"({"tier":1,"flag":true,"none":null})"}).decision,
            Decision::deny);
}

TEST(PolicyLoad, CoreSchemaNumbers) {
  const auto policy = load(R"(
version: v1
rules:
  - id: r
    when: {a: 0x10, b: 0o17, c: -2.5e1, d: +3}
    decision: allow
)");
  ASSERT_TRUE(policy);
  EXPECT_EQ(decide(*policy, Job{"t", R"({"a":16,"b":15,"c":-25,"d":3})"}).decision,
            Decision::allow);
}

// The fuzz seed corpus holds what it claims to: valid policies load, invalid ones are refused.
TEST(PolicyLoad, FuzzCorpusFilesAreWhatTheirNamesSay) {
  const std::string corpus =
      std::string(COUNTERSIGN_SOURCE_DIR) + "/tests/fuzz/corpus/policy_fuzz/";
  for (const char* name : {"seed.yaml", "full.yaml", "throttle.yaml", "aliases.yaml"}) {
    const auto policy = Policy::loadFile(corpus + name);
    EXPECT_TRUE(policy.has_value()) << name << ": " << (policy ? "" : policy.error().message);
  }
  for (const char* name : {"bad_regex.yaml", "unknown_key.yaml", "syntax_error.yaml",
                           "duplicate_id.yaml", "gt_string.yaml", "on_timeout_allow.yaml",
                           "empty.yaml", "deep_flow.yaml", "binary.bin", "stray_comma.yaml"}) {
    EXPECT_FALSE(Policy::loadFile(corpus + name).has_value()) << name;
  }
}

TEST(DecisionNames, MatchThePolicyLanguage) {
  EXPECT_EQ(toString(Decision::allow), "allow");
  EXPECT_EQ(toString(Decision::deny), "deny");
  EXPECT_EQ(toString(Decision::throttle), "throttle");
  EXPECT_EQ(toString(Decision::require_human), "require_human");
}

}  // namespace
}  // namespace countersign
