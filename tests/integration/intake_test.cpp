// Black-box tests of intake (docs/protocol.md; docs/protocol.md): the real
// countersign binary against a real nats-server, observed only through NATS and the KV bucket.
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
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
  - id: throttle-search
    when: { topic: search.query }
    decision: throttle
    rate: "1/m"
    burst: 1
  - id: deny-delete
    when: { topic: files.delete }
    decision: deny
    reason: deletes are not allowed
  - id: hold-prod-finance
    when: { topic: finance.payment.execute, env: production }
    decision: require_human
  - id: hold-bulk
    when: { topic: bulk.upload }
    decision: require_human
)";

// ---- helpers --------------------------------------------------------------------------------

// The snapshot `policy check` prints, which must have the v1:sha256 form.
std::string snapshotOf(const std::filesystem::path& policy_file) {
  const std::string snapshot = policySnapshot(policy_file);
  EXPECT_TRUE(std::regex_match(snapshot, std::regex("v1:sha256:[0-9a-f]{64}"))) << snapshot;
  return snapshot;
}

Stack startStack(const std::string& policy = kPolicy, NatsServerOptions server_options = {}) {
  return Stack::start(policy, std::move(server_options));
}

Reply hold(Stack& s, const std::string& topic, const std::string& payload, const Headers& headers) {
  return toReply(s.client->request("agents.jobs." + topic, payload, headers, 10s));
}

// ---- allow -----------------------------------------------------------------------------

TEST(IntakeTest, AllowForwardsPayloadByteIdenticalWithHeaders) {
  Stack s = startStack();
  Collector jobs(*s.client, "jobs.>");
  s.client->flush();
  const std::string payload = "{\"q\":  \"x\" ,\n \"n\":1.50}";  // odd spacing must survive
  s.client->publish("agents.jobs.knowledge.read", payload,
                    {{"X-Trace", "1"}, {"X-Trace", "2"}, {"Nats-Msg-Id", "read-1"}});
  s.client->flush();

  auto got = jobs.waitFor(1, 10s);
  ASSERT_EQ(got.size(), 1u);
  const Message& m = got[0];
  EXPECT_EQ(m.subject, "jobs.knowledge.read");
  EXPECT_EQ(m.payload, payload);
  EXPECT_EQ(headerValues(m, "X-Trace"), (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(headerValues(m, "Nats-Msg-Id"), one("read-1"));
  EXPECT_EQ(headerValues(m, "Countersign-Decision"), one("allow"));
  EXPECT_EQ(headerValues(m, "Countersign-Approval"), one("none"));
  EXPECT_EQ(headerValues(m, "Countersign-Rule"), one("allow-read"));
  EXPECT_EQ(headerValues(m, "Countersign-Policy-Snapshot"),
            one(snapshotOf(s.countersign->policyPath())));
  EXPECT_TRUE(m.reply.empty()) << "published without a reply subject, got " << m.reply;
}

TEST(IntakeTest, AllowedRequestGetsTheWorkersReply) {
  Stack s = startStack();
  Responder worker(*s.client, "jobs.>", "worker-ok");
  s.client->flush();
  auto reply = s.client->request("agents.jobs.knowledge.read", "{\"q\":1}", {}, 10s);
  ASSERT_TRUE(reply.has_value()) << "no reply through countersign";
  EXPECT_EQ(reply->payload, "worker-ok");
  auto received = worker.received();
  ASSERT_EQ(received.size(), 1u);
  EXPECT_EQ(received[0].subject, "jobs.knowledge.read");
  EXPECT_EQ(received[0].payload, "{\"q\":1}");
  EXPECT_TRUE(received[0].reply.rfind("_INBOX.", 0) == 0)
      << "the producer's inbox must be kept, got " << received[0].reply;
}

// ---- deny ------------------------------------------------------------------------------

TEST(IntakeTest, DenyAnswers403AndForwardsNothing) {
  Stack s = startStack();
  Collector jobs(*s.client, "jobs.>");
  s.client->flush();
  Reply r = toReply(s.client->request("agents.jobs.files.delete", "{\"path\":\"/\"}", {}, 10s));
  EXPECT_EQ(r.status(), "denied") << r.raw;
  EXPECT_EQ(r.code(), 403) << r.raw;
  EXPECT_EQ(r.field("rule"), "deny-delete") << r.raw;
  EXPECT_EQ(r.field("reason"), "deletes are not allowed") << r.raw;
  settle(s, jobs);
  EXPECT_EQ(countOn(jobs.messages(), "jobs.files.delete"), 0u);
}

TEST(IntakeTest, NoMatchingRuleIsDeniedByDefault) {
  Stack s = startStack();
  Collector jobs(*s.client, "jobs.>");
  s.client->flush();
  Reply r = toReply(s.client->request("agents.jobs.unknown.topic", "{}", {}, 10s));
  EXPECT_EQ(r.status(), "denied") << r.raw;
  EXPECT_EQ(r.code(), 403) << r.raw;
  EXPECT_EQ(r.field("rule"), "default") << r.raw;
  EXPECT_EQ(r.field("reason"), "no_rule_matched") << r.raw;
  settle(s, jobs);
  EXPECT_EQ(countOn(jobs.messages(), "jobs.unknown.topic"), 0u);
}

// ---- throttle --------------------------------------------------------------------------

TEST(IntakeTest, ThrottleForwardsWithinRateAndRefusesBeyond) {
  // rate 1/m with burst 1: the second job is beyond the rate however slow the machine is.
  Stack s = startStack();
  Collector jobs(*s.client, "jobs.>");
  s.client->flush();
  s.client->publish("agents.jobs.search.query", "first");
  s.client->flush();
  auto got = jobs.waitFor(1, 10s);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].subject, "jobs.search.query");
  EXPECT_EQ(got[0].payload, "first");
  EXPECT_EQ(headerValues(got[0], "Countersign-Rule"), one("throttle-search"));
  EXPECT_EQ(headerValues(got[0], "Countersign-Decision"), one("allow"));
  EXPECT_EQ(headerValues(got[0], "Countersign-Approval"), one("none"));

  Reply r = toReply(s.client->request("agents.jobs.search.query", "second", {}, 10s));
  EXPECT_EQ(r.status(), "throttled") << r.raw;
  EXPECT_EQ(r.code(), 429) << r.raw;
  EXPECT_EQ(r.field("rule"), "throttle-search") << r.raw;
  EXPECT_GT(r.number("retry_after_ms"), 0) << r.raw;
  EXPECT_LE(r.number("retry_after_ms"), 60000) << r.raw;
  settle(s, jobs);
  EXPECT_EQ(countOn(jobs.messages(), "jobs.search.query"), 1u);
}

