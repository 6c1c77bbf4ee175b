// Hostile producers against the real binary: inputs an attacker with publish rights on a route
// can send (many headers, bytes that are not UTF-8, reply subjects of other clients, ids of other
// producers' jobs), each answered or refused without slowing down or misleading anyone else.
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <set>
#include <map>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "countersign/job.hpp"
#include "countersign/json.hpp"
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
  - id: hold-pay
    when: { topic: finance.pay }
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

// ---- reply subjects of other clients --------------------------------------------------------

// The rule (docs/protocol.md, "Producers"): countersign answers a message's own reply subject,
// else its Countersign-Reply-To, and only a subject listed in control.reply_subjects that is not
// under countersign's prefix nor a route's subjects, even when the list names them. Each producer
// has an inbox prefix of its own, and only those are listed.
TEST(HostileInputTest, ForgedReplyToIsAnsweredOnlyWhereTheRuleAllows) {
  auto server = NatsServer::start();
  CountersignOptions options;
  // Listed on purpose beside the producers' prefix: a route's target and countersign's own
  // subjects, which the rule refuses anyway.
  // (_INBOX.> stays listed for the test's own requests.)
  options.config_yaml = basicConfig(
      server->url(), "control:\n  reply_subjects: [\"_INBOX.>\", \"_INBOX_A.>\", \"jobs.>\", \"countersign.>\"]\n");
  options.policy_yaml = kPolicy;
  options.nats_url = server->url();
  auto cs = CountersignProcess::start(options);
  Client client(server->url());

  Collector own(client, "_INBOX_A.own");
  Collector mine(client, "_INBOX_A.mine");
  Collector victim(client, "_INBOX_B.victim");  // another application's inbox, not listed
  Collector workers(client, "jobs.>");          // a route's target
  Collector control(client, "countersign.control.>");
  Collector held(client, "countersign.events.held.>");
  client.flush();

  // 1. A request with a reply subject of its own and a Countersign-Reply-To naming another
  //    inbox: the answer goes to its own reply subject only.
  client.publish("agents.jobs.bulk.upload", "{}", {{"Nats-Msg-Id", "reply-own-1"}, {"Countersign-Reply-To", "_INBOX_A.mine"}},
                 "_INBOX_A.own");
  // 2. Fire and forget into another client's inbox outside the list: ignored.
  client.publish("agents.jobs.bulk.upload", "{}", {{"Nats-Msg-Id", "reply-victim-1"}, {"Countersign-Reply-To", "_INBOX_B.victim"}});
  // 3. Into a route's target (a fake job for the workers) and into a control subject: ignored
  //    though listed.
  client.publish("agents.jobs.bulk.upload", "{}", {{"Nats-Msg-Id", "reply-route-1"}, {"Countersign-Reply-To", "jobs.bulk.upload"}});
  client.publish("agents.jobs.bulk.upload", "{}",
                 {{"Nats-Msg-Id", "reply-ctl-1"}, {"Countersign-Reply-To", "countersign.control.approve"}});
  // 4. The allowed case, so that the test can tell "ignored" from "nothing works".
  client.publish("agents.jobs.bulk.upload", "{}", {{"Nats-Msg-Id", "reply-mine-1"}, {"Countersign-Reply-To", "_INBOX_A.mine"}});
  client.flush();

  // Every job was decided (held), answered or not.
  ASSERT_EQ(held.waitFor(5, 10s).size(), 5u);
  const auto answers = mine.waitFor(1, 5s);
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(toReply(answers[0]).field("approval_id"), "reply-mine-1");
  const auto first = own.waitFor(1, 5s);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(toReply(first[0]).field("approval_id"), "reply-own-1");
  std::this_thread::sleep_for(500ms);  // anything else countersign sent has arrived by now
  EXPECT_EQ(mine.count(), 1u) << "the request's Countersign-Reply-To was answered too";
  EXPECT_EQ(own.count(), 1u);
  EXPECT_EQ(victim.count(), 0u) << "answered into an inbox outside control.reply_subjects";
  EXPECT_EQ(workers.count(), 0u) << "answered onto a route's target";
  std::size_t forged_control = 0;
  for (const auto& m : control.messages()) forged_control += header(m, "Countersign-Status").empty() ? 0 : 1;
  EXPECT_EQ(forged_control, 0u) << "answered onto a control subject";
}

