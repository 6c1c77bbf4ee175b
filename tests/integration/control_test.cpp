// Black-box tests of the control subjects (docs/protocol.md, docs/exactly-once.md; docs/protocol.md): approve,
// reject, get and list against the real binary and a real nats-server, every row of the
// status table, and the events the decisions emit.
#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <fstream>
#include <functional>
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
constexpr const char* kPayTopic = "finance.payment.execute";
constexpr const char* kPayTarget = "jobs.finance.payment.execute";

constexpr const char* kPolicy = R"(version: v1
rules:
  - id: allow-read
    when: { topic: knowledge.read }
    decision: allow
  - id: hold-payments
    when: { topic: finance.payment.execute }
    decision: require_human
  - id: hold-probe
    when: { topic: probe }
    decision: require_human
  - id: hold-quick
    when: { topic: quick.expiry }
    decision: require_human
    timeout: 1s
)";

// Another meaning (a new rule), the payment job is still held.
constexpr const char* kPolicyStillHeld = R"(version: v1
rules:
  - id: deny-deletes
    when: { topic: files.delete }
    decision: deny
  - id: allow-read
    when: { topic: knowledge.read }
    decision: allow
  - id: hold-payments
    when: { topic: finance.payment.execute }
    decision: require_human
  - id: hold-probe
    when: { topic: probe }
    decision: require_human
)";

// The payment job is now denied.
constexpr const char* kPolicyDenies = R"(version: v1
rules:
  - id: allow-read
    when: { topic: knowledge.read }
    decision: allow
  - id: deny-payments
    when: { topic: finance.payment.execute }
    decision: deny
    reason: payments frozen
  - id: hold-probe
    when: { topic: probe }
    decision: require_human
)";

// ---- helpers --------------------------------------------------------------------------------

std::string toJson(const rapidjson::Value& value) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  value.Accept(writer);
  return std::string(buffer.GetString(), buffer.GetSize());
}

// The stack with the control requests these tests send.
struct ControlStack : Stack {
  Reply control(const std::string& verb, const std::string& body) {
    return toReply(client->request("countersign.control." + verb, body, {}, 10s));
  }
  Reply approve(const std::string& id, const std::string& approver = "alice") {
    return control("approve", R"({"id":")" + id + R"(","approver":")" + approver + R"("})");
  }
  Reply reject(const std::string& id, const std::string& approver = "bob") {
    return control("reject",
                   R"({"id":")" + id + R"(","approver":")" + approver + R"(","reason":"no"})");
  }
  Reply get(const std::string& id) { return control("get", R"({"id":")" + id + R"("})"); }
  Reply hold(const std::string& topic, const std::string& id, const std::string& payload,
             Headers headers = {}) {
    headers.emplace_back("Nats-Msg-Id", id);
    return toReply(client->request("agents.jobs." + topic, payload, headers, 10s));
  }
};

ControlStack startStack(const std::string& policy = kPolicy) {
  return ControlStack{Stack::start(policy)};
}

// Polls `probe` every 100 ms until it returns true or `timeout` passes.
bool eventually(const std::function<bool()>& probe, std::chrono::milliseconds timeout = 10s) {
  return waitUntil(probe, timeout);
}

std::string recordState(ControlStack& s, const std::string& id) {
  Reply r = s.control("get", R"({"id":")" + id + R"("})");
  if (!r.has("record")) return "<no record>";
  return str(r.body["record"], "state");
}

// Replaces the policy file atomically and sends SIGHUP, then waits until fresh held probe jobs
// are judged under `expected_snapshot`.
void reloadPolicy(ControlStack& s, const std::string& policy,
                  const std::string& expected_snapshot) {
  const auto path = s.countersign->policyPath();
  const auto temp = path.string() + ".new";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out << policy;
  }
  std::filesystem::rename(temp, path);
  s.countersign->signal(SIGHUP);
  static int probes = 0;
  std::string last;
  const bool reloaded = eventually([&] {
    Reply r = s.hold("probe", "probe-" + std::to_string(++probes), "{}");
    last = r.field("policy_snapshot");
    return last == expected_snapshot;
  });
  ASSERT_TRUE(reloaded) << "policy not reloaded after SIGHUP: held jobs still get " << last
                        << ", expected " << expected_snapshot;
}