// ---- require_human ---------------------------------------------------------------------

TEST(IntakeTest, RequireHumanHoldsTheJobInKv) {
  Stack s = startStack();
  Collector jobs(*s.client, "jobs.>");
  s.client->flush();
  const std::string payload = "{\"amount\":1.5,\"labels\":{\"env\":\"production\"}}";
  Reply r = hold(s, "finance.payment.execute", payload,
                 {{"Nats-Msg-Id", "pay-1"}, {"X-Trace", "1"}, {"X-Trace", "2"}});
  const std::string snapshot = snapshotOf(s.countersign->policyPath());
  EXPECT_EQ(r.status(), "approval_required") << r.raw;
  EXPECT_EQ(r.code(), 202) << r.raw;
  EXPECT_EQ(r.field("approval_id"), "pay-1") << r.raw;
  // sha256 of {"headers":{"X-Trace":["1","2"]},"payload_json":{"amount":1.5,"labels":
  // {"env":"production"}},"subject":"agents.jobs.finance.payment.execute","target":
  // "jobs.finance.payment.execute"} (RFC 8785), computed independently.
  EXPECT_EQ(r.field("job_hash"),
            "sha256:825da43d11e2a0ad7025b2a68f054399a47a518620898cdc349fc843f37dd512")
      << r.raw;
  EXPECT_EQ(r.field("policy_snapshot"), snapshot) << r.raw;
  EXPECT_EQ(r.field("rule"), "hold-prod-finance") << r.raw;

  auto stored = s.client->kvGet(kBucket, "pay-1");
  ASSERT_TRUE(stored.has_value()) << "no record under the approval id in " << kBucket;
  auto record = parseJson(*stored);
  EXPECT_EQ(str(record, "id"), "pay-1");
  EXPECT_EQ(str(record, "state"), "pending");
  EXPECT_EQ(str(record, "payload"), payload) << "the exact JSON text must be stored";
  EXPECT_EQ(str(record, "payload_encoding"), "json");
  EXPECT_EQ(str(record, "job_hash"), r.field("job_hash"));
  EXPECT_EQ(str(record, "policy_snapshot"), snapshot);
  EXPECT_EQ(str(record, "subject"), "agents.jobs.finance.payment.execute");
  EXPECT_EQ(str(record, "target"), "jobs.finance.payment.execute");
  EXPECT_EQ(str(record, "topic"), "finance.payment.execute");
  EXPECT_EQ(str(record, "rule"), "hold-prod-finance");
  ASSERT_TRUE(record.HasMember("headers") && record["headers"].IsObject()) << *stored;
  for (auto it = record["headers"].MemberBegin(); it != record["headers"].MemberEnd(); ++it) {
    EXPECT_NE(lower(it->name.GetString()).rfind("nats-", 0), 0u)
        << "held records keep no Nats-* headers: " << *stored;
  }
  ASSERT_TRUE(record["headers"].HasMember("X-Trace")) << *stored;
  const auto& trace = record["headers"]["X-Trace"];
  ASSERT_TRUE(trace.IsArray() && trace.Size() == 2) << *stored;
  EXPECT_STREQ(trace[0].GetString(), "1");
  EXPECT_STREQ(trace[1].GetString(), "2");

  settle(s, jobs);
  EXPECT_EQ(countOn(jobs.messages(), "jobs.finance.payment.execute"), 0u);
}