// ---- ids of other producers' jobs -----------------------------------------------------------

// A producer that may hold jobs on one topic holds one under the id another producer's payment
// will use. The payment is not blocked (it used to get 409 id_conflict) and an approval by the
// id its 202 names approves the payment, not the squatter's job.
TEST(HostileInputTest, JobIdSquattedFromAnotherTopicNeitherBlocksNorTakesTheApproval) {
  Stack s = Stack::start(kPolicy);
  Collector jobs(*s.client, "jobs.>");
  s.client->flush();
  Reply squat = toReply(s.client->request("agents.jobs.bulk.upload", R"({"evil":true})",
                                          {{"Nats-Msg-Id", "pay-sq-1"}}, 10s));
  ASSERT_EQ(squat.status(), "approval_required") << squat.raw;
  ASSERT_EQ(squat.field("approval_id"), "pay-sq-1") << squat.raw;

  Reply pay = toReply(s.client->request("agents.jobs.finance.pay", R"({"amount":10})",
                                        {{"Nats-Msg-Id", "pay-sq-1"}}, 10s));
  ASSERT_EQ(pay.status(), "approval_required") << pay.raw;
  const std::string pay_id = pay.field("approval_id");
  EXPECT_NE(pay_id, "pay-sq-1") << pay.raw;
  EXPECT_TRUE(pay_id.starts_with("h-") && pay_id.size() == 34) << pay.raw;
  // The payment's record is its own: its job id, topic and payload.
  auto record = s.client->kvGet(kBucket, pay_id);
  ASSERT_TRUE(record.has_value());
  rapidjson::Document doc = parseJson(*record);
  EXPECT_EQ(str(doc, "job_id"), "pay-sq-1");
  EXPECT_EQ(str(doc, "topic"), "finance.pay");

  // A retry of the payment is the same hold (same id, no second record); one with other
  // content on the same topic is still a conflict.
  Reply again = toReply(s.client->request("agents.jobs.finance.pay", R"({"amount":10})",
                                          {{"Nats-Msg-Id", "pay-sq-1"}}, 10s));
  EXPECT_EQ(again.status(), "approval_required") << again.raw;
  EXPECT_EQ(again.field("approval_id"), pay_id) << again.raw;
  Reply other = toReply(s.client->request("agents.jobs.finance.pay", R"({"amount":99999})",
                                          {{"Nats-Msg-Id", "pay-sq-1"}}, 10s));
  EXPECT_EQ(other.status(), "conflict") << other.raw;

  // Approving the id the payment's 202 named releases the payment, and only it.
  Reply approved = toReply(s.client->request("countersign.control.approve",
                                             R"({"id":")" + pay_id + R"(","approver":"alice"})", {}, 10s));
  EXPECT_EQ(approved.status(), "approved") << approved.raw;
  auto released = jobs.waitFor(1, 10s);
  ASSERT_EQ(released.size(), 1u);
  EXPECT_EQ(released[0].subject, "jobs.finance.pay");
  EXPECT_EQ(released[0].payload, R"({"amount":10})");
  settle(s, jobs);
  EXPECT_EQ(jobs.count(), 2u) << "more than the payment (and the settle marker) was released";
  // The squatter's job is still pending under the plain id.
  auto squatted = s.client->kvGet(kBucket, "pay-sq-1");
  ASSERT_TRUE(squatted.has_value());
  EXPECT_EQ(str(parseJson(*squatted), "state"), "pending");
}

// ---- writers to the bucket --------------------------------------------------------------------