const std::string kPayPayload = "{\"amount\": 250, \"currency\":\"EUR\"}";

// ---- approve ---------------------------------------------------------------------------

TEST(ControlTest, ApproveReleasesTheJobOnceWithApprovalHeaders) {
  ControlStack s = startStack();
  Collector jobs(*s.client, "jobs.>");
  s.client->flush();
  Reply held = s.hold(kPayTopic, "pay-1", kPayPayload,
                      {{"X-Trace", "1"}, {"X-Trace", "2"}, {"Countersign-Approval", "granted"}});
  ASSERT_EQ(held.code(), 202) << held.raw;

  Reply r = s.approve("pay-1", "alice");
  EXPECT_EQ(r.status(), "approved") << r.raw;
  EXPECT_EQ(r.code(), 200) << r.raw;
  EXPECT_EQ(r.field("approval_id"), "pay-1") << r.raw;
  EXPECT_TRUE(r.isTrue("released")) << r.raw;
  EXPECT_EQ(r.field("msg_id"), "countersign:pay-1") << r.raw;
  EXPECT_EQ(r.field("target"), kPayTarget) << r.raw;

  auto got = jobs.waitFor(1, 10s);
  ASSERT_EQ(got.size(), 1u);
  const Message& m = got[0];
  EXPECT_EQ(m.subject, kPayTarget);
  EXPECT_EQ(m.payload, kPayPayload) << "the released payload must be byte-identical";
  EXPECT_TRUE(m.reply.empty()) << "a released job carries no reply subject: " << m.reply;
  EXPECT_EQ(headerValues(m, "X-Trace"), (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(headerValues(m, "Nats-Msg-Id"), one("countersign:pay-1"));
  EXPECT_EQ(headerValues(m, "Countersign-Approval"), one("granted"));
  EXPECT_EQ(headerValues(m, "Countersign-Approval-Id"), one("pay-1"));
  EXPECT_EQ(headerValues(m, "Countersign-Approved-By"), one("alice"));
  EXPECT_EQ(headerValues(m, "Countersign-Job-Hash"), one(held.field("job_hash")));
  EXPECT_EQ(headerValues(m, "Countersign-Policy-Snapshot"), one(held.field("policy_snapshot")));
  EXPECT_EQ(headerValues(m, "Countersign-Decision"), one("require_human"));
  EXPECT_EQ(headerValues(m, "Countersign-Rule"), one("hold-payments"));

  Reply again = s.approve("pay-1", "carol");
  EXPECT_EQ(again.status(), "already_approved") << again.raw;
  EXPECT_EQ(again.code(), 200) << again.raw;
  EXPECT_EQ(again.field("approval_id"), "pay-1") << again.raw;
  EXPECT_EQ(again.field("decided_by"), "alice") << again.raw;
  EXPECT_TRUE(again.has("decided_at")) << again.raw;

  settle(s, jobs);
  EXPECT_EQ(countOn(jobs.messages(), kPayTarget), 1u) << "released more than once";

  EXPECT_TRUE(eventually([&] { return recordState(s, "pay-1") == "released"; }))
      << "record state: " << recordState(s, "pay-1");
  Reply got_record = s.get("pay-1");
  ASSERT_TRUE(got_record.has("record")) << got_record.raw;
  EXPECT_EQ(str(got_record.body["record"], "decided_by"), "alice") << got_record.raw;
  EXPECT_EQ(str(got_record.body["record"], "release_msg_id"), "countersign:pay-1")
      << got_record.raw;
  EXPECT_TRUE(s.client->kvGet(kBucket, "pay-1/decision").has_value());
  EXPECT_TRUE(s.client->kvGet(kBucket, "pay-1/released").has_value());
}

TEST(ControlTest, ApproveWithoutReplySubjectIsStillApplied) {
  ControlStack s = startStack();
  Collector jobs(*s.client, "jobs.>");
  s.client->flush();
  ASSERT_EQ(s.hold(kPayTopic, "quiet-1", kPayPayload).code(), 202);
  s.client->publish("countersign.control.approve", R"({"id":"quiet-1","approver":"alice"})");
  s.client->flush();
  auto got = jobs.waitFor(1, 10s);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(headerValues(got[0], "Countersign-Approval-Id"), one("quiet-1"));
  Reply again = s.approve("quiet-1");
  EXPECT_EQ(again.status(), "already_approved") << again.raw;
}

// ---- reject ----------------------------------------------------------------------------

TEST(ControlTest, RejectThenRejectAgainThenApproveIsRefused) {
  ControlStack s = startStack();
  Collector jobs(*s.client, "jobs.>");
  s.client->flush();
  ASSERT_EQ(s.hold(kPayTopic, "rej-1", kPayPayload).code(), 202);

  Reply r = s.reject("rej-1", "bob");
  EXPECT_EQ(r.status(), "rejected") << r.raw;
  EXPECT_EQ(r.code(), 200) << r.raw;
  EXPECT_EQ(r.field("approval_id"), "rej-1") << r.raw;
  EXPECT_EQ(r.field("decided_by"), "bob") << r.raw;
  EXPECT_TRUE(r.has("decided_at")) << r.raw;

  Reply again = s.reject("rej-1", "dave");
  EXPECT_EQ(again.status(), "already_rejected") << again.raw;
  EXPECT_EQ(again.code(), 200) << again.raw;
  EXPECT_EQ(again.field("decided_by"), "bob") << again.raw;

  Reply approve = s.approve("rej-1");
  EXPECT_EQ(approve.status(), "conflict") << approve.raw;
  EXPECT_EQ(approve.code(), 409) << approve.raw;
  EXPECT_EQ(approve.field("reason"), "already_rejected") << approve.raw;
  EXPECT_EQ(approve.field("approval_id"), "rej-1") << approve.raw;

  settle(s, jobs);
  EXPECT_EQ(countOn(jobs.messages(), kPayTarget), 0u);
  EXPECT_TRUE(eventually([&] { return recordState(s, "rej-1") == "rejected"; }))
      << "record state: " << recordState(s, "rej-1");
}

TEST(ControlTest, RejectAfterApproveIs409AlreadyApproved) {
  ControlStack s = startStack();
  Collector jobs(*s.client, "jobs.>");
  s.client->flush();
  ASSERT_EQ(s.hold(kPayTopic, "ra-1", kPayPayload).code(), 202);
  EXPECT_EQ(s.approve("ra-1").code(), 200);
  Reply r = s.reject("ra-1");
  EXPECT_EQ(r.status(), "conflict") << r.raw;
  EXPECT_EQ(r.code(), 409) << r.raw;
  EXPECT_EQ(r.field("reason"), "already_approved") << r.raw;
  settle(s, jobs);
  EXPECT_EQ(countOn(jobs.messages(), kPayTarget), 1u);
}

// ---- snapshot_changed ------------------------------------------------------------------

TEST(ControlTest, SnapshotChangedRebindsHeldAgainAndASecondApproveReleases) {
  ControlStack s = startStack();
  Collector jobs(*s.client, "jobs.>");
  Collector held_events(*s.client, "countersign.events.held.>");
  s.client->flush();
  Reply held = s.hold(kPayTopic, "snap-1", kPayPayload);
  ASSERT_EQ(held.code(), 202) << held.raw;
  const std::string old_snapshot = held.field("policy_snapshot");

  TempDir scratch;
  const std::string new_snapshot = policySnapshot(scratch.write("p.yaml", kPolicyStillHeld));
  ASSERT_NE(new_snapshot, old_snapshot);
  reloadPolicy(s, kPolicyStillHeld, new_snapshot);
  if (::testing::Test::HasFatalFailure()) return;

  Reply r = s.approve("snap-1", "alice");
  EXPECT_EQ(r.status(), "conflict") << r.raw;
  EXPECT_EQ(r.code(), 409) << r.raw;
  EXPECT_EQ(r.field("reason"), "snapshot_changed") << r.raw;
  EXPECT_EQ(r.field("approval_id"), "snap-1") << r.raw;
  EXPECT_EQ(r.field("policy_snapshot"), new_snapshot) << r.raw;

  auto heldFor = [&](const std::string& id) {
    std::size_t n = 0;
    for (const auto& m : held_events.messages()) {
      n += str(parseJson(m.payload), "approval_id") == id ? 1 : 0;
    }
    return n;
  };
  EXPECT_TRUE(eventually([&] { return heldFor("snap-1") >= 2; }))
      << "`held` must be emitted again after the re-binding; got " << heldFor("snap-1");
  for (const auto& m : held_events.messages()) {
    auto body = parseJson(m.payload);
    if (str(body, "approval_id") != "snap-1") continue;
    EXPECT_EQ(m.subject, "countersign.events.held.finance.payment.execute");
  }
  settle(s, jobs);
  EXPECT_EQ(countOn(jobs.messages(), kPayTarget), 0u) << "released without a valid approval";
  EXPECT_EQ(heldFor("snap-1"), 2u);

  const std::size_t before = jobs.count();
  Reply second = s.approve("snap-1", "alice");
  EXPECT_EQ(second.status(), "approved") << second.raw;
  EXPECT_EQ(second.code(), 200) << second.raw;
  jobs.waitFor(before + 1, 10s);
  settle(s, jobs);
  auto got = jobs.messages();
  ASSERT_EQ(countOn(got, kPayTarget), 1u);
  for (const auto& m : got) {
    if (m.subject != kPayTarget) continue;
    EXPECT_EQ(headerValues(m, "Countersign-Policy-Snapshot"), one(new_snapshot));
    EXPECT_EQ(headerValues(m, "Countersign-Job-Hash"), one(held.field("job_hash")));
    EXPECT_EQ(m.payload, kPayPayload);
  }
}

TEST(ControlTest, SnapshotChangedToADenyingPolicyRejectsTheRecord) {
  ControlStack s = startStack();
  Collector jobs(*s.client, "jobs.>");
  s.client->flush();
  Reply held = s.hold(kPayTopic, "snapdeny-1", kPayPayload);
  ASSERT_EQ(held.code(), 202) << held.raw;

  TempDir scratch;
  const std::string new_snapshot = policySnapshot(scratch.write("p.yaml", kPolicyDenies));
  reloadPolicy(s, kPolicyDenies, new_snapshot);
  if (::testing::Test::HasFatalFailure()) return;

  Reply r = s.approve("snapdeny-1", "alice");
  EXPECT_EQ(r.status(), "conflict") << r.raw;
  EXPECT_EQ(r.code(), 409) << r.raw;
  EXPECT_EQ(r.field("reason"), "snapshot_changed") << r.raw;
  EXPECT_TRUE(r.isTrue("rejected")) << r.raw;

  EXPECT_TRUE(eventually([&] { return recordState(s, "snapdeny-1") == "rejected"; }))
      << "record state: " << recordState(s, "snapdeny-1");
  Reply again = s.approve("snapdeny-1", "alice");
  EXPECT_EQ(again.code(), 409) << again.raw;
  EXPECT_EQ(again.field("reason"), "already_rejected") << again.raw;
  settle(s, jobs);
  EXPECT_EQ(countOn(jobs.messages(), kPayTarget), 0u);
}

// ---- job_changed -----------------------------------------------------------------------

TEST(ControlTest, RecordAlteredInKvIs409JobChangedAndNothingIsReleased) {
  ControlStack s = startStack();
  Collector jobs(*s.client, "jobs.>");
  s.client->flush();
  Reply held = s.hold(kPayTopic, "tamper-1", kPayPayload);
  ASSERT_EQ(held.code(), 202) << held.raw;

  auto stored = s.client->kvGet(kBucket, "tamper-1");
  ASSERT_TRUE(stored.has_value());
  auto record = parseJson(*stored);
  ASSERT_EQ(str(record, "payload"), kPayPayload) << *stored;
  const std::string tampered = "{\"amount\": 250000, \"currency\":\"EUR\"}";
  record["payload"].SetString(tampered.c_str(), static_cast<rapidjson::SizeType>(tampered.size()),
                              record.GetAllocator());
  s.client->kvPut(kBucket, "tamper-1", toJson(record));

  Reply r = s.approve("tamper-1", "alice");
  EXPECT_EQ(r.status(), "conflict") << r.raw;
  EXPECT_EQ(r.code(), 409) << r.raw;
  EXPECT_EQ(r.field("reason"), "job_changed") << r.raw;
  EXPECT_EQ(r.field("approval_id"), "tamper-1") << r.raw;
  Reply again = s.approve("tamper-1", "alice");
  EXPECT_EQ(again.code(), 409) << again.raw;
  settle(s, jobs);
  EXPECT_EQ(countOn(jobs.messages(), kPayTarget), 0u) << "a tampered job was released";
}

TEST(ControlTest, ReviewerSawAnotherHashIs409JobChanged) {
  ControlStack s = startStack();
  Collector jobs(*s.client, "jobs.>");
  s.client->flush();
  Reply held = s.hold(kPayTopic, "rev-1", kPayPayload);
  ASSERT_EQ(held.code(), 202) << held.raw;
  const std::string wrong_hash = "sha256:" + std::string(64, '0');

  Reply r = s.control("approve",
                      R"({"id":"rev-1","approver":"alice","job_hash":")" + wrong_hash + R"("})");
  EXPECT_EQ(r.status(), "conflict") << r.raw;
  EXPECT_EQ(r.code(), 409) << r.raw;
  EXPECT_EQ(r.field("reason"), "job_changed") << r.raw;

  Reply other_snapshot =
      s.control("approve", R"({"id":"rev-1","approver":"alice","policy_snapshot":"v1:sha256:)" +
                               std::string(64, '0') + R"("})");
  EXPECT_EQ(other_snapshot.code(), 409) << other_snapshot.raw;
  settle(s, jobs);
  EXPECT_EQ(countOn(jobs.messages(), kPayTarget), 0u);

  // What the reviewer saw is what is held: approved.
  const std::size_t before = jobs.count();
  Reply ok = s.control("approve", R"({"id":"rev-1","approver":"alice","job_hash":")" +
                                      held.field("job_hash") + R"(","policy_snapshot":")" +
                                      held.field("policy_snapshot") + R"("})");
  EXPECT_EQ(ok.status(), "approved") << ok.raw;
  EXPECT_EQ(ok.code(), 200) << ok.raw;
  jobs.waitFor(before + 1, 10s);
  settle(s, jobs);
  EXPECT_EQ(countOn(jobs.messages(), kPayTarget), 1u);
}