TEST(IntakeTest, JobHashFollowsTheContract) {
  Stack s = startStack();
  struct Case {
    const char* id;
    std::string payload;
    Headers headers;
    const char* hash;
  };
  const std::vector<Case> cases = {
      {"jh-bytes",
       "not json",
       {},
       "24536dd490a3df754126862d211732fdfc6e286a2cbf1456843fc5f894c3bc05"},
      {"jh-empty", "", {}, "888046abca4ff6403c4ca814fe7bf348c7b7b735c35d045ab9278ace1d661bb5"},
      {"jh-json",
       "{\"a\":\"x\",\"b\":[1,2]}",
       {},
       "78ad10c182fbe39acb531a6d1776c61b1ba7edba10cc5caf820a6b43f10ef24f"},
      // key order and whitespace do not change it
      {"jh-json-reordered",
       "{ \"b\" : [ 1, 2 ],\n \"a\" : \"x\" }",
       {},
       "78ad10c182fbe39acb531a6d1776c61b1ba7edba10cc5caf820a6b43f10ef24f"},
      // a kept header does
      {"jh-json-header",
       "{\"a\":\"x\",\"b\":[1,2]}",
       {{"X-Trace", "1"}},
       "4e32459b99227ef75b47d691cb3970f8e58af427789671a7fda8437661a18ab3"},
      // Nats-* and Countersign-* headers do not
      {"jh-json-excluded",
       "{\"a\":\"x\",\"b\":[1,2]}",
       {{"Nats-Expected-Stream", "X"}, {"Countersign-Anything", "y"}},
       "78ad10c182fbe39acb531a6d1776c61b1ba7edba10cc5caf820a6b43f10ef24f"},
      // ES6 number form: 1e2 and 100.0 are 100
      {"jh-number-exp",
       "{\"n\":1e2}",
       {},
       "f60d99a30c6acc2e96eaa17f219731eeff66b024cd6ae504d36b88c31d685afd"},
      {"jh-number-dec",
       "{\"n\":100.0}",
       {},
       "f60d99a30c6acc2e96eaa17f219731eeff66b024cd6ae504d36b88c31d685afd"},
  };
  for (const auto& c : cases) {
    Headers headers = c.headers;
    headers.emplace_back("Nats-Msg-Id", c.id);
    Reply r = hold(s, "bulk.upload", c.payload, headers);
    EXPECT_EQ(r.code(), 202) << c.id << ": " << r.raw;
    EXPECT_EQ(r.field("approval_id"), c.id) << r.raw;
    EXPECT_EQ(r.field("job_hash"), std::string("sha256:") + c.hash) << c.id << ": " << r.raw;
  }
  // The bytes payload is stored base64.
  auto stored = s.client->kvGet(kBucket, "jh-bytes");
  ASSERT_TRUE(stored.has_value());
  auto record = parseJson(*stored);
  EXPECT_EQ(str(record, "payload_encoding"), "base64") << *stored;
  EXPECT_EQ(str(record, "payload"), "bm90IGpzb24=") << *stored;
}

TEST(IntakeTest, SameIdAndSameContentGetsTheSame202AndOneRecord) {
  Stack s = startStack();
  const std::string payload = "{\"amount\":7,\"labels\":{\"env\":\"production\"}}";
  Reply first = hold(s, "finance.payment.execute", payload, {{"Nats-Msg-Id", "dup-1"}});
  Reply second = hold(s, "finance.payment.execute", payload, {{"Nats-Msg-Id", "dup-1"}});
  // Same content in another key order: same job hash, so also the same job.
  Reply third =
      hold(s, "finance.payment.execute", "{\"labels\":{\"env\":\"production\"}, \"amount\":7}",
           {{"Nats-Msg-Id", "dup-1"}});
  for (const Reply* r : {&first, &second, &third}) {
    EXPECT_EQ(r->status(), "approval_required") << r->raw;
    EXPECT_EQ(r->code(), 202) << r->raw;
    EXPECT_EQ(r->field("approval_id"), "dup-1") << r->raw;
    EXPECT_EQ(r->field("job_hash"), first.field("job_hash")) << r->raw;
    EXPECT_EQ(r->field("policy_snapshot"), first.field("policy_snapshot")) << r->raw;
  }
  Reply list = toReply(s.client->request("countersign.control.list", "{}", {}, 10s));
  EXPECT_EQ(list.code(), 200) << list.raw;
  ASSERT_TRUE(list.has("items") && list.body["items"].IsArray()) << list.raw;
  ASSERT_EQ(list.body["items"].Size(), 1u) << list.raw;
  EXPECT_EQ(str(list.body["items"][0], "id"), "dup-1") << list.raw;
  auto stored = s.client->kvGet(kBucket, "dup-1");
  ASSERT_TRUE(stored.has_value());
  EXPECT_EQ(str(parseJson(*stored), "payload"), payload) << "the first job's bytes are kept";
}

