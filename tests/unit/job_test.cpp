#include "countersign/job.hpp"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "countersign/json.hpp"
#include "countersign/message.hpp"

namespace countersign {
namespace {

constexpr std::string_view kSubject = "agents.jobs.finance.payment.execute";
constexpr std::string_view kTarget = "jobs.finance.payment.execute";
constexpr std::string_view kPayload =
    R"({"id":"job-1","amount":120.5,"env":"production","labels":{"team":"a"}})";

// The hash as intake computes it: one strict parse, JSON when it parses, bytes otherwise.
std::string hashOf(std::string_view payload, const Headers& headers = {},
                   std::string_view subject = kSubject, std::string_view target = kTarget) {
  auto parsed = json::parseStrict(payload);
  return jobHash(subject, target, headers, parsed ? &*parsed : nullptr, payload);
}

std::string sha256Of(std::string_view canonical_text) {
  return "sha256:" + json::sha256Hex(canonical_text);
}

// ---- job hash ------------------------------------------------------------------------------

TEST(JobHash, MatchesTheDocumentedCanonicalText) {
  const Headers headers = {{"X-B", "2"}, {"X-A", "first"}, {"Nats-Msg-Id", "m"}, {"X-A", "second"}};
  EXPECT_EQ(
      hashOf(R"({ "b": [true, null], "a": 1.50 })", headers, "in.x", "out.x"),
      sha256Of(R"({"headers":{"X-A":["first","second"],"X-B":["2"]},)"
               R"("payload_json":{"a":1.5,"b":[true,null]},"subject":"in.x","target":"out.x"})"));
}

TEST(JobHash, BytesPayloadIsBase64) {
  EXPECT_EQ(
      hashOf("not json", {}, "in.x", "out.x"),
      sha256Of(R"({"headers":{},"payload_b64":"bm90IGpzb24=","subject":"in.x","target":"out.x"})"));
}

TEST(JobHash, EmptyPayloadIsBytes) {
  EXPECT_EQ(hashOf("", {}, "in.x", "out.x"),
            sha256Of(R"({"headers":{},"payload_b64":"","subject":"in.x","target":"out.x"})"));
  // Even when a caller hands a parse along, an empty payload is hashed as bytes.
  auto parsed = json::parseStrict("{}");
  ASSERT_TRUE(parsed);
  EXPECT_EQ(jobHash("in.x", "out.x", {}, &*parsed, ""), hashOf("", {}, "in.x", "out.x"));
}

TEST(JobHash, HasTheDocumentedForm) {
  const std::string hash = hashOf(kPayload);
  ASSERT_EQ(hash.size(), 7u + 64u);
  EXPECT_TRUE(hash.starts_with("sha256:"));
  EXPECT_EQ(hash.find_first_not_of("0123456789abcdef", 7), std::string::npos);
}

TEST(JobHash, KeyOrderAndWhitespaceOfPayloadDoNotChangeIt) {
  const std::string reordered =
      "{ \"labels\" : {\"team\":\"a\"},\n\t\"env\":\"production\", \"amount\": 1205e-1, "
      "\"id\":\"job-1\" }\r\n";
  EXPECT_EQ(hashOf(kPayload), hashOf(reordered));
}

TEST(JobHash, EscapedAndLiteralCharactersHashAlike) {
  EXPECT_EQ(hashOf(R"({"k":"\u00e9\/"})"), hashOf("{\"k\":\"\xC3\xA9/\"}"));
}

TEST(JobHash, ChangesWithEveryValue) {
  const std::string base = hashOf(kPayload);
  EXPECT_NE(base,
            hashOf(R"({"id":"job-1","amount":120.6,"env":"production","labels":{"team":"a"}})"));
  EXPECT_NE(base, hashOf(R"({"id":"job-1","amount":120.5,"env":"staging","labels":{"team":"a"}})"));
  EXPECT_NE(base,
            hashOf(R"({"id":"job-1","amount":120.5,"env":"production","labels":{"team":"b"}})"));
  EXPECT_NE(base,
            hashOf(R"({"id":"job-1","amount":"120.5","env":"production","labels":{"team":"a"}})"));
  EXPECT_NE(
      base,
      hashOf(R"({"id":"job-1","amount":120.5,"env":"production","labels":{"team":"a"},"x":null})"));
  EXPECT_NE(hashOf("[1,2]"), hashOf("[2,1]"));
}

TEST(JobHash, ChangesWithSubjectAndTarget) {
  const std::string base = hashOf(kPayload);
  EXPECT_NE(base, hashOf(kPayload, {}, "agents.jobs.finance.payment.refund", kTarget));
  EXPECT_NE(base, hashOf(kPayload, {}, kSubject, "jobs.finance.payment.refund"));
  // Subject and target are separate fields: swapping them is a different job.
  EXPECT_NE(hashOf(kPayload, {}, "a", "b"), hashOf(kPayload, {}, "b", "a"));
}

TEST(JobHash, ChangesWithKeptHeaders) {
  const Headers one = {{"X-Trace", "1"}};
  const std::string base = hashOf(kPayload, one);
  EXPECT_NE(base, hashOf(kPayload));
  EXPECT_NE(base, hashOf(kPayload, {{"X-Trace", "2"}}));
  EXPECT_NE(base, hashOf(kPayload, {{"x-trace", "1"}}));  // names are byte-exact
  EXPECT_NE(base, hashOf(kPayload, {{"X-Trace", "1"}, {"X-Trace", "1"}}));
  EXPECT_NE(base, hashOf(kPayload, {{"X-Trace", "1"}, {"X-Other", ""}}));
}

TEST(JobHash, ValueOrderOfOneHeaderMatters) {
  EXPECT_NE(hashOf(kPayload, {{"X-A", "1"}, {"X-A", "2"}}),
            hashOf(kPayload, {{"X-A", "2"}, {"X-A", "1"}}));
}

TEST(JobHash, OrderBetweenHeaderNamesDoesNotMatter) {
  EXPECT_EQ(hashOf(kPayload, {{"X-A", "1"}, {"X-B", "2"}, {"X-A", "3"}}),
            hashOf(kPayload, {{"X-B", "2"}, {"X-A", "1"}, {"X-A", "3"}}));
}

TEST(JobHash, NatsAndCountersignHeadersAreExcludedInAnyCase) {
  const Headers kept = {{"X-Keep", "k"}};
  const Headers noisy = {{"Nats-Msg-Id", "m1"},
                         {"X-Keep", "k"},
                         {"NATS-Expected-Stream", "S"},
                         {"nats-rollup", "sub"},
                         {"Countersign-Approval", "granted"},
                         {"COUNTERSIGN-JOB-HASH", "x"},
                         {"countersign-job-id", "j"}};
  EXPECT_EQ(hashOf(kPayload, kept), hashOf(kPayload, noisy));
  EXPECT_EQ(hashOf(kPayload), hashOf(kPayload, {{"Nats-Msg-Id", "m1"}, {"Countersign-X", "y"}}));
  // Only the prefix counts: a header that merely contains it is kept.
  EXPECT_NE(hashOf(kPayload), hashOf(kPayload, {{"X-Nats-Msg-Id", "m1"}}));
  EXPECT_NE(hashOf(kPayload), hashOf(kPayload, {{"Natsy", "1"}}));
}

TEST(JobHash, ManyHeadersAreGroupedAndSorted) {
  Headers forward;
  Headers backward;
  for (int i = 0; i < 40; ++i)
    forward.emplace_back("X-" + std::to_string(i % 20), std::to_string(i));
  for (int i = 19; i >= 0; --i) {
    backward.emplace_back("X-" + std::to_string(i), std::to_string(i));
  }
  for (int i = 20; i < 40; ++i)
    backward.emplace_back("X-" + std::to_string(i % 20), std::to_string(i));
  EXPECT_EQ(hashOf(kPayload, forward), hashOf(kPayload, backward));
}

TEST(JobHash, InvalidJsonIsHashedAsBytes) {
  for (const std::string_view payload :
       {std::string_view("{\"a\":1"), std::string_view("[NaN]"), std::string_view("\xEF\xBB\xBF{}"),
        std::string_view("[9007199254740993]")}) {
    EXPECT_EQ(hashOf(payload), jobHash(kSubject, kTarget, {}, nullptr, payload)) << payload;
  }
}

TEST(JobHash, DuplicateKeysAreBytesAndDifferFromEitherParse) {
  const std::string_view duplicated = R"({"env":"staging","env":"production"})";
  EXPECT_FALSE(json::parseStrict(duplicated).has_value());
  const std::string hash = hashOf(duplicated);
  EXPECT_EQ(hash, jobHash(kSubject, kTarget, {}, nullptr, duplicated));
  EXPECT_NE(hash, hashOf(R"({"env":"production"})"));
  EXPECT_NE(hash, hashOf(R"({"env":"staging"})"));
}

TEST(JobHash, JsonAndBytesPathsDiffer) {
  auto parsed = json::parseStrict("{}");
  ASSERT_TRUE(parsed);
  EXPECT_NE(jobHash(kSubject, kTarget, {}, &*parsed, "{}"),
            jobHash(kSubject, kTarget, {}, nullptr, "{}"));
}

TEST(JobHash, BinaryPayloadAndOddSubjectBytes) {
  const std::string binary("\x00\xFF\x01\"", 4);
  EXPECT_EQ(
      jobHash("in\"x", "out\xFF", {{"X-Bin", std::string("\x00\x01", 2)}}, nullptr, binary),
      sha256Of(std::string(R"({"headers":{"X-Bin":["\u0000\u0001"]},"payload_b64":"AP8BIg==",)") +
               "\"subject\":\"in\\\"x\",\"target\":\"out\xFF\"}"));
}

// ---- untrusted headers ---------------------------------------------------------------------

TEST(StripCountersignHeaders, ReadsJobIdAndReplyToThenRemovesAllCountersignHeaders) {
  Headers headers = {{"Countersign-Job-Id", "job-7"},
                     {"COUNTERSIGN-x", "1"},
                     {"X-Keep", "k"},
                     {"countersign-y", "2"},
                     {"Countersign-Reply-To", "_INBOX.r"},
                     {"Nats-Msg-Id", "m"},
                     {"Countersign-Approval", "granted"},
                     {"X-Keep", "k2"}};
  const UntrustedHeaders untrusted = stripCountersignHeaders(headers);
  EXPECT_EQ(untrusted.job_id, "job-7");
  EXPECT_EQ(untrusted.reply_to, "_INBOX.r");
  const Headers expected = {{"X-Keep", "k"}, {"Nats-Msg-Id", "m"}, {"X-Keep", "k2"}};
  EXPECT_EQ(headers, expected);
}

TEST(StripCountersignHeaders, ReadsNamesInAnyCaseFirstValueWins) {
  Headers headers = {{"countersign-job-id", "first"},
                     {"Countersign-Job-Id", "second"},
                     {"COUNTERSIGN-REPLY-TO", "_INBOX.a"}};
  const UntrustedHeaders untrusted = stripCountersignHeaders(headers);
  EXPECT_EQ(untrusted.job_id, "first");
  EXPECT_EQ(untrusted.reply_to, "_INBOX.a");
  EXPECT_TRUE(headers.empty());
}

TEST(StripCountersignHeaders, AbsentHeadersGiveNullopt) {
  Headers headers = {{"X-A", "1"}, {"Countersign", "not a prefix match"}};
  const UntrustedHeaders untrusted = stripCountersignHeaders(headers);
  EXPECT_FALSE(untrusted.job_id.has_value());
  EXPECT_FALSE(untrusted.reply_to.has_value());
  EXPECT_EQ(headers.size(), 2u);
}

TEST(HeaderClasses, PrefixesAreCaseInsensitive) {
  EXPECT_TRUE(isCountersignHeader("Countersign-Approval"));
  EXPECT_TRUE(isCountersignHeader("cOUNTERSIGN-"));
  EXPECT_FALSE(isCountersignHeader("Countersign"));
  EXPECT_FALSE(isCountersignHeader("X-Countersign-Approval"));
  EXPECT_TRUE(isNatsHeader("Nats-Msg-Id"));
  EXPECT_TRUE(isNatsHeader("NATS-EXPECTED-STREAM"));
  EXPECT_FALSE(isNatsHeader("Nats"));
  EXPECT_FALSE(isNatsHeader("X-Nats-Msg-Id"));
}

// ---- job id ----------------------------------------------------------------------------------

TEST(JobIdOf, Precedence) {
  auto payload = json::parseStrict(R"({"id":"from-id","job_id":"from-job-id"})");
  ASSERT_TRUE(payload);
  const Headers with_msg_id = {{"Nats-Msg-Id", "from-msg-id"}};
  EXPECT_EQ(jobIdOf(with_msg_id, "from-header", &*payload), "from-msg-id");
  EXPECT_EQ(jobIdOf({}, "from-header", &*payload), "from-header");
  EXPECT_EQ(jobIdOf({}, std::nullopt, &*payload), "from-id");
  auto job_id_only = json::parseStrict(R"({"job_id":"from-job-id"})");
  ASSERT_TRUE(job_id_only);
  EXPECT_EQ(jobIdOf({}, std::nullopt, &*job_id_only), "from-job-id");
  EXPECT_EQ(jobIdOf({}, std::nullopt, nullptr), std::nullopt);
}

TEST(JobIdOf, SkipsEmptyAndNonStringCandidates) {
  auto payload = json::parseStrict(R"({"id":42,"job_id":""})");
  ASSERT_TRUE(payload);
  EXPECT_EQ(jobIdOf({{"Nats-Msg-Id", ""}}, std::string(), &*payload), std::nullopt);
  auto numeric_id = json::parseStrict(R"({"id":7,"job_id":"j"})");
  ASSERT_TRUE(numeric_id);
  EXPECT_EQ(jobIdOf({}, std::nullopt, &*numeric_id), "j");
  auto array = json::parseStrict(R"(["id"])");
  ASSERT_TRUE(array);
  EXPECT_EQ(jobIdOf({}, std::nullopt, &*array), std::nullopt);
  auto nested = json::parseStrict(R"({"job":{"id":"inner"}})");
  ASSERT_TRUE(nested);
  EXPECT_EQ(jobIdOf({}, std::nullopt, &*nested), std::nullopt);
}

TEST(JobIdOf, NatsMsgIdIsByteExact) {
  EXPECT_EQ(jobIdOf({{"nats-msg-id", "lower"}}, "from-header", nullptr), "from-header");
  EXPECT_EQ(jobIdOf({{"X-Nats-Msg-Id", "x"}, {"Nats-Msg-Id", "real"}}, std::nullopt, nullptr),
            "real");
}

// ---- approval id -----------------------------------------------------------------------------

std::string hashedId(std::string_view job_id) {
  return "h-" + json::sha256Hex(job_id).substr(0, 32);
}

TEST(ApprovalIdFor, KeepsValidIds) {
  const std::vector<std::string> ids = {"job-1",
                                        "a",
                                        "A_b=c-9",
                                        "a.b.c",
                                        "2024-01-01.run_7",
                                        "H-upper",
                                        "-",
                                        "==",
                                        std::string(128, 'x')};
  for (const auto& id : ids) {
    EXPECT_EQ(approvalIdFor(id), id) << id;
  }
}

TEST(ApprovalIdFor, HashesEverythingElse) {
  const std::vector<std::string> ids = {std::string(129, 'x'),
                                        "h-abc",
                                        "h-",
                                        "",
                                        "a..b",
                                        "..",
                                        ".a",
                                        "a.",
                                        ".",
                                        "a b",
                                        "a/b",
                                        "a*",
                                        "a>",
                                        "caf\xC3\xA9",
                                        "a\nb",
                                        std::string("a\0b", 3),
                                        "countersign:x"};
  for (const auto& id : ids) {
    const std::string approval_id = approvalIdFor(id);
    EXPECT_EQ(approval_id, hashedId(id)) << id;
    EXPECT_EQ(approval_id.size(), 34u);
  }
  EXPECT_EQ(approvalIdFor(""), "h-e3b0c44298fc1c149afbf4c8996fb924");
}

TEST(ApprovalIdFor, HashedIdsAreStable) {
  EXPECT_EQ(approvalIdFor("a b"), approvalIdFor("a b"));
  EXPECT_NE(approvalIdFor("a b"), approvalIdFor("a  b"));
}

TEST(IsValidApprovalId, AcceptsExactlyWhatApprovalIdForProduces) {
  const std::vector<std::string> sources = {
      "job-1", "a.b", std::string(128, 'z'), "a..b", std::string(300, 'q'), "h-x", ""};
  for (const auto& id : sources) {
    EXPECT_TRUE(isValidApprovalId(approvalIdFor(id))) << id;
  }
  EXPECT_TRUE(isValidApprovalId("h-0123456789abcdef0123456789abcdef"));
  const std::vector<std::string> invalid = {"",
                                            "a..b",
                                            ".a",
                                            "a.",
                                            std::string(129, 'x'),
                                            "h-abc",
                                            "h-",
                                            "h-0123456789ABCDEF0123456789ABCDEF",
                                            "h-0123456789abcdef0123456789abcdef0",
                                            "a/decision",
                                            "a b",
                                            "caf\xC3\xA9"};
  for (const auto& id : invalid) {
    EXPECT_FALSE(isValidApprovalId(id)) << id;
  }
}

// ---- message helpers -------------------------------------------------------------------------

TEST(MessageHelpers, CaseInsensitiveComparisons) {
  EXPECT_TRUE(equalsIgnoreCase("Nats-Msg-Id", "NATS-MSG-ID"));
  EXPECT_FALSE(equalsIgnoreCase("Nats-Msg-Id", "Nats-Msg-Ix"));
  EXPECT_FALSE(equalsIgnoreCase("abc", "abcd"));
  EXPECT_TRUE(equalsIgnoreCase("", ""));
  EXPECT_FALSE(equalsIgnoreCase("\xC3\xA9", "\xC3\x89"));  // ASCII only
  EXPECT_TRUE(startsWithIgnoreCase("COUNTERSIGN-x", "countersign-"));
  EXPECT_FALSE(startsWithIgnoreCase("count", "countersign-"));
  EXPECT_TRUE(startsWithIgnoreCase("anything", ""));
}

TEST(MessageHelpers, FindHeaderIsByteExactAndReturnsTheFirstValue) {
  const Headers headers = {{"x-a", "lower"}, {"X-A", "1"}, {"X-A", "2"}};
  ASSERT_NE(findHeader(headers, "X-A"), nullptr);
  EXPECT_EQ(*findHeader(headers, "X-A"), "1");
  EXPECT_EQ(*findHeader(headers, "x-a"), "lower");
  EXPECT_EQ(findHeader(headers, "X-a"), nullptr);
  EXPECT_EQ(findHeader(headers, "X-B"), nullptr);
}

TEST(MessageHelpers, SetHeaderReplacesEveryCaseVariantWithOneValueAtTheEnd) {
  Headers headers = {{"countersign-rule", "forged"},
                     {"X-A", "1"},
                     {"Countersign-Rule", "a"},
                     {"COUNTERSIGN-RULE", "b"},
                     {"X-B", "2"}};
  setHeader(headers, "Countersign-Rule", "r1");
  const Headers expected = {{"X-A", "1"}, {"X-B", "2"}, {"Countersign-Rule", "r1"}};
  EXPECT_EQ(headers, expected);
  setHeader(headers, "X-C", "3");
  EXPECT_EQ(headers.back(), (std::pair<std::string, std::string>("X-C", "3")));
  EXPECT_EQ(headers.size(), 4u);
}

}  // namespace
}  // namespace countersign