// ---- not_found, bad_request, expired ---------------------------------------------------

TEST(ControlTest, UnknownIdIs404) {
  ControlStack s = startStack();
  for (const std::string verb : {"approve", "reject", "get"}) {
    Reply r = s.control(verb, R"({"id":"no-such-id","approver":"alice"})");
    EXPECT_EQ(r.status(), "not_found") << verb << ": " << r.raw;
    EXPECT_EQ(r.code(), 404) << verb << ": " << r.raw;
    EXPECT_EQ(r.field("approval_id"), "no-such-id") << verb << ": " << r.raw;
  }
}

TEST(ControlTest, MalformedRequestsAre400NamingTheField) {
  ControlStack s = startStack();
  ASSERT_EQ(s.hold(kPayTopic, "br-1", kPayPayload).code(), 202);
  struct Case {
    const char* verb;
    std::string body;
    const char* field;
  };
  const std::vector<Case> cases = {
      {"approve", "not json", "body"},
      {"approve", "[1,2]", "body"},
      {"approve", R"({"id":"br-1","approver":"alice")", "body"},
      {"reject", "{", "body"},
      {"get", "nope", "body"},
      {"list", "nope", "body"},
      {"approve", R"({"approver":"alice"})", "id"},
      {"reject", R"({"approver":"alice"})", "id"},
      {"get", R"({})", "id"},
      {"approve", R"({"id":42,"approver":"alice"})", "id"},
      {"get", R"({"id":["br-1"]})", "id"},
      {"approve", R"({"id":"","approver":"alice"})", "id"},
      {"approve", R"({"id":"br-1"})", "approver"},
      {"approve", R"({"id":"br-1","approver":7})", "approver"},
      {"reject", R"({"id":"br-1"})", "approver"},
      {"list", R"({"limit":0})", "limit"},
      {"list", R"({"limit":1001})", "limit"},
      {"list", R"({"limit":-5})", "limit"},
      {"list", R"({"limit":"ten"})", "limit"},
      {"list", R"({"state":"bogus"})", "state"},
  };
  for (const auto& c : cases) {
    Reply r = s.control(c.verb, c.body);
    EXPECT_EQ(r.status(), "bad_request") << c.verb << " " << c.body << ": " << r.raw;
    EXPECT_EQ(r.code(), 400) << c.verb << " " << c.body << ": " << r.raw;
    EXPECT_EQ(r.field("field"), c.field) << c.verb << " " << c.body << ": " << r.raw;
    EXPECT_TRUE(r.has("reason")) << r.raw;
  }
  // None of that touched the held job.
  EXPECT_EQ(recordState(s, "br-1"), "pending");
  EXPECT_FALSE(s.client->kvGet(kBucket, "br-1/decision").has_value());
  // Limits at the edges of the range are fine.
  EXPECT_EQ(s.control("list", R"({"limit":1})").code(), 200);
  EXPECT_EQ(s.control("list", R"({"limit":1000})").code(), 200);
}

