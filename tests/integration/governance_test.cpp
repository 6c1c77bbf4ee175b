// Approvals you can trust, against the real binary and nats-server: every hostile input of the
// approver checks (forged names, signatures over other jobs, other people's keys, replays, stale
// timestamps, malformed keys and signatures, channels beyond their rights, self approval),
// concurrent votes from several connections and replicas, and a 3-replica quorum race counted
// by deliveries (exactly one per job, none without quorum).
#include <gtest/gtest.h>

#include <latch>
#include <map>
#include <set>
#include <thread>

#include "countersign/clock.hpp"
#include "countersign/json.hpp"
#include "countersign/nkeys.hpp"
#include "integration/harness/harness.hpp"
#include "integration/harness/wire.hpp"

namespace countersign::testing {
namespace {

constexpr const char* kPolicy = R"(version: v1
rules:
  - id: allow-readonly
    when: { topic: knowledge.read }
    decision: allow
  - id: single
    when: { topic: ops.restart }
    decision: require_human
    approvers: [alice, bob]
  - id: pair
    when: { topic: pair.> }
    decision: require_human
    approvers: [alice, bob]
    quorum: 2
  - id: pay
    when: { topic: finance.> }
    decision: require_human
    approvers: [group:finance, carol]
    quorum: 2
    separation_of_duties: true
    requester: header.X-Requested-By
    escalate:
      - after: 2s
        approvers: [dave]
)";

struct Keys {
  std::map<std::string, nkeys::Seed> seeds;
  std::string key(const std::string& who) const { return nkeys::encodePublicKey(nkeys::publicKeyOf(seeds.at(who))); }
};

Keys makeKeys() {
  Keys keys;
  for (const char* who : {"alice", "bob", "carol", "dave", "slack"}) keys.seeds[who] = nkeys::generateSeed();
  return keys;
}

std::string approversBlock(const Keys& keys, const std::string& extra_people = "") {
  return "approvers:\n"
         "  require_signature: true\n"
         "  people:\n"
         "    - {name: alice, groups: [finance], keys: [" + keys.key("alice") + "]}\n"
         "    - {name: bob, groups: [finance], keys: [" + keys.key("bob") + "]}\n"
         "    - {name: carol, keys: [" + keys.key("carol") + "]}\n"
         "    - {name: dave, keys: [" + keys.key("dave") + "]}\n" + extra_people +
         "  channels:\n"
         "    - {name: slack, keys: [" + keys.key("slack") + "], may_act_for: [\"group:finance\"]}\n";
}

struct Held {
  std::string id;
  std::string hash;
  std::string snapshot;
};

// A signed control request, as a client builds it: the request without `signature`, in RFC 8785
// form, signed with the signer's seed.
std::string signedRequest(const Keys& keys, std::string_view action, const Held& held, const std::string& approver,
                          const std::string& signer = "", std::map<std::string, std::string> extra = {},
                          std::chrono::seconds age = std::chrono::seconds(0)) {
  const nkeys::Seed& seed = keys.seeds.at(signer.empty() ? approver : signer);
  rapidjson::Document doc(rapidjson::kObjectType);
  auto& a = doc.GetAllocator();
  std::map<std::string, std::string> fields = {
      {"action", std::string(action)},
      {"id", held.id},
      {"approver", approver},
      {"job_hash", held.hash},
      {"policy_snapshot", held.snapshot},
      {"at", formatRfc3339(std::chrono::system_clock::now() - age)},
      {"key", nkeys::encodePublicKey(nkeys::publicKeyOf(seed))}};
  for (auto& [k, v] : extra) fields[k] = v;
  for (const auto& [k, v] : fields) doc.AddMember(rapidjson::Value(k.c_str(), a), rapidjson::Value(v.c_str(), a), a);
  const std::string sig = nkeys::base64UrlEncode(nkeys::sign(seed, json::canonicalize(doc)));
  doc.AddMember("signature", rapidjson::Value(sig.c_str(), a), a);
  return json::toString(doc);
}

std::string withField(const std::string& body, const char* name, const std::string& value) {
  auto doc = parseJson(body);
  doc[name].SetString(value.c_str(), doc.GetAllocator());
  return json::toString(doc);
}

class GovernanceIt : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = NatsServer::start();
    client_ = std::make_unique<Client>(server_->url());
    client_->addStream("JOBS", {"jobs.>"});
    keys_ = makeKeys();
    CountersignOptions options = this->options();
    configure(options);
    replicas_ = startReplicas(replicaCount(), options);
  }
  virtual int replicaCount() const { return 1; }
  virtual void configure(CountersignOptions&) {}
  CountersignOptions options() const {
    CountersignOptions options;
    options.config_yaml = gatewayConfig({.servers = {server_->url()}, .lease = "1s"}) + approversBlock(keys_);
    options.policy_yaml = kPolicy;
    options.nats_url = server_->url();
    return options;
  }

  Held hold(const std::string& topic, const std::string& id, Headers headers = {}) {
    headers.emplace_back("Nats-Msg-Id", id);
    // Each job its own payload, so that no two jobs share a job hash.
    const Reply r = toReply(client_->request("agents.jobs." + topic, "{\"job\":\"" + id + "\"}", headers, 10s));
    EXPECT_EQ(r.code(), 202) << r.raw;
    return Held{r.field("approval_id"), r.field("job_hash"), r.field("policy_snapshot")};
  }
  Reply ask(std::string_view op, const std::string& body, Client* via = nullptr) {
    return toReply((via ? via : client_.get())->request("countersign.control." + std::string(op), body, {}, 10s));
  }
  // Deliveries of `id` stored in JOBS.
  int delivered(const std::string& id) {
    int n = 0;
    for (const auto& m : readStream(*client_, "JOBS")) n += header(m.msg, "Countersign-Approval-Id") == id ? 1 : 0;
    return n;
  }

  std::unique_ptr<NatsServer> server_;
  std::unique_ptr<Client> client_;
  Keys keys_;
  std::vector<std::unique_ptr<CountersignProcess>> replicas_;
};