TEST(IntakeTest, ConcurrentHoldsAreEachStoredOnceAndAnswered) {
  // Holds do not wait for their KV create in line: 16 producers, 150 jobs each sent twice
  // (by two producers at about the same time). Every request gets its job's 202, every job
  // has exactly one record, and nothing is forwarded.
  Stack s = startStack();
  Collector forwarded(*s.client, "jobs.>");
  constexpr int kJobs = 150;
  std::vector<std::vector<Reply>> replies(16);
  std::vector<std::thread> producers;
  for (int p = 0; p < 16; ++p) {
    producers.emplace_back([&, p] {
      for (int i = p % 8; i < kJobs; i += 8) {
        const std::string payload = "{\"id\":\"pay-" + std::to_string(i) +
                                    "\",\"amount\":" + std::to_string(i) + ",\"labels\":{\"env\":\"production\"}}";
        replies[static_cast<std::size_t>(p)].push_back(
            toReply(s.client->request("agents.jobs.finance.payment.execute", payload, {}, 10s)));
      }
    });
  }
  for (auto& producer : producers) producer.join();
  std::size_t answered = 0;
  for (int p = 0; p < 16; ++p) {
    int i = p % 8;
    for (const Reply& r : replies[static_cast<std::size_t>(p)]) {
      EXPECT_EQ(r.code(), 202) << r.raw;
      EXPECT_EQ(r.field("approval_id"), "pay-" + std::to_string(i)) << r.raw;
      ++answered;
      i += 8;
    }
  }
  EXPECT_EQ(answered, 2u * kJobs);
  for (int i = 0; i < kJobs; ++i) {
    auto stored = s.client->kvGet(kBucket, "pay-" + std::to_string(i));
    ASSERT_TRUE(stored.has_value()) << i;
    const auto record = parseJson(*stored);
    EXPECT_EQ(str(record, "id"), "pay-" + std::to_string(i));
    EXPECT_NE(str(record, "payload").find("\"amount\":" + std::to_string(i) + ","), std::string::npos);
  }
  Reply list = toReply(s.client->request("countersign.control.list", "{\"limit\":1000}", {}, 10s));
  ASSERT_TRUE(list.has("items") && list.body["items"].IsArray()) << list.raw;
  EXPECT_EQ(list.body["items"].Size(), static_cast<unsigned>(kJobs));
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(forwarded.count(), 0u);
}

TEST(IntakeTest, SameIdWithOtherContentIs409IdConflict) {
  Stack s = startStack();
  Collector jobs(*s.client, "jobs.>");
  s.client->flush();
  const std::string payload = "{\"amount\":7,\"labels\":{\"env\":\"production\"}}";
  Reply first = hold(s, "finance.payment.execute", payload, {{"Nats-Msg-Id", "conf-1"}});
  EXPECT_EQ(first.code(), 202) << first.raw;
  Reply other =
      hold(s, "finance.payment.execute", "{\"amount\":7000,\"labels\":{\"env\":\"production\"}}",
           {{"Nats-Msg-Id", "conf-1"}});
  EXPECT_EQ(other.status(), "conflict") << other.raw;
  EXPECT_EQ(other.code(), 409) << other.raw;
  EXPECT_EQ(other.field("reason"), "id_conflict") << other.raw;
  EXPECT_EQ(other.field("approval_id"), "conf-1") << other.raw;
  auto stored = s.client->kvGet(kBucket, "conf-1");
  ASSERT_TRUE(stored.has_value());
  auto record = parseJson(*stored);
  EXPECT_EQ(str(record, "payload"), payload) << "the held job must not be replaced";
  EXPECT_EQ(str(record, "job_hash"), first.field("job_hash"));
  settle(s, jobs);
  EXPECT_EQ(countOn(jobs.messages(), "jobs.finance.payment.execute"), 0u);
}