// The contract does not make these 400s; what the binary does (reviewers may name a job by its
// job id, which maps to its approval id; an empty body is an empty request) must still never
// reach a key other than a record.
TEST(ControlTest, JobIdsAreMappedToApprovalIdsAndNeverReachOtherKeys) {
  ControlStack s = startStack();
  Collector jobs(*s.client, "jobs.>");
  s.client->flush();
  Reply held = s.hold(kPayTopic, "order 42/a", kPayPayload);
  ASSERT_EQ(held.code(), 202) << held.raw;
  ASSERT_EQ(held.field("approval_id"), "h-6267d510328120a6288b861d213c95de") << held.raw;
  Reply by_job_id = s.get("order 42/a");
  EXPECT_EQ(by_job_id.code(), 200) << by_job_id.raw;
  EXPECT_EQ(str(by_job_id.body["record"], "id"), "h-6267d510328120a6288b861d213c95de")
      << by_job_id.raw;

  ASSERT_EQ(s.hold(kPayTopic, "keys-1", "{\"amount\":1}").code(), 202);
  ASSERT_EQ(s.approve("keys-1").code(), 200);
  for (const std::string id : {"keys-1/decision", "keys-1/released", "../keys-1"}) {
    Reply r = s.get(id);
    EXPECT_EQ(r.code(), 404) << id << ": " << r.raw;
    EXPECT_FALSE(r.has("record")) << id << ": " << r.raw;
    Reply a = s.approve(id);
    EXPECT_EQ(a.code(), 404) << id << ": " << a.raw;
  }
  Reply empty = s.control("approve", "");
  EXPECT_EQ(empty.code(), 400) << empty.raw;
  EXPECT_EQ(empty.field("field"), "id") << empty.raw;
  settle(s, jobs);
  EXPECT_EQ(countOn(jobs.messages(), kPayTarget), 1u);
}