TEST_F(GovernanceIt, HostileRequestsAreRefusedAndReleaseNothing) {
  const Held a = hold("ops.restart", "g-a");
  const Held b = hold("ops.restart", "g-b");
  ASSERT_NE(a.hash, b.hash);
  const auto expectRefused = [&](const Reply& r, int code, const char* reason, const char* what) {
    EXPECT_EQ(r.code(), code) << what << ": " << r.raw;
    EXPECT_EQ(r.field("reason"), reason) << what << ": " << r.raw;
    EXPECT_EQ(r.status(), code == 401 ? "unauthenticated" : "forbidden") << what;
  };
  // Unsigned, and a forged name.
  expectRefused(ask("approve", R"({"id":")" + a.id + R"(","approver":"alice"})"), 401, "signature_required", "unsigned");
  expectRefused(ask("approve", signedRequest(keys_, "approve", a, "mallory", "alice")), 403, "not_an_approver",
                "forged name");
  // Another person's key.
  expectRefused(ask("approve", signedRequest(keys_, "approve", a, "alice", "bob")), 401, "unknown_key",
                "bob's key for alice");
  // A valid signature, edited to another job's id / hash / snapshot, or sent as another action.
  const std::string signed_b = signedRequest(keys_, "approve", b, "alice");
  expectRefused(ask("approve", withField(signed_b, "id", a.id)), 401, "bad_signature", "other id");
  expectRefused(ask("approve", withField(signed_b, "job_hash", a.hash)), 401, "bad_signature", "other hash");
  expectRefused(ask("approve", withField(signed_b, "policy_snapshot", "v1:sha256:0")), 401, "bad_signature",
                "other snapshot");
  expectRefused(ask("reject", signed_b), 401, "bad_signature", "other action");
  // Validly signed, but over what another job holds: the record's checks refuse.
  const Reply other_hash = ask("approve", signedRequest(keys_, "approve", b, "alice", "", {{"job_hash", a.hash}}));
  EXPECT_EQ(other_hash.code(), 409);
  EXPECT_EQ(other_hash.field("reason"), "job_changed");
  // Ten minutes old.
  expectRefused(ask("approve", signedRequest(keys_, "approve", a, "alice", "", {}, std::chrono::minutes(10))), 401,
                "stale_signature", "10 minutes old");
  // Malformed base64url, nkey prefix and checksum.
  const std::string good = signedRequest(keys_, "approve", a, "alice");
  std::string bad_crc = keys_.key("alice");
  bad_crc.back() = bad_crc.back() == 'A' ? 'B' : 'A';
  expectRefused(ask("approve", withField(good, "signature", "not base64url!")), 401, "bad_signature", "base64");
  expectRefused(ask("approve", withField(good, "key", bad_crc)), 401, "bad_signature", "crc");
  expectRefused(ask("approve", withField(good, "key", "N" + keys_.key("alice").substr(1))), 401, "bad_signature",
                "prefix");
  // A channel acting for someone beyond may_act_for (carol is not in group:finance).
  const Held pay = hold("finance.pay", "g-pay", {{"X-Requested-By", "alice"}});
  expectRefused(ask("approve", signedRequest(keys_, "approve", pay, "carol", "slack", {{"via", "slack"}})), 403,
                "channel_not_allowed", "channel beyond may_act_for");
  // The requester approving their own job.
  expectRefused(ask("approve", signedRequest(keys_, "approve", pay, "alice")), 403, "self_approval", "self");
  // Nothing of the above released anything, nor cast a vote.
  EXPECT_EQ(client_->kvGet("countersign_approvals", pay.id + "/vote/0/alice"), std::nullopt);
  EXPECT_EQ(delivered(a.id) + delivered(b.id) + delivered(pay.id), 0);

  // The good request releases once; replayed, it answers the same way and releases nothing.
  EXPECT_EQ(ask("approve", good).code(), 200);
  const Reply again = ask("approve", good);
  EXPECT_EQ(again.status(), "already_approved") << again.raw;
  EXPECT_EQ(again.code(), 200);
  // Replayed onto another job: refused.
  EXPECT_EQ(ask("approve", withField(good, "id", b.id)).field("reason"), "bad_signature");
  EXPECT_TRUE(waitUntil([&] { return delivered(a.id) == 1; }, 10s));
  EXPECT_EQ(delivered(b.id), 0);
}