TEST(IntakeTest, JobIdSourcesAndApprovalIdForm) {
  Stack s = startStack();
  struct Case {
    std::string payload;
    Headers headers;
    std::string approval_id;
  };
  const std::vector<Case> cases = {
      {"{\"v\":1}", {{"Countersign-Job-Id", "cj-7"}}, "cj-7"},
      {"{\"v\":2}", {{"Nats-Msg-Id", "nm-8"}, {"Countersign-Job-Id", "cj-8"}}, "nm-8"},
      {"{\"id\":\"pid-3\",\"v\":3}", {}, "pid-3"},
      {"{\"job_id\":\"jid-4\",\"v\":4}", {}, "jid-4"},
      {"{\"id\":5,\"job_id\":\"jid-5\"}", {}, "jid-5"},
      {"{\"v\":6}", {{"Nats-Msg-Id", "a.b-c_d=e"}}, "a.b-c_d=e"},
      {"{\"v\":7}", {{"Nats-Msg-Id", "order 42/a"}}, "h-6267d510328120a6288b861d213c95de"},
      {"{\"v\":8}", {{"Nats-Msg-Id", "h-abc"}}, "h-e594a58dec61ff58fa16aa2615143439"},
      {"{\"v\":9}", {{"Nats-Msg-Id", std::string(129, 'a')}}, "h-c12cb024a2e5551cca0e08fce8f1c5e3"},
      {"{\"v\":10}", {{"Nats-Msg-Id", std::string(128, 'b')}}, std::string(128, 'b')},
  };
  for (const auto& c : cases) {
    Reply r = hold(s, "bulk.upload", c.payload, c.headers);
    EXPECT_EQ(r.code(), 202) << c.payload << ": " << r.raw;
    EXPECT_EQ(r.field("approval_id"), c.approval_id) << c.payload << ": " << r.raw;
    EXPECT_TRUE(s.client->kvGet(kBucket, c.approval_id).has_value())
        << "no record under " << c.approval_id;
  }
  // No id at all: a generated one, unique per job even for identical content.
  Reply a = hold(s, "bulk.upload", "{\"v\":11}", {});
  Reply b = hold(s, "bulk.upload", "{\"v\":11}", {});
  EXPECT_EQ(a.code(), 202) << a.raw;
  EXPECT_EQ(b.code(), 202) << b.raw;
  EXPECT_NE(a.field("approval_id"), b.field("approval_id"));
  for (const Reply* r : {&a, &b}) {
    EXPECT_TRUE(std::regex_match(r->field("approval_id"),
                                 std::regex("[-_=A-Za-z0-9]+(\\.[-_=A-Za-z0-9]+)*")))
        << r->raw;
    EXPECT_TRUE(s.client->kvGet(kBucket, r->field("approval_id")).has_value()) << r->raw;
  }
}

// ---- too large -------------------------------------------------------------------------

TEST(IntakeTest, HeldRecordBeyondMaxPayloadIs413) {
  NatsServerOptions server_options;
  server_options.extra_config = "max_payload: 65536\n";
  Stack s = startStack(kPolicy, server_options);
  Collector jobs(*s.client, "jobs.>");
  s.client->flush();
  // ~60 KiB of JSON made of quotes: the record (payload escaped inside JSON, or base64)
  // cannot fit into 64 KiB, while the job itself can be published.
  std::string payload = "{\"data\":[\"\"";
  while (payload.size() < 60 * 1024) payload += ",\"\"";
  payload += "]}";
  Reply r = hold(s, "bulk.upload", payload, {{"Nats-Msg-Id", "big-1"}});
  EXPECT_EQ(r.status(), "too_large") << r.raw.substr(0, 200);
  EXPECT_EQ(r.code(), 413) << r.raw.substr(0, 200);
  EXPECT_EQ(r.number("max_payload"), 65536) << r.raw.substr(0, 200);
  EXPECT_FALSE(s.client->kvGet(kBucket, "big-1").has_value()) << "a too large job is not held";
  settle(s, jobs);
  EXPECT_EQ(countOn(jobs.messages(), "jobs.bulk.upload"), 0u);
  EXPECT_FALSE(s.countersign->waitExit(0ms).has_value()) << "countersign exited";
}

TEST(IntakeTest, ForwardedFormBeyondMaxPayloadIs413) {
  NatsServerOptions server_options;
  server_options.extra_config = "max_payload: 65536\n";
  Stack s = startStack(kPolicy, server_options);
  Collector jobs(*s.client, "jobs.>");
  s.client->flush();
  // Fits as published (no headers), not once countersign adds its four headers.
  const std::string payload(65536 - 40, 'x');
  Reply r = toReply(s.client->request("agents.jobs.knowledge.read", payload, {}, 10s));
  EXPECT_EQ(r.status(), "too_large") << r.raw.substr(0, 200);
  EXPECT_EQ(r.code(), 413) << r.raw.substr(0, 200);
  EXPECT_EQ(r.number("max_payload"), 65536) << r.raw.substr(0, 200);
  settle(s, jobs);
  for (const auto& m : jobs.messages()) {
    EXPECT_NE(m.payload.size(), payload.size()) << "the oversized job was forwarded";
  }
}

// ---- untrusted input -------------------------------------------------------------------

