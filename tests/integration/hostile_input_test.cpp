// Hostile producers against the real binary: inputs an attacker with publish rights on a route
// can send (many headers, bytes that are not UTF-8, reply subjects of other clients, ids of other
// producers' jobs), each answered or refused without slowing down or misleading anyone else.
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <chrono>
#include <string>
#include <vector>

#include "integration/harness/harness.hpp"
#include "integration/harness/wire.hpp"

namespace countersign::testing {
namespace {

constexpr const char* kBucket = "countersign_approvals";

constexpr const char* kPolicy = R"(version: v1
rules:
  - id: allow-read
    when: { topic: knowledge.read }
    decision: allow
  - id: hold-bulk
    when: { topic: bulk.upload }
    decision: require_human
)";

// ---- many headers ---------------------------------------------------------------------------

// One job with 50,000 distinct header names (about 600 KB, under max_payload) used to keep the
// serial intake busy for seconds while its record was written; it is refused at once now, and
// the job behind it is answered as if it were alone.
TEST(HostileInputTest, JobBehindAFiftyThousandHeaderJobIsAnsweredAtOnce) {
  Stack s = Stack::start(kPolicy);
  Collector big_reply(*s.client, "_INBOX.big");
  s.client->flush();
  Headers many;
  many.reserve(50000);
  for (int i = 0; i < 50000; ++i) many.emplace_back("X-H" + std::to_string(i), "");
  s.client->publish("agents.jobs.bulk.upload", "{\"n\":1}", many, "_INBOX.big");
  const auto sent = std::chrono::steady_clock::now();
  Reply next = toReply(s.client->request("agents.jobs.bulk.upload", "{\"n\":2}",
                                         {{"Nats-Msg-Id", "behind-1"}}, 10s));
  const auto waited = std::chrono::steady_clock::now() - sent;
  EXPECT_EQ(next.status(), "approval_required") << next.raw;
  EXPECT_EQ(next.field("approval_id"), "behind-1") << next.raw;
  // The big job was taken first (one intake thread, in order) and refused. Its answer may go out
  // on another connection than the 202, so it is waited for rather than expected first.
  auto big = big_reply.waitFor(1, 5s);
  ASSERT_EQ(big.size(), 1u) << "the many-header job was not answered";
  Reply refused = toReply(big[0]);
  EXPECT_EQ(refused.status(), "too_large") << refused.raw;
  EXPECT_EQ(refused.code(), 413) << refused.raw;
  EXPECT_EQ(refused.field("reason"), "too_many_headers") << refused.raw;
  EXPECT_EQ(refused.number("max_headers"), 1024) << refused.raw;
  // Before, the record of such a job took 3.5 s to write on an idle machine; answering both takes
  // milliseconds now. 2 s leaves room for a loaded CI machine without hiding the old cost.
  EXPECT_LT(waited, 2s) << "the job behind the many-header job waited "
                        << std::chrono::duration_cast<std::chrono::milliseconds>(waited).count()
                        << " ms";
}

// At the limit the job is held, with every header kept in wire order per name.
TEST(HostileInputTest, JobAtTheHeaderLimitIsHeldWithAllItsHeaders) {
  Stack s = Stack::start(kPolicy);
  Headers many;
  for (int i = 0; i < 1023; ++i) many.emplace_back("X-H" + std::to_string(i % 300), std::to_string(i));
  many.emplace_back("Nats-Msg-Id", "at-limit-1");
  Reply r = toReply(s.client->request("agents.jobs.bulk.upload", "{}", many, 10s));
  ASSERT_EQ(r.status(), "approval_required") << r.raw;
  auto record = s.client->kvGet(kBucket, "at-limit-1");
  ASSERT_TRUE(record.has_value());
  rapidjson::Document doc = parseJson(*record);
  ASSERT_TRUE(doc.IsObject() && doc.HasMember("headers") && doc["headers"].IsObject());
  const auto& headers = doc["headers"];
  EXPECT_EQ(headers.MemberCount(), 300u);
  ASSERT_TRUE(headers.HasMember("X-H7") && headers["X-H7"].IsArray());
  std::vector<std::string> values;
  for (const auto& v : headers["X-H7"].GetArray()) values.emplace_back(v.GetString());
  EXPECT_EQ(values, (std::vector<std::string>{"7", "307", "607", "907"}));
}

// ---- bytes that are not UTF-8 ------------------------------------------------------------------

// A held record is JSON released as stored: a header that is not UTF-8 cannot be kept exactly, so
// the job is refused (400) instead of being altered, and nothing is stored.
TEST(HostileInputTest, HeldJobWithAHeaderThatIsNotUtf8IsRefused) {
  Stack s = Stack::start(kPolicy);
  Reply r = toReply(s.client->request("agents.jobs.bulk.upload", "{}",
                                      {{"Nats-Msg-Id", "bad-utf8-1"}, {"X-Name", "caf\xe9 \xff\xfe"}}, 10s));
  EXPECT_EQ(r.status(), "bad_request") << r.raw;
  EXPECT_EQ(r.code(), 400) << r.raw;
  EXPECT_EQ(r.field("field"), "headers") << r.raw;
  EXPECT_EQ(r.field("reason"), "invalid_utf8") << r.raw;
  EXPECT_FALSE(s.client->kvGet(kBucket, "bad-utf8-1").has_value());
  // Valid UTF-8 beyond ASCII is held as usual.
  Reply ok = toReply(s.client->request("agents.jobs.bulk.upload", "{}",
                                       {{"Nats-Msg-Id", "utf8-1"}, {"X-Name", "caf\xc3\xa9"}}, 10s));
  EXPECT_EQ(ok.status(), "approval_required") << ok.raw;
}

// Events name the received subject: one that is not UTF-8 is written with U+FFFD, and the event
// stays valid JSON (it used to carry the raw bytes).
TEST(HostileInputTest, EventForASubjectThatIsNotUtf8IsValidJson) {
  Stack s = Stack::start(kPolicy);
  Collector denied(*s.client, "countersign.events.denied.>");
  s.client->flush();
  Reply r = toReply(s.client->request("agents.jobs.files.\xff\xc3", "{}", {}, 10s));
  EXPECT_EQ(r.status(), "denied") << r.raw;
  auto events = denied.waitFor(1, 10s);
  ASSERT_EQ(events.size(), 1u);
  rapidjson::Document doc = parseJson(events[0].payload);
  ASSERT_TRUE(doc.IsObject()) << events[0].payload;
  EXPECT_EQ(str(doc, "subject"), "agents.jobs.files.\xef\xbf\xbd\xef\xbf\xbd") << events[0].payload;
}

}  // namespace
}  // namespace countersign::testing