// Someone with write access to the bucket writes a vote key by hand for a 2-of-2 job that has
// one genuine vote: a copy of alice's tagged vote under bob's name, then one without a tag. It
// counts toward no quorum: alice asking again, the replayer (which finishes quorums whose voter
// crashed) and `get` all see one vote, and nothing is released. Bob's own vote replaces it and
// releases the job once.
TEST_F(GovernanceIt, AVoteKeyWrittenByHandCountsTowardNoQuorum) {
  const std::string bucket = "countersign_approvals";
  const Held held = hold("pair.forged", "forged-vote-1");
  ASSERT_EQ(ask("approve", signedRequest(keys_, "approve", held, "alice")).status(), "vote_recorded");
  const auto alice_vote = client_->kvGet(bucket, held.id + "/vote/0/alice");
  ASSERT_TRUE(alice_vote);
  auto forged = parseJson(*alice_vote);
  ASSERT_TRUE(str(forged, "tag").starts_with("v1:")) << "votes carry countersign's tag: " << *alice_vote;
  forged["approver"].SetString("bob", forged.GetAllocator());
  const std::string copied = json::toString(forged);
  forged.RemoveMember("tag");
  const std::string untagged = json::toString(forged);

  for (const std::string& value : {copied, untagged}) {
    client_->kvPut(bucket, held.id + "/vote/0/bob", value);
    const Reply again = ask("approve", signedRequest(keys_, "approve", held, "alice"));
    EXPECT_EQ(again.status(), "already_voted") << again.raw;
    EXPECT_EQ(again.number("votes"), 1) << again.raw;
    const Reply shown = ask("get", R"({"id":")" + held.id + R"("})");
    EXPECT_EQ(shown.number("votes"), 1) << shown.raw;
    // The replayer looks at quorums every 200 ms and acts after the 1 s lease.
    std::this_thread::sleep_for(2500ms);
    EXPECT_EQ(delivered(held.id), 0) << "released on a vote written by hand";
    EXPECT_FALSE(client_->kvGet(bucket, held.id + "/decision")) << "decided on a vote written by hand";
  }
  EXPECT_NE(replicas_[0]->logs().find("vote not written by countersign"), std::string::npos);

  // Bob's own vote takes the forged one's place and makes the quorum. The replayer has watched
  // this quorum for longer than its lease, but the lease starts again with bob's vote: bob's
  // request creates the decision and hears `approved`.
  const Reply bob = ask("approve", signedRequest(keys_, "approve", held, "bob"));
  EXPECT_EQ(bob.status(), "approved") << bob.raw;
  const auto decision = client_->kvGet(bucket, held.id + "/decision");
  ASSERT_TRUE(decision);
  EXPECT_EQ(str(parseJson(*decision), "by"), "alice,bob") << *decision;
  EXPECT_TRUE(waitUntil([&] { return delivered(held.id) == 1; }, 10s));
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(delivered(held.id), 1);
}