TEST(IntakeTest, ForgedCountersignHeadersAreStripped) {
  Stack s = startStack();
  Collector jobs(*s.client, "jobs.>");
  s.client->flush();
  const Headers forged = {{"Countersign-Approval", "granted"},
                          {"countersign-rule", "x"},
                          {"COUNTERSIGN-DECISION", "require_human"},
                          {"Countersign-Policy-Snapshot", "v1:sha256:forged"},
                          {"Countersign-Approved-By", "mallory"},
                          {"X-Keep", "kept"}};
  s.client->publish("agents.jobs.knowledge.read", "forged", forged);
  s.client->flush();
  auto got = jobs.waitFor(1, 10s);
  ASSERT_EQ(got.size(), 1u);
  const Message& m = got[0];
  EXPECT_EQ(headerValues(m, "Countersign-Approval"), one("none"));
  EXPECT_EQ(headerValues(m, "Countersign-Rule"), one("allow-read"));
  EXPECT_EQ(headerValues(m, "Countersign-Decision"), one("allow"));
  EXPECT_EQ(headerValues(m, "Countersign-Policy-Snapshot"),
            one(snapshotOf(s.countersign->policyPath())));
  EXPECT_TRUE(headerValues(m, "Countersign-Approved-By").empty());
  EXPECT_EQ(headerValues(m, "X-Keep"), one("kept"));

  // A held job keeps none of them either.
  Headers held_headers = forged;
  held_headers.emplace_back("Nats-Msg-Id", "forged-held");
  Reply r = hold(s, "bulk.upload", "{\"v\":1}", held_headers);
  EXPECT_EQ(r.code(), 202) << r.raw;
  auto stored = s.client->kvGet(kBucket, "forged-held");
  ASSERT_TRUE(stored.has_value());
  auto record = parseJson(*stored);
  ASSERT_TRUE(record.HasMember("headers") && record["headers"].IsObject()) << *stored;
  for (auto it = record["headers"].MemberBegin(); it != record["headers"].MemberEnd(); ++it) {
    EXPECT_NE(lower(it->name.GetString()).rfind("countersign-", 0), 0u) << *stored;
  }
  EXPECT_TRUE(record["headers"].HasMember("X-Keep")) << *stored;
}

TEST(IntakeTest, ReservedMsgIdPrefixIsDenied) {
  Stack s = startStack();
  Collector jobs(*s.client, "jobs.>");
  s.client->flush();
  Reply r = toReply(s.client->request("agents.jobs.knowledge.read", "reserved",
                                      {{"Nats-Msg-Id", "countersign:abc"}}, 10s));
  EXPECT_EQ(r.status(), "denied") << r.raw;
  EXPECT_EQ(r.code(), 403) << r.raw;
  EXPECT_EQ(r.field("reason"), "reserved_header") << r.raw;
  settle(s, jobs);
  for (const auto& m : jobs.messages()) EXPECT_NE(m.payload, "reserved");
}

TEST(IntakeTest, PayloadsThatAreNotStrictJsonAreBytes) {
  // Each would be held if its env label were read; as bytes no rule matches: default deny.
  Stack s = startStack();
  Collector jobs(*s.client, "jobs.>");
  s.client->flush();
  const std::vector<std::string> payloads = {
      R"({"env":"staging","env":"production"})",
      R"({"env":"production","env":"staging"})",
      R"({"env":"production","e\u006ev":"production"})",  // duplicate after unescaping
      R"({"labels":{"env":"production"},"labels":{"env":"production"}})",
      "\xEF\xBB\xBF{\"env\":\"production\"}",  // BOM
      R"({"env":"production","x":"\ud800"})",  // lone surrogate
      R"({"env":"production","x":NaN})",
      R"({"env":"production","x":1e400})",             // not finite as a double
      R"({"env":"production","n":9007199254740993})",  // beyond 2^53
      R"({"env":"production","n":-9007199254740993})",
      "{\"env\":\"production\",\"x\":\"\xff\"}",  // invalid UTF-8
      R"({"env":"production"} trailing)",
      R"({"env":"production",})",
  };
  for (std::size_t i = 0; i < payloads.size(); ++i) {
    const std::string id = "amb-" + std::to_string(i);
    Reply r = hold(s, "finance.payment.execute", payloads[i], {{"Nats-Msg-Id", id}});
    EXPECT_EQ(r.status(), "denied") << "payload " << i << ": " << r.raw;
    EXPECT_EQ(r.code(), 403) << "payload " << i << ": " << r.raw;
    EXPECT_EQ(r.field("rule"), "default") << "payload " << i << ": " << r.raw;
    EXPECT_FALSE(s.client->kvGet(kBucket, id).has_value()) << "payload " << i << " was held";
  }
  // Control: the strict-JSON twin (2^53 exactly is allowed) is held.
  Reply control = hold(s, "finance.payment.execute", R"({"env":"production","n":9007199254740992})",
                       {{"Nats-Msg-Id", "amb-ok"}});
  EXPECT_EQ(control.code(), 202) << control.raw;
  settle(s, jobs);
  EXPECT_EQ(countOn(jobs.messages(), "jobs.finance.payment.execute"), 0u);
}