// countersign with a short replay lease, so that the replayer takes up a decision at once.
Stack startWithQuickReplay() {
  Stack s;
  s.server = NatsServer::start();
  s.client = std::make_unique<Client>(s.server->url());
  CountersignOptions options;
  options.config_yaml = basicConfig(s.server->url(), "release:\n  replay_interval: 200ms\n  lease: 300ms\n");
  options.policy_yaml = kPolicy;
  options.nats_url = s.server->url();
  s.countersign = CountersignProcess::start(options);
  return s;
}

// Someone with write access to the bucket rewrites a held record: another payload, and the job
// hash recomputed to match it, as countersign would compute it. An approval decides, but the
// release is refused (the record's tag does not match) and nothing reaches the workers.
TEST(HostileInputTest, RecordRewrittenWithARecomputedHashIsNotReleased) {
  Stack s = startWithQuickReplay();
  Collector jobs(*s.client, "jobs.>");
  Collector refused(*s.client, "countersign.events.release_refused.>");
  s.client->flush();
  Reply held = toReply(s.client->request("agents.jobs.bulk.upload", R"({"n":1})", {{"Nats-Msg-Id", "tamper-rec-1"}}, 10s));
  ASSERT_EQ(held.status(), "approval_required") << held.raw;

  auto stored = s.client->kvGet(kBucket, "tamper-rec-1");
  ASSERT_TRUE(stored.has_value());
  rapidjson::Document doc = parseJson(*stored);
  const std::string forged_payload = R"({"n":666})";
  auto forged_json = json::parseStrict(forged_payload);
  ASSERT_TRUE(forged_json.has_value());
  const std::string forged_hash = jobHash(str(doc, "subject"), str(doc, "target"), {}, &*forged_json, forged_payload);
  std::string rewritten = *stored;
  const std::string old_payload = R"("payload":"{\"n\":1}")";
  const auto at = rewritten.find(old_payload);
  ASSERT_NE(at, std::string::npos) << rewritten;
  rewritten.replace(at, old_payload.size(), R"("payload":"{\"n\":666}")");
  const std::string old_hash = str(doc, "job_hash");
  rewritten.replace(rewritten.find(old_hash), old_hash.size(), forged_hash);
  s.client->kvPut(kBucket, "tamper-rec-1", rewritten);
  // Without the check, this record passes every other one: its hash matches its content.
  ASSERT_EQ(str(parseJson(*s.client->kvGet(kBucket, "tamper-rec-1")), "job_hash"), forged_hash);

  Reply approved = toReply(s.client->request("countersign.control.approve",
                                             R"({"id":"tamper-rec-1","approver":"alice"})", {}, 10s));
  EXPECT_EQ(approved.status(), "approved") << approved.raw;
  EXPECT_EQ(approved.code(), 202) << approved.raw;  // decided, not released
  EXPECT_FALSE(approved.isTrue("released")) << approved.raw;
  EXPECT_TRUE(approved.field("error").find("record_tag") != std::string::npos) << approved.raw;
  const auto events = refused.waitFor(1, 10s);
  ASSERT_GE(events.size(), 1u);
  EXPECT_EQ(str(parseJson(events[0].payload), "reason"), "record_tag") << events[0].payload;
  EXPECT_NE(s.countersign->logs().find("release refused"), std::string::npos);
  // Nothing is published later either (the replayer meets the same tag).
  std::this_thread::sleep_for(1s);
  settle(s, jobs);
  EXPECT_EQ(jobs.count(), 1u) << "the rewritten job reached the workers";
}

// Someone with write access to the bucket creates <id>/decision by hand: the replayer does not
// release on it, and an approver is told it is not trusted rather than "already approved".
TEST(HostileInputTest, DecisionKeyMadeByHandIsNotBelieved) {
  Stack s = startWithQuickReplay();
  Collector jobs(*s.client, "jobs.>");
  Collector refused(*s.client, "countersign.events.release_refused.>");
  s.client->flush();
  Reply held = toReply(s.client->request("agents.jobs.bulk.upload", R"({"n":2})", {{"Nats-Msg-Id", "tamper-dec-1"}}, 10s));
  ASSERT_EQ(held.status(), "approval_required") << held.raw;
  s.client->kvPut(kBucket, "tamper-dec-1/decision",
                  R"({"decision":"approved","by":"mallory","at":"2030-01-01T00:00:00Z","reason":"",)"
                  R"("policy_snapshot":")" + held.field("policy_snapshot") + R"(","job_hash":")" +
                      held.field("job_hash") + R"("})");

  const auto events = refused.waitFor(1, 15s);
  ASSERT_GE(events.size(), 1u) << "the replayer never looked at the decision";
  EXPECT_EQ(str(parseJson(events[0].payload), "reason"), "decision_tag") << events[0].payload;

  Reply approve = toReply(s.client->request("countersign.control.approve",
                                            R"({"id":"tamper-dec-1","approver":"alice"})", {}, 10s));
  EXPECT_EQ(approve.status(), "conflict") << approve.raw;
  EXPECT_EQ(approve.field("reason"), "decision_not_trusted") << approve.raw;
  settle(s, jobs);
  EXPECT_EQ(jobs.count(), 1u) << "a job was released on a hand-made decision";
}