TEST_F(GovernanceIt, TheSameApproverTwiceAtOnceFromTwoConnectionsIsOneVote) {
  Client second(server_->url());
  for (int j = 0; j < 10; ++j) {
    const Held held = hold("pair.x", "twice-" + std::to_string(j));
    const std::string body = signedRequest(keys_, "approve", held, "alice");
    Reply r1, r2;
    std::latch go(3);
    std::thread t1([&] { go.arrive_and_wait(); r1 = ask("approve", body); });
    std::thread t2([&] { go.arrive_and_wait(); r2 = ask("approve", body, &second); });
    go.arrive_and_wait();
    t1.join();
    t2.join();
    std::multiset<std::string> statuses{r1.status(), r2.status()};
    EXPECT_EQ(statuses, (std::multiset<std::string>{"already_voted", "vote_recorded"})) << r1.raw << " " << r2.raw;
    EXPECT_EQ(delivered(held.id), 0);
  }
}

TEST_F(GovernanceIt, ARejectRacingTheFinalApproveDecidesOnce) {
  for (int j = 0; j < 10; ++j) {
    const Held held = hold("pair.y", "veto-" + std::to_string(j));
    ASSERT_EQ(ask("approve", signedRequest(keys_, "approve", held, "alice")).status(), "vote_recorded");
    Client other(server_->url());
    Reply approve, reject;
    std::latch go(3);
    std::thread t1([&] { go.arrive_and_wait(); approve = ask("approve", signedRequest(keys_, "approve", held, "bob")); });
    std::thread t2([&] {
      go.arrive_and_wait();
      reject = ask("reject", signedRequest(keys_, "reject", held, "alice"), &other);
    });
    go.arrive_and_wait();
    t1.join();
    t2.join();
    const bool approved = approve.status() == "approved";
    const bool rejected = reject.status() == "rejected";
    EXPECT_NE(approved, rejected) << approve.raw << " | " << reject.raw;
    if (approved) {
      EXPECT_EQ(reject.field("reason"), "already_approved") << reject.raw;
    } else {
      EXPECT_EQ(approve.field("reason"), "already_rejected") << approve.raw;
    }
    EXPECT_TRUE(waitUntil([&] { return delivered(held.id) == (approved ? 1 : 0); }, 5s));
  }
}

TEST_F(GovernanceIt, AnEscalationThatHasNotAppliedYetIsRefused) {
  Collector escalated(*client_, "countersign.events.escalated.>");
  const Held pay = hold("finance.pay", "esc-1", {{"X-Requested-By", "carol"}});
  const Reply early = ask("approve", signedRequest(keys_, "approve", pay, "dave"));
  EXPECT_EQ(early.code(), 403);
  EXPECT_EQ(early.field("reason"), "not_an_approver");
  ASSERT_EQ(escalated.waitFor(1, 10s).size(), 1u) << "no escalated event";
  EXPECT_EQ(ask("approve", signedRequest(keys_, "approve", pay, "dave")).status(), "vote_recorded");
  EXPECT_EQ(ask("approve", signedRequest(keys_, "approve", pay, "bob")).code(), 200);
  EXPECT_TRUE(waitUntil([&] { return delivered(pay.id) == 1; }, 10s));
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(escalated.count(), 1u) << "escalated once per step";
  auto delivered_msg = readStream(*client_, "JOBS");
  ASSERT_FALSE(delivered_msg.empty());
  EXPECT_EQ(header(delivered_msg.back().msg, "Countersign-Approved-By"), "bob,dave");
}

TEST_F(GovernanceIt, NoRequesterWithSeparationOfDutiesIsDeniedAtIntake) {
  const Reply r = toReply(client_->request("agents.jobs.finance.pay", "{}", {}, 10s));
  EXPECT_EQ(r.code(), 403);
  EXPECT_EQ(r.field("reason"), "requester_missing");
}