// A bare label reads the payload's labels.<name>, else its top-level <name>, else the header
// <name> (docs/policy.md). Without a JSON payload the header is still a label source.
TEST(IntakeTest, LabelsFallBackToHeaders) {
  Stack s = startStack();
  Reply json_payload = hold(s, "finance.payment.execute", "{\"amount\":3}",
                            {{"Nats-Msg-Id", "lbl-1"}, {"env", "production"}});
  EXPECT_EQ(json_payload.code(), 202) << json_payload.raw;
  Reply empty_payload =
      hold(s, "finance.payment.execute", "", {{"Nats-Msg-Id", "lbl-2"}, {"env", "production"}});
  EXPECT_EQ(empty_payload.code(), 202)
      << "empty payload, header env=production: " << empty_payload.raw;
  // The payload's label wins over the header.
  Reply payload_wins = hold(s, "finance.payment.execute", "{\"env\":\"staging\"}",
                            {{"Nats-Msg-Id", "lbl-3"}, {"env", "production"}});
  EXPECT_EQ(payload_wins.code(), 403) << payload_wins.raw;
}

TEST(IntakeTest, MalformedJsonMatchesNothingAndTheProcessKeepsServing) {
  Stack s = startStack();
  Collector jobs(*s.client, "jobs.>");
  s.client->flush();
  const std::vector<std::string> payloads = {"{\"labels\":{\"env\":\"production\"}",
                                             "{",
                                             "\"",
                                             "[1,2",
                                             "{\"env\":}",
                                             std::string("\x00\x01{\"env\":\"production\"}", 22)};
  for (const std::string& payload : payloads) {
    Reply r = hold(s, "finance.payment.execute", payload, {});
    EXPECT_EQ(r.code(), 403) << r.raw;
    EXPECT_EQ(r.field("rule"), "default") << r.raw;
  }
  EXPECT_FALSE(s.countersign->waitExit(0ms).has_value()) << "countersign exited";
  s.client->publish("agents.jobs.knowledge.read", "still-serving");
  s.client->flush();
  auto got = jobs.waitFor(1, 10s);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].payload, "still-serving");
}

TEST(IntakeTest, ReplySubjectsOutsideTheAllowListAreNeverUsed) {
  Stack s = startStack();
  Collector jobs(*s.client, "jobs.>");
  Collector evil(*s.client, "jobs.evil");
  Collector control(*s.client, "countersign.control.approve");
  Collector loop(*s.client, "agents.jobs.loop");
  Collector denied(*s.client, "countersign.events.denied.>");
  s.client->flush();

  // deny: no answer on jobs.evil, but the decision is applied (denied event).
  s.client->publish("agents.jobs.files.delete", "deny-me", {}, "jobs.evil");
  // require_human with a reply on the control subject: held, not answered there.
  s.client->publish("agents.jobs.bulk.upload", "{\"v\":1}", {{"Nats-Msg-Id", "evil-held"}},
                    "countersign.control.approve");
  // ... nor on a route's own subject.
  s.client->publish("agents.jobs.bulk.upload", "{\"v\":2}", {{"Nats-Msg-Id", "loop-held"}},
                    "agents.jobs.loop");
  // allow: forwarded, but without the reply subject.
  s.client->publish("agents.jobs.knowledge.read", "allow-me", {}, "jobs.evil");
  s.client->flush();

  auto events = denied.waitFor(1, 10s);
  ASSERT_GE(events.size(), 1u) << "the deny decision must still be applied";
  EXPECT_EQ(events[0].subject, "countersign.events.denied.files.delete");
  bool allowed_seen = false;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!allowed_seen && std::chrono::steady_clock::now() < deadline) {
    for (const auto& m : jobs.waitFor(jobs.count() + 1, 200ms)) {
      if (m.payload == "allow-me") {
        allowed_seen = true;
        EXPECT_TRUE(m.reply.empty()) << "forwarded with a disallowed reply subject " << m.reply;
      }
    }
  }
  EXPECT_TRUE(allowed_seen) << "the allowed job was not forwarded";
  EXPECT_TRUE(s.client->kvGet(kBucket, "evil-held").has_value()) << "the held job was not held";
  EXPECT_TRUE(s.client->kvGet(kBucket, "loop-held").has_value()) << "the held job was not held";
  settle(s, jobs);
  EXPECT_EQ(evil.count(), 0u) << "countersign answered on jobs.evil: "
                              << evil.messages()[0].payload;
  EXPECT_EQ(control.count(), 0u) << "countersign published on countersign.control.approve";
  EXPECT_EQ(loop.count(), 0u) << "countersign published on agents.jobs.loop";
}

// ---- events ----------------------------------------------------------------------------