// Records held by a countersign before tags existed carry none. Once a countersign with tags has
// started on the bucket, an untagged record is refused (a release would publish whatever was
// written there). The operator's way back (after an upgrade, a key change, or having checked the
// bucket): delete the marker key and restart; the start tags what is there, and it is released.
TEST(HostileInputTest, UntaggedRecordsAreRefusedUntilAnOperatorHasThemAdopted) {
  auto server = NatsServer::start();
  Client client(server->url());
  Collector jobs(client, "jobs.>");
  client.flush();
  const auto seed_file = std::filesystem::temp_directory_path() / ("hostile-seed-" + std::to_string(::getpid()) + ".nk");
  std::filesystem::remove(seed_file);
  CountersignOptions options;
  options.config_yaml = basicConfig(server->url(), "release:\n  replay_interval: 200ms\n  lease: 300ms\n"
                                                   "receipts:\n  seed_file: " + seed_file.string() + "\n");
  options.policy_yaml = kPolicy;
  options.nats_url = server->url();
  auto cs = CountersignProcess::start(options);
  ASSERT_TRUE(client.kvGet(kBucket, "_countersign/tags_adopted").has_value()) << "no marker after the first start";

  // Two records as an earlier version wrote them: no tag.
  const auto stripTag = [&](const std::string& id) {
    std::string value = *client.kvGet(kBucket, id);
    const auto tag_at = value.find(",\"tag\":\"");
    ASSERT_NE(tag_at, std::string::npos) << value;
    value.erase(tag_at, value.find('"', tag_at + 8) + 1 - tag_at);
    ASSERT_EQ(value.find("\"tag\""), std::string::npos) << value;
    client.kvPut(kBucket, id, value);
  };
  for (const char* id : {"old-1", "old-2"}) {
    Reply held = toReply(client.request("agents.jobs.bulk.upload", std::string(R"({"n":")") + id + "\"}",
                                        {{"Nats-Msg-Id", id}}, 10s));
    ASSERT_EQ(held.status(), "approval_required") << held.raw;
    stripTag(id);
  }

  Reply refused = toReply(client.request("countersign.control.approve", R"({"id":"old-1","approver":"alice"})", {}, 10s));
  EXPECT_EQ(refused.code(), 202) << refused.raw;
  EXPECT_FALSE(refused.isTrue("released")) << refused.raw;
  EXPECT_TRUE(refused.field("error").find("record_tag") != std::string::npos) << refused.raw;
  std::this_thread::sleep_for(1s);  // the replayer looks too
  EXPECT_EQ(jobs.count(), 0u) << "an untagged record was released";
  EXPECT_NE(cs->logs().find("release refused"), std::string::npos);

  // The operator adopts: marker deleted, countersign restarted with the same key.
  cs.reset();
  kvStore* kv = nullptr;
  ASSERT_EQ(js_KeyValue(&kv, client.js(), kBucket), NATS_OK);
  ASSERT_EQ(kvStore_Delete(kv, "_countersign/tags_adopted"), NATS_OK);
  kvStore_Destroy(kv);
  auto upgraded = CountersignProcess::start(options);
  EXPECT_NE(upgraded->logs().find("tagged records, decisions and votes"), std::string::npos) << upgraded->logs();
  EXPECT_TRUE(client.kvGet(kBucket, "_countersign/tags_adopted").has_value());
  Reply approved = toReply(client.request("countersign.control.approve", R"({"id":"old-2","approver":"alice"})", {}, 10s));
  EXPECT_EQ(approved.code(), 200) << approved.raw;
  EXPECT_TRUE(approved.isTrue("released")) << approved.raw;
  const auto released = jobs.waitFor(1, 10s);
  ASSERT_EQ(released.size(), 1u) << "the adopted record was not released";
  EXPECT_EQ(released[0].payload, R"({"n":"old-2"})");
  std::filesystem::remove(seed_file);
}