TEST(ControlTest, ApproveAfterTheDeadlineIs410) {
  ControlStack s = startStack();
  Collector jobs(*s.client, "jobs.>");
  s.client->flush();
  Reply held = s.hold("quick.expiry", "exp-1", "{\"v\":1}");
  ASSERT_EQ(held.code(), 202) << held.raw;
  std::this_thread::sleep_for(1500ms);
  Reply r = s.approve("exp-1", "alice");
  EXPECT_EQ(r.status(), "expired") << r.raw;
  EXPECT_EQ(r.code(), 410) << r.raw;
  EXPECT_EQ(r.field("approval_id"), "exp-1") << r.raw;
  EXPECT_TRUE(r.has("expires_at")) << r.raw;
  // Once the expiry is recorded (record state expired), the answer is the same.
  EXPECT_TRUE(eventually([&] { return recordState(s, "exp-1") == "expired"; }))
      << "record state: " << recordState(s, "exp-1");
  Reply again = s.approve("exp-1", "alice");
  EXPECT_EQ(again.status(), "expired") << again.raw;
  EXPECT_EQ(again.code(), 410) << again.raw;
  EXPECT_EQ(again.field("approval_id"), "exp-1") << again.raw;
  EXPECT_EQ(again.field("expires_at"), str(s.get("exp-1").body["record"], "expires_at"))
      << again.raw;
  settle(s, jobs);
  EXPECT_EQ(countOn(jobs.messages(), "jobs.quick.expiry"), 0u);
}