TEST_F(GovernanceIt, ShowAndPendingDisplayRequesterApproversAndVotes) {
  const Held pay = hold("finance.pay", "show-1", {{"X-Requested-By", "carol"}});
  ASSERT_EQ(ask("approve", signedRequest(keys_, "approve", pay, "bob")).status(), "vote_recorded");
  const std::string server = "--server=" + server_->url();
  const CommandResult show = runCountersign({"show", pay.id, server});
  EXPECT_EQ(show.exit_code, 0) << show.err;
  EXPECT_NE(show.out.find("requester        carol"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("approvers        alice, bob, carol"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("votes            1 of 2: bob"), std::string::npos) << show.out;
  const CommandResult pending = runCountersign({"pending", server});
  EXPECT_NE(pending.out.find("carol"), std::string::npos) << pending.out;
  EXPECT_NE(pending.out.find("1/2"), std::string::npos) << pending.out;
}

TEST_F(GovernanceIt, TheCliSignsWithASeedFile) {
  TempDir dir;
  const auto seed_file = dir.path() / "alice.nk";
  ASSERT_TRUE(nkeys::writeSeedFile(seed_file.string(), keys_.seeds.at("alice")));
  const Held held = hold("ops.restart", "cli-1");
  const std::string server = "--server=" + server_->url();
  const CommandResult unsigned_try = runCountersign({"approve", held.id, "--as", "alice", server});
  EXPECT_NE(unsigned_try.exit_code, 0);
  EXPECT_NE(unsigned_try.err.find("signature_required"), std::string::npos) << unsigned_try.err;
  const CommandResult wrong_key = runCountersign({"approve", held.id, "--as", "bob", "--key", seed_file.string(), server});
  EXPECT_NE(wrong_key.err.find("unknown_key"), std::string::npos) << wrong_key.err;
  const CommandResult ok = runCountersign({"approve", held.id, "--as", "alice", "--key", seed_file.string(), server});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_TRUE(waitUntil([&] { return delivered(held.id) == 1; }, 10s));
}

TEST_F(GovernanceIt, ARequestSignedByNkeysJsIsAccepted) {
  // nkeys.js (the NATS project's implementation) makes the key and signs the canonical text.
  const std::string node_dir = std::string(COUNTERSIGN_SOURCE_DIR) + "/tests/node";
  TempDir dir;
  const auto script = dir.write("sign.js",
                                "const nk = require('" + node_dir + "/node_modules/nkeys.js');\n"
                                "const fs = require('fs');\n"
                                "const kp = nk.fromSeed(new TextEncoder().encode(process.argv[2]));\n"
                                "const text = fs.readFileSync(process.argv[3]);\n"
                                "process.stdout.write(Buffer.from(kp.sign(new Uint8Array(text))).toString('base64url'));\n");
  const Held held = hold("ops.restart", "js-1");
  // bob's seed in the nkey encoding; the canonical text is what any RFC 8785 library makes.
  rapidjson::Document doc(rapidjson::kObjectType);
  auto& a = doc.GetAllocator();
  const std::map<std::string, std::string> fields = {
      {"action", "approve"}, {"id", held.id}, {"approver", "bob"}, {"job_hash", held.hash},
      {"policy_snapshot", held.snapshot}, {"at", formatRfc3339(std::chrono::system_clock::now())},
      {"key", keys_.key("bob")}};
  for (const auto& [k, v] : fields) doc.AddMember(rapidjson::Value(k.c_str(), a), rapidjson::Value(v.c_str(), a), a);
  const auto text_file = dir.write("text", json::canonicalize(doc));
  const std::string command = "node " + script.string() + " " + nkeys::encodeSeed(keys_.seeds.at("bob")) + " " +
                              text_file.string();
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string signature;
  char buffer[256];
  while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) signature += buffer;
  ASSERT_EQ(::pclose(pipe), 0) << "node failed: " << command;
  doc.AddMember("signature", rapidjson::Value(signature.c_str(), a), a);
  const Reply r = ask("approve", json::toString(doc));
  EXPECT_EQ(r.code(), 200) << r.raw;
  EXPECT_TRUE(waitUntil([&] { return delivered(held.id) == 1; }, 10s));
}

// REST: the token names and proves the approver, so no signature is asked for even with
// require_signature, and every other check applies (here: separation of duties, then a vote).
class RestGovernance : public GovernanceIt {
 protected:
  void configure(CountersignOptions& options) override {
    port_ = freePort();
    const std::string no_admin = "admin:\n  listen: \"\"\n";
    options.config_yaml.replace(options.config_yaml.find(no_admin), no_admin.size(),
                                "admin:\n  listen: \"127.0.0.1:" + std::to_string(port_) +
                                    "\"\n  tokens:\n    - {approver: bob, token: bob-token-0123456789}\n"
                                    "    - {approver: carol, token: carol-token-0123456789}\n");
  }
  std::string post(const std::string& id, const std::string& token) {
    const auto run = runCurl({"-X", "POST", "http://127.0.0.1:" + std::to_string(port_) + "/api/v1/approvals/" + id +
                                                "/approve",
                              "-H", "Authorization: Bearer " + token});
    return run ? run->out : std::string();
  }
  int port_ = 0;
};

TEST_F(RestGovernance, ATokenProvesTheApproverAndTheRulesStillApply) {
  const Held pay = hold("finance.pay", "rest-1", {{"X-Requested-By", "bob"}});
  const std::string own = post(pay.id, "bob-token-0123456789");
  EXPECT_NE(own.find("\"reason\":\"self_approval\""), std::string::npos) << own;
  const std::string carol = post(pay.id, "carol-token-0123456789");
  EXPECT_NE(carol.find("\"status\":\"vote_recorded\""), std::string::npos) << carol;
  const std::string again = post(pay.id, "carol-token-0123456789");
  EXPECT_NE(again.find("\"status\":\"already_voted\""), std::string::npos) << again;
  EXPECT_EQ(ask("approve", signedRequest(keys_, "approve", pay, "alice")).code(), 200);
  EXPECT_TRUE(waitUntil([&] { return delivered(pay.id) == 1; }, 10s));
}

class TwoReplicas : public GovernanceIt {
 protected:
  int replicaCount() const override { return 2; }
};

// The two last votes of a 2-of-2 quorum at the same moment, through two connections and two
// replicas of the queue group: one decision, one delivery, and answers that agree with it.
TEST_F(TwoReplicas, TwoLastVotesAtOnceMakeExactlyOneDecision) {
  Client second(server_->url());
  int approved_answers = 0;
  for (int j = 0; j < 20; ++j) {
    const Held held = hold("pair.z", "last-" + std::to_string(j));
    Reply r1, r2;
    std::latch go(3);
    std::thread t1([&] { go.arrive_and_wait(); r1 = ask("approve", signedRequest(keys_, "approve", held, "alice")); });
    std::thread t2([&] {
      go.arrive_and_wait();
      r2 = ask("approve", signedRequest(keys_, "approve", held, "bob"), &second);
    });
    go.arrive_and_wait();
    t1.join();
    t2.join();
    const int approved = (r1.status() == "approved" ? 1 : 0) + (r2.status() == "approved" ? 1 : 0);
    approved_answers += approved;
    EXPECT_EQ(approved, 1) << r1.raw << " | " << r2.raw;
    for (const Reply* r : {&r1, &r2}) {
      const std::string s = r->status();
      EXPECT_TRUE(s == "approved" || s == "vote_recorded" || s == "already_approved") << r->raw;
    }
    auto decision = client_->kvGet("countersign_approvals", held.id + "/decision");
    ASSERT_TRUE(decision.has_value());
    EXPECT_EQ(str(parseJson(*decision), "by"), "alice,bob");
    EXPECT_TRUE(waitUntil([&] { return delivered(held.id) == 1; }, 10s)) << held.id;
  }
  std::this_thread::sleep_for(1500ms);  // a second release would have shown by now
  int total = 0;
  for (const auto& m : readStream(*client_, "JOBS")) total += header(m.msg, "Countersign-Approved-By") == "alice,bob";
  EXPECT_EQ(total, 20);
  EXPECT_EQ(approved_answers, 20);
}


// A 2-of-2 rule anyone may approve (no approvers: no registry, no list): the votes are found by the
// approval's keys, not read by name. Two replicas, each with its own REST listener, so that each
// vote of a pair goes through a different replica at the same moment: each replica must count
// the other's vote written before its own, so one of the two answers decide. (Counting only
// what the key index has delivered so far leaves both at `vote_recorded`, and the job waits for
// the replayer's lease.)
constexpr const char* kAnyonePolicy = R"(version: v1
rules:
  - id: anyone-pair
    when: { topic: anyone.> }
    decision: require_human
    quorum: 2
)";