// ---- bursts of large jobs ---------------------------------------------------------------------

// Peak resident memory of a process (VmHWM), in MiB.
long peakRssMib(int pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with("VmHWM:")) return std::stol(line.substr(6)) / 1024;
  }
  return -1;
}

// 300 held jobs of 600 KB each (180 MB) published at once used to wait in memory (every create in
// flight holds its record) and, past the client library's limit, to be dropped unanswered as a
// slow consumer. With concurrency.intake_bytes, what waits is bounded: every job is answered,
// held (202) or refused at once (503 overloaded, retryable), and memory stays near the bound.
TEST(HostileInputTest, BurstOfLargeJobsBeyondTheIntakeBoundIsAnsweredWithinBoundedMemory) {
  auto server = NatsServer::start();
  CountersignOptions options;
  options.config_yaml = basicConfig(server->url(), "concurrency:\n  intake_bytes: 8388608\n");
  options.policy_yaml = kPolicy;
  options.nats_url = server->url();
  auto cs = CountersignProcess::start(options);
  Client client(server->url());
  Collector answers(client, "_INBOX.burst.>");
  client.flush();
  const long rss_before = peakRssMib(cs->pid());

  constexpr int kJobs = 300;
  const std::string payload = R"({"d":")" + std::string(600 * 1000, 'a') + R"("})";
  for (int i = 0; i < kJobs; ++i) {
    client.publish("agents.jobs.bulk.upload", payload, {{"Nats-Msg-Id", "burst-" + std::to_string(i)}},
                   "_INBOX.burst." + std::to_string(i));
  }
  client.flush();
  const auto got = answers.waitFor(kJobs, 120s);
  std::map<std::string, int> by_status;
  std::set<std::string> answered;
  for (const auto& m : got) {
    Reply r = toReply(m);
    const std::string key = r.status() + "/" + std::to_string(r.code()) + (r.has("reason") ? "/" + r.field("reason") : "");
    ++by_status[key];
    answered.insert(m.subject);
  }
  std::string tally;
  for (const auto& [key, n] : by_status) tally += key + " x" + std::to_string(n) + "\n";
  EXPECT_EQ(answered.size(), static_cast<std::size_t>(kJobs)) << "jobs left unanswered:\n" << tally;
  EXPECT_EQ(by_status["approval_required/202"] + by_status["unavailable/503/overloaded"], kJobs) << tally;
  EXPECT_GE(by_status["unavailable/503/overloaded"], 1) << "the bound never applied:\n" << tally;
  EXPECT_GE(by_status["approval_required/202"], 1) << tally;
  const long peak = peakRssMib(cs->pid());
  EXPECT_LT(peak - rss_before, 150) << "peak RSS " << peak << " MiB, " << rss_before << " MiB before the burst\n" << tally;
  std::cerr << "burst: " << tally << "peak RSS " << peak << " MiB (" << rss_before << " before)\n";
}

}  // namespace
}  // namespace countersign::testing