// ---- get and list ----------------------------------------------------------------------

TEST(ControlTest, GetReturnsTheRecordWithItsPayload) {
  ControlStack s = startStack();
  Reply held = s.hold(kPayTopic, "get-1", kPayPayload, {{"X-Trace", "7"}});
  ASSERT_EQ(held.code(), 202) << held.raw;
  Reply r = s.get("get-1");
  EXPECT_EQ(r.status(), "ok") << r.raw;
  EXPECT_EQ(r.code(), 200) << r.raw;
  ASSERT_TRUE(r.has("record") && r.body["record"].IsObject()) << r.raw;
  const auto& record = r.body["record"];
  EXPECT_EQ(str(record, "id"), "get-1") << r.raw;
  EXPECT_EQ(str(record, "state"), "pending") << r.raw;
  EXPECT_EQ(str(record, "payload"), kPayPayload) << r.raw;
  EXPECT_EQ(str(record, "payload_encoding"), "json") << r.raw;
  EXPECT_EQ(str(record, "job_hash"), held.field("job_hash")) << r.raw;
  EXPECT_EQ(str(record, "policy_snapshot"), held.field("policy_snapshot")) << r.raw;
  EXPECT_EQ(str(record, "topic"), kPayTopic) << r.raw;
  EXPECT_EQ(str(record, "subject"), "agents.jobs.finance.payment.execute") << r.raw;
  EXPECT_EQ(str(record, "target"), kPayTarget) << r.raw;
  EXPECT_EQ(str(record, "rule"), "hold-payments") << r.raw;
  EXPECT_TRUE(record.HasMember("created_at")) << r.raw;
}