class TwoReplicasAnyoneMayApprove : public GovernanceIt {
 protected:
  int replicaCount() const override { return 0; }
  void SetUp() override {
    GovernanceIt::SetUp();
    for (int i = 0; i < 2; ++i) {
      ports_[i] = freePort();
      CountersignOptions options;
      // The default lease (5 s): a round decided only by the replayer would come that late.
      options.config_yaml = gatewayConfig({.servers = {server_->url()}, .lease = "5s"});
      const std::string no_admin = "admin:\n  listen: \"\"\n";
      options.config_yaml.replace(options.config_yaml.find(no_admin), no_admin.size(),
                                  "admin:\n  listen: \"127.0.0.1:" + std::to_string(ports_[i]) +
                                      "\"\n  tokens:\n    - {approver: alice, token: alice-token-0123456789}\n"
                                      "    - {approver: bob, token: bob-token-0123456789}\n");
      options.policy_yaml = kAnyonePolicy;
      options.nats_url = server_->url();
      replicas_.push_back(CountersignProcess::start(std::move(options)));
      ASSERT_TRUE(saysReady(*replicas_.back(), 20s)) << replicas_.back()->logs();
    }
  }
  // The approve answer's status through replica `i`'s REST listener.
  std::string approveVia(int i, const std::string& id, const std::string& token) {
    const auto run = runCurl({"-X", "POST", "http://127.0.0.1:" + std::to_string(ports_[i]) + "/api/v1/approvals/" +
                                                id + "/approve",
                              "-H", "Authorization: Bearer " + token});
    if (!run) return "no answer";
    const auto body = run->out.find("\r\n\r\n");
    if (body == std::string::npos) return "no answer: " + run->out;
    const auto doc = parseJsonQuiet(run->out.substr(body + 4));
    const std::string status = str(doc, "status");
    return status.empty() ? run->out : status;
  }
  int ports_[2] = {0, 0};
};

