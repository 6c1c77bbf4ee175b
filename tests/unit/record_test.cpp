#include "countersign/record.hpp"

#include <gtest/gtest.h>

#include "countersign/clock.hpp"

namespace countersign {
namespace {

TEST(Record, RoundTripKeepsBytesHeadersAndVotes) {
  ApprovalRecord r;
  r.id = "job-1";
  r.state = ApprovalState::approved;
  r.route = "jobs";
  r.subject = "agents.jobs.a";
  r.target = "jobs.a";
  r.topic = "a";
  r.headers = {{"X-A", "1"}, {"X-B", "x"}, {"X-A", "2"}};
  r.payload = std::string("\x00\xff\x01 not json", 12);
  r.payload_is_json = false;
  r.job_hash = "sha256:ab";
  r.policy_snapshot = "v1:sha256:cd";
  r.approvals = {{"alice", "2026-01-01T00:00:00.000Z", "ok"}};
  r.replays = 2;
  auto back = parseApprovalRecord(toJson(r));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->payload, r.payload);
  EXPECT_EQ(back->state, ApprovalState::approved);
  EXPECT_EQ(back->headers, (Headers{{"X-A", "1"}, {"X-A", "2"}, {"X-B", "x"}}));
  ASSERT_EQ(back->approvals.size(), 1u);
  EXPECT_EQ(back->approvals[0].approver, "alice");
  EXPECT_EQ(back->replays, 2);
  EXPECT_EQ(toJson(*back), toJson(*parseApprovalRecord(toJson(*back))));
}

// Values are grouped by name in the order names first appear, each name's values in wire order,
// for many interleaved names as for a few (the grouping is one pass, not a scan per name).
TEST(Record, ManyInterleavedHeadersAreGroupedInFirstSeenOrder) {
  ApprovalRecord r;
  r.id = "many";
  Headers expected;
  constexpr int kNames = 2000;
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < kNames; ++i) r.headers.emplace_back("X-" + std::to_string(i), std::to_string(round));
  }
  for (int i = 0; i < kNames; ++i) {
    for (int round = 0; round < 3; ++round) expected.emplace_back("X-" + std::to_string(i), std::to_string(round));
  }
  const std::string json = toJson(r);
  EXPECT_LT(json.find("\"X-0\":[\"0\",\"1\",\"2\"]"), json.find("\"X-1\":[\"0\",\"1\",\"2\"]"));
  auto back = parseApprovalRecord(json);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->headers, expected);
}

TEST(Record, JsonPayloadIsStoredAsExactText) {
  ApprovalRecord r;
  r.id = "j";
  r.payload = R"({ "b" : 1,"a":[1, 2] })";
  r.payload_is_json = true;
  const std::string json = toJson(r);
  EXPECT_NE(json.find(R"("payload_encoding":"json")"), std::string::npos);
  EXPECT_EQ(parseApprovalRecord(json)->payload, r.payload);
}

TEST(Record, MalformedRecordsAreRefused) {
  EXPECT_FALSE(parseApprovalRecord("not json"));
  EXPECT_FALSE(parseApprovalRecord("[]"));
  EXPECT_FALSE(parseApprovalRecord(R"({"state":"pending","payload_encoding":"json"})"));  // no id
  EXPECT_FALSE(parseApprovalRecord(R"({"id":"a","state":"weird","payload_encoding":"json"})"));
  EXPECT_FALSE(parseApprovalRecord(R"({"id":"a","state":"pending","payload_encoding":"rot13"})"));
  EXPECT_FALSE(parseApprovalRecord(R"({"id":"a","state":"pending","payload_encoding":"base64","payload":"!!"})"));
  EXPECT_FALSE(parseApprovalRecord(R"({"id":"a","state":"pending","payload_encoding":"json","headers":{"X":"notalist"}})"));
  EXPECT_FALSE(parseApprovalRecord(R"({"id":1,"state":"pending","payload_encoding":"json"})"));
}

TEST(Record, DecisionAndReleasedRoundTrip) {
  DecisionRecord d{FinalDecision::rejected, "bob", "2026-01-01T00:00:00.000Z", "no", "v1:x", "sha256:y", "slack"};
  auto back = parseDecisionRecord(toJson(d));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->decision, FinalDecision::rejected);
  EXPECT_EQ(back->by, "bob");
  EXPECT_EQ(back->via, "slack");
  // Without a channel the field is left out.
  d.via.clear();
  EXPECT_EQ(toJson(d).find("via"), std::string::npos);
  EXPECT_FALSE(parseDecisionRecord(R"({"decision":"maybe"})"));
  ReleasedRecord rel{"t", "countersign:j", "JOBS", 42, "approve"};
  auto rb = parseReleasedRecord(toJson(rel));
  ASSERT_TRUE(rb);
  EXPECT_EQ(rb->sequence, 42u);
  EXPECT_EQ(decisionKey("j"), "j/decision");
  EXPECT_EQ(releasedKey("j"), "j/released");
  EXPECT_EQ(replayKey("j", 3), "j/replay/3");
}

TEST(Record, Rfc3339RoundTrip) {
  const std::chrono::system_clock::time_point t{std::chrono::milliseconds(1'790'000'000'123)};
  const std::string text = formatRfc3339(t);
  EXPECT_EQ(text.size(), 24u);
  EXPECT_EQ(text.back(), 'Z');
  std::chrono::system_clock::time_point back;
  ASSERT_TRUE(parseRfc3339(text, back));
  EXPECT_EQ(back, t);
  EXPECT_FALSE(parseRfc3339("yesterday", back));
}

}  // namespace
}  // namespace countersign