std::vector<std::string> itemIds(const Reply& r) {
  std::vector<std::string> ids;
  if (!r.has("items") || !r.body["items"].IsArray()) {
    ADD_FAILURE() << "no items array: " << r.raw;
    return ids;
  }
  for (const auto& item : r.body["items"].GetArray()) ids.push_back(str(item, "id"));
  return ids;
}

TEST(ControlTest, ListFiltersByStateAndPages) {
  ControlStack s = startStack();
  for (const std::string id : {"l-c", "l-a", "l-b"}) {
    ASSERT_EQ(s.hold(kPayTopic, id, "{\"id\":\"" + id + "\"}").code(), 202);
  }
  ASSERT_EQ(s.hold("probe", "l-d", "{}").code(), 202);

  Reply all = s.control("list", "{}");
  EXPECT_EQ(all.status(), "ok") << all.raw;
  EXPECT_EQ(all.code(), 200) << all.raw;
  EXPECT_EQ(itemIds(all), (std::vector<std::string>{"l-a", "l-b", "l-c", "l-d"})) << all.raw;
  EXPECT_FALSE(all.has("next_after")) << all.raw;
  if (all.has("items") && all.body["items"].IsArray() && all.body["items"].Size() == 4) {
    const auto& first = all.body["items"][0];
    EXPECT_EQ(str(first, "state"), "pending") << all.raw;
    EXPECT_EQ(str(first, "topic"), kPayTopic) << all.raw;
    EXPECT_EQ(str(first, "rule"), "hold-payments") << all.raw;
    EXPECT_EQ(str(all.body["items"][3], "topic"), "probe") << all.raw;
  }

  Reply page1 = s.control("list", R"({"limit":2})");
  EXPECT_EQ(itemIds(page1), (std::vector<std::string>{"l-a", "l-b"})) << page1.raw;
  EXPECT_EQ(page1.field("next_after"), "l-b") << page1.raw;
  Reply page2 = s.control("list", R"({"limit":2,"after":"l-b"})");
  EXPECT_EQ(itemIds(page2), (std::vector<std::string>{"l-c", "l-d"})) << page2.raw;
  Reply page3 = s.control("list", R"({"limit":2,"after":"l-d"})");
  EXPECT_TRUE(itemIds(page3).empty()) << page3.raw;
  EXPECT_FALSE(page3.has("next_after")) << page3.raw;

  EXPECT_EQ(s.approve("l-a").code(), 200);
  EXPECT_EQ(s.reject("l-b").code(), 200);
  auto idsIn = [&](const std::string& state) {
    return itemIds(s.control("list", R"({"state":")" + state + R"("})"));
  };
  EXPECT_TRUE(eventually([&] {
    return idsIn("pending") == std::vector<std::string>{"l-c", "l-d"};
  })) << "pending: "
      << ::testing::PrintToString(idsIn("pending"));
  EXPECT_TRUE(eventually([&] { return idsIn("rejected") == std::vector<std::string>{"l-b"}; }))
      << "rejected: " << ::testing::PrintToString(idsIn("rejected"));
  EXPECT_TRUE(eventually([&] { return idsIn("released") == std::vector<std::string>{"l-a"}; }))
      << "released: " << ::testing::PrintToString(idsIn("released"));
  EXPECT_TRUE(idsIn("expired").empty());
}