TEST_F(TwoReplicasAnyoneMayApprove, TwoVotesAtOnceOnTwoReplicasDecideAtOnce) {
  constexpr int kRounds = 40;
  int undecided = 0;
  for (int j = 0; j < kRounds; ++j) {
    const Held held = hold("anyone.z", "anyone-" + std::to_string(j));
    ASSERT_FALSE(held.id.empty());
    std::string a, b;
    std::latch go(3);
    // Alternate who goes through which replica.
    std::thread t1([&] { go.arrive_and_wait(); a = approveVia(j % 2, held.id, "alice-token-0123456789"); });
    std::thread t2([&] { go.arrive_and_wait(); b = approveVia(1 - j % 2, held.id, "bob-token-0123456789"); });
    go.arrive_and_wait();
    t1.join();
    t2.join();
    const int approved = (a == "approved" ? 1 : 0) + (b == "approved" ? 1 : 0);
    undecided += approved == 0 ? 1 : 0;
    EXPECT_EQ(approved, 1) << "round " << j << ": alice " << a << " | bob " << b;
    for (const std::string* s : {&a, &b}) {
      EXPECT_TRUE(*s == "approved" || *s == "vote_recorded" || *s == "already_approved") << *s;
    }
    auto decision = client_->kvGet("countersign_approvals", held.id + "/decision");
    if (approved == 1) {
      // Decided by a voter, so the decision is there already.
      ASSERT_TRUE(decision.has_value()) << held.id;
      EXPECT_EQ(str(parseJson(*decision), "by"), "alice,bob");
    }
    EXPECT_TRUE(waitUntil([&] { return delivered(held.id) == 1; }, 10s)) << held.id;
  }
  std::this_thread::sleep_for(1500ms);  // a second release would have shown by now
  int total = 0;
  for (const auto& m : readStream(*client_, "JOBS")) total += header(m.msg, "Countersign-Approved-By") == "alice,bob";
  EXPECT_EQ(total, kRounds);
  EXPECT_EQ(undecided, 0) << "rounds of " << kRounds << " without a decision by a voter";
}

}  // namespace
}  // namespace countersign::testing