TEST(IntakeTest, DecisionsAreEmittedAsEvents) {
  Stack s = startStack();
  Collector events(*s.client, "countersign.events.>");
  Collector jobs(*s.client, "jobs.>");
  s.client->flush();
  Reply denied = toReply(s.client->request("agents.jobs.files.delete", "{}", {}, 10s));
  EXPECT_EQ(denied.code(), 403) << denied.raw;
  s.client->publish("agents.jobs.search.query", "1");
  Reply throttled = toReply(s.client->request("agents.jobs.search.query", "2", {}, 10s));
  EXPECT_EQ(throttled.code(), 429) << throttled.raw;
  Reply held =
      hold(s, "finance.payment.execute", "{\"env\":\"production\"}", {{"Nats-Msg-Id", "ev-1"}});
  EXPECT_EQ(held.code(), 202) << held.raw;

  auto got = events.waitFor(3, 10s);
  settle(s, jobs);
  got = events.messages();
  const std::regex rfc3339(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z)");
  auto find = [&](const std::string& subject) -> const Message* {
    for (const auto& m : got) {
      if (m.subject == subject) return &m;
    }
    ADD_FAILURE() << "no event on " << subject;
    return nullptr;
  };
  if (const Message* m = find("countersign.events.denied.files.delete")) {
    auto body = parseJson(m->payload);
    EXPECT_EQ(str(body, "event"), "denied") << m->payload;
    EXPECT_EQ(str(body, "topic"), "files.delete") << m->payload;
    EXPECT_EQ(str(body, "subject"), "agents.jobs.files.delete") << m->payload;
    EXPECT_EQ(str(body, "rule"), "deny-delete") << m->payload;
    EXPECT_EQ(str(body, "reason"), "deletes are not allowed") << m->payload;
    EXPECT_EQ(str(body, "actor"), "countersign") << m->payload;
    EXPECT_TRUE(std::regex_match(str(body, "at"), rfc3339)) << m->payload;
  }
  if (const Message* m = find("countersign.events.throttled.search.query")) {
    auto body = parseJson(m->payload);
    EXPECT_EQ(str(body, "event"), "throttled") << m->payload;
    EXPECT_EQ(str(body, "topic"), "search.query") << m->payload;
    EXPECT_EQ(str(body, "subject"), "agents.jobs.search.query") << m->payload;
    EXPECT_EQ(str(body, "rule"), "throttle-search") << m->payload;
    EXPECT_TRUE(std::regex_match(str(body, "at"), rfc3339)) << m->payload;
  }
  if (const Message* m = find("countersign.events.held.finance.payment.execute")) {
    auto body = parseJson(m->payload);
    EXPECT_EQ(str(body, "event"), "held") << m->payload;
    EXPECT_EQ(str(body, "approval_id"), "ev-1") << m->payload;
    EXPECT_EQ(str(body, "topic"), "finance.payment.execute") << m->payload;
    EXPECT_EQ(str(body, "subject"), "agents.jobs.finance.payment.execute") << m->payload;
    EXPECT_EQ(str(body, "rule"), "hold-prod-finance") << m->payload;
    EXPECT_EQ(str(body, "job_hash"), held.field("job_hash")) << m->payload;
    EXPECT_EQ(str(body, "policy_snapshot"), held.field("policy_snapshot")) << m->payload;
    EXPECT_EQ(str(body, "actor"), "countersign") << m->payload;
    EXPECT_TRUE(std::regex_match(str(body, "at"), rfc3339)) << m->payload;
  }
  for (const auto& m : got) {
    EXPECT_NE(m.subject.rfind("countersign.events.allowed.", 0), 0u)
        << "allowed events are off by default: " << m.subject;
  }
  // Exactly one event per decision.
  EXPECT_EQ(countOn(got, "countersign.events.denied.files.delete"), 1u);
  EXPECT_EQ(countOn(got, "countersign.events.throttled.search.query"), 1u);
  EXPECT_EQ(countOn(got, "countersign.events.held.finance.payment.execute"), 1u);
}

// ---- shutdown --------------------------------------------------------------------------

TEST(IntakeTest, SigtermExitsZeroAfterHandlingWhatWasPublished) {
  Stack s = startStack();
  Collector jobs(*s.client, "jobs.>");
  s.client->flush();
  constexpr int kJobs = 200;
  for (int i = 0; i < kJobs; ++i)
    s.client->publish("agents.jobs.knowledge.read", std::to_string(i));
  s.client->flush();
  const auto started = std::chrono::steady_clock::now();
  const int status = s.countersign->stop(15s);
  const auto took = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(status, 0) << s.countersign->logs();
  EXPECT_LT(took, 5s) << "SIGTERM took "
                      << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                      << " ms";
  auto got = jobs.waitFor(kJobs, 10s);
  std::this_thread::sleep_for(300ms);
  got = jobs.messages();
  EXPECT_EQ(got.size(), static_cast<std::size_t>(kJobs))
      << "jobs published before SIGTERM must all be forwarded, exactly once";
  std::vector<bool> seen(kJobs, false);
  for (const auto& m : got) {
    const int i = std::stoi(m.payload);
    ASSERT_TRUE(i >= 0 && i < kJobs);
    EXPECT_FALSE(seen[static_cast<std::size_t>(i)]) << "job " << i << " forwarded twice";
    seen[static_cast<std::size_t>(i)] = true;
  }
}

}  // namespace
}  // namespace countersign::testing