// ---- events ----------------------------------------------------------------------------

TEST(ControlTest, DecisionsAreEmittedAsEvents) {
  ControlStack s = startStack();
  Collector events(*s.client, "countersign.events.>");
  s.client->flush();
  Reply held_a = s.hold(kPayTopic, "ev-a", kPayPayload);
  Reply held_b = s.hold(kPayTopic, "ev-b", "{\"amount\":1}");
  ASSERT_EQ(held_a.code(), 202);
  ASSERT_EQ(held_b.code(), 202);
  EXPECT_EQ(s.approve("ev-a", "alice").code(), 200);
  EXPECT_EQ(s.reject("ev-b", "bob").code(), 200);

  const std::regex rfc3339(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z)");
  auto find = [&](const std::string& subject, const std::string& id) -> rapidjson::Document {
    rapidjson::Document none;
    none.SetObject();
    const bool found = eventually([&] {
      for (const auto& m : events.messages()) {
        if (m.subject == subject && str(parseJson(m.payload), "approval_id") == id) return true;
      }
      return false;
    });
    if (!found) {
      ADD_FAILURE() << "no event on " << subject << " for " << id;
      return none;
    }
    for (const auto& m : events.messages()) {
      auto body = parseJson(m.payload);
      if (m.subject == subject && str(body, "approval_id") == id) return body;
    }
    return none;
  };

  auto approved = find("countersign.events.approved.finance.payment.execute", "ev-a");
  EXPECT_EQ(str(approved, "event"), "approved");
  EXPECT_EQ(str(approved, "actor"), "alice");
  EXPECT_EQ(str(approved, "topic"), kPayTopic);
  EXPECT_EQ(str(approved, "subject"), "agents.jobs.finance.payment.execute");
  EXPECT_EQ(str(approved, "rule"), "hold-payments");
  EXPECT_EQ(str(approved, "job_hash"), held_a.field("job_hash"));
  EXPECT_EQ(str(approved, "policy_snapshot"), held_a.field("policy_snapshot"));
  EXPECT_TRUE(std::regex_match(str(approved, "at"), rfc3339)) << str(approved, "at");

  auto released = find("countersign.events.released.finance.payment.execute", "ev-a");
  EXPECT_EQ(str(released, "event"), "released");
  EXPECT_EQ(str(released, "job_hash"), held_a.field("job_hash"));
  EXPECT_TRUE(std::regex_match(str(released, "at"), rfc3339)) << str(released, "at");

  auto rejected = find("countersign.events.rejected.finance.payment.execute", "ev-b");
  EXPECT_EQ(str(rejected, "event"), "rejected");
  EXPECT_EQ(str(rejected, "actor"), "bob");
  EXPECT_EQ(str(rejected, "reason"), "no");
  EXPECT_EQ(str(rejected, "job_hash"), held_b.field("job_hash"));
  EXPECT_TRUE(std::regex_match(str(rejected, "at"), rfc3339)) << str(rejected, "at");

  // A repeated approve publishes nothing new: no second approved/released event.
  EXPECT_EQ(s.approve("ev-a", "alice").status(), "already_approved");
  std::this_thread::sleep_for(300ms);
  std::size_t approved_events = 0, released_events = 0;
  for (const auto& m : events.messages()) {
    if (str(parseJson(m.payload), "approval_id") != "ev-a") continue;
    approved_events += m.subject.rfind("countersign.events.approved.", 0) == 0 ? 1 : 0;
    released_events += m.subject.rfind("countersign.events.released.", 0) == 0 ? 1 : 0;
  }
  EXPECT_EQ(approved_events, 1u);
  EXPECT_EQ(released_events, 1u);
}

}  // namespace
}  // namespace countersign::testing
