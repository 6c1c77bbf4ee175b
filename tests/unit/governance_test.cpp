// Approver identity, signed requests, votes and quorum: the governance checks on the core's
// fakes (in-memory KV, capturing publisher, manual clock).
#include <gtest/gtest.h>

#include <map>

#include "countersign/governance.hpp"
#include "countersign/nkeys.hpp"
#include "gateway_fixture.hpp"

namespace countersign::testing {
namespace {

constexpr const char* kGovernedPolicy = R"(version: v1
rules:
  - id: pay
    when: { topic: finance.payment.execute }
    decision: require_human
    approvers: [group:finance, carol]
    quorum: 2
    separation_of_duties: true
    requester: header.X-Requested-By
    escalate:
      - after: 10m
        approvers: [group:cfo]
  - id: single
    when: { topic: ops.restart }
    decision: require_human
    approvers: [alice, bob]
  - id: groups
    when: { topic: infra.change }
    decision: require_human
    quorum: { finance: 1, security: 1 }
  - id: open
    when: { topic: misc.> }
    decision: require_human
)";

struct Signer {
  nkeys::Seed seed = nkeys::generateSeed();
  std::string key() const { return nkeys::encodePublicKey(nkeys::publicKeyOf(seed)); }
};

class GovernanceTest : public GatewayTest {
 protected:
  void SetUp() override {
    ApproverRegistry registry;
    registry.require_signature = require_signature_;
    const auto person = [&](const char* name, std::vector<std::string> groups) {
      registry.people.push_back(Person{name, std::move(groups), {signers_[name].key()}, {}, {}});
    };
    person("alice", {"finance"});
    person("bob", {"finance"});
    person("carol", {});
    person("dave", {"cfo"});
    person("erin", {"security"});
    registry.channels.push_back(Channel{"slack", {signers_["slack"].key()}, {"group:finance"}});
    config_.approvers = std::move(registry);
    GatewayTest::SetUp();
    auto policy = Policy::parse(kGovernedPolicy);
    ASSERT_TRUE(policy) << policy.error().message;
    policy_->replace(*policy);
    config_.routes[0].to_stream = "JOBS";  // releases are JetStream publishes the replayer may repeat
  }

  struct Held {
    std::string id;
    std::string hash;
    std::string snapshot;
  };
  Held hold(const std::string& topic, const std::string& job_id, Headers headers = {}) {
    const auto outcome = send(topic, R"({"id":")" + job_id + R"("})", std::move(headers));
    EXPECT_EQ(wireName(outcome.status), "approval_required") << topic;
    auto record = parseApprovalRecord(*kv_.value(outcome.approval_id));
    EXPECT_TRUE(record.has_value());
    return Held{outcome.approval_id, record ? record->job_hash : "", record ? record->policy_snapshot : ""};
  }
  Held holdPay(const std::string& job_id, const std::string& requester = "mallory") {
    return hold("finance.payment.execute", job_id, {{"X-Requested-By", requester}});
  }

  // A request signed by `signer` (by default the approver's own key).
  std::string signedRequest(std::string_view action, const Held& held, const std::string& approver,
                            const std::string& signer_name = "", std::map<std::string, std::string> extra = {},
                            std::chrono::seconds age = std::chrono::seconds(0)) {
    const Signer& signer = signers_[signer_name.empty() ? approver : signer_name];
    rapidjson::Document doc(rapidjson::kObjectType);
    auto& a = doc.GetAllocator();
    std::map<std::string, std::string> fields = {
        {"action", std::string(action)}, {"id", held.id}, {"approver", approver}, {"job_hash", held.hash},
        {"policy_snapshot", held.snapshot}, {"at", formatRfc3339(clock_.now() - age)}, {"key", signer.key()}};
    for (auto& [k, v] : extra) fields[k] = v;
    for (const auto& [k, v] : fields) {
      doc.AddMember(rapidjson::Value(k.c_str(), a), rapidjson::Value(v.c_str(), a), a);
    }
    const std::string sig = nkeys::base64UrlEncode(nkeys::sign(signer.seed, json::canonicalize(doc)));
    doc.AddMember("signature", rapidjson::Value(sig.c_str(), a), a);
    return json::toString(doc);
  }
  ControlReply send(ControlOp op, const std::string& body) { return control_->handle(op, body); }
  using GatewayTest::send;
  std::string reasonOf(const ControlReply& reply) { return field(parse(reply.body), "reason"); }
  std::size_t releases() { return pub_.on("jobs.").size(); }
  // A 5 s lease; JOBS dedups for 2 minutes.
  std::unique_ptr<Replayer> quorumReplayer() {
    ReplayerOptions options{.lease = std::chrono::seconds(5)};
    options.duplicate_windows.emplace("JOBS", std::chrono::minutes(2));
    return replayer(std::move(options));
  }

  bool require_signature_ = true;
  std::map<std::string, Signer> signers_;
};

TEST_F(GovernanceTest, SignedApprovalReleasesAndNamesTheApprover) {
  const Held held = hold("ops.restart", "r-1");
  const auto r = send(ControlOp::approve, signedRequest("approve", held, "alice"));
  EXPECT_EQ(r.code, 200) << r.body;
  ASSERT_EQ(releases(), 1u);
  EXPECT_EQ(*findHeader(pub_.on("jobs.")[0].headers, "Countersign-Approved-By"), "alice");
}

TEST_F(GovernanceTest, UnsignedIsRefusedWhenSignaturesAreRequired) {
  const Held held = hold("ops.restart", "r-2");
  const auto r = approve(held.id);
  EXPECT_EQ(r.code, 401);
  EXPECT_EQ(wireName(r.status), "unauthenticated");
  EXPECT_EQ(reasonOf(r), "signature_required");
  EXPECT_EQ(releases(), 0u);
}

TEST_F(GovernanceTest, ForgedApproverNameIsNotAnApprover) {
  const Held held = hold("ops.restart", "r-3");
  const auto r = send(ControlOp::approve, signedRequest("approve", held, "mallory", "alice"));
  EXPECT_EQ(r.code, 403);
  EXPECT_EQ(reasonOf(r), "not_an_approver");
}

TEST_F(GovernanceTest, AnotherPersonsKeyIsUnknown) {
  const Held held = hold("ops.restart", "r-4");
  // bob's key signing a request that says alice.
  const auto r = send(ControlOp::approve, signedRequest("approve", held, "alice", "bob"));
  EXPECT_EQ(r.code, 401);
  EXPECT_EQ(reasonOf(r), "unknown_key");
  EXPECT_EQ(releases(), 0u);
}

TEST_F(GovernanceTest, ASignatureBindsIdHashSnapshotAndAction) {
  const Held a = hold("ops.restart", "r-5");
  const Held b = hold("ops.restart", "r-6");
  const std::string signed_a = send(ControlOp::approve, signedRequest("approve", a, "alice")).body;
  EXPECT_EQ(field(parse(signed_a), "status"), "approved");
  // The same signed text, replayed: the same job answers as before, nothing is published again.
  const std::string body_a = signedRequest("approve", a, "alice");
  EXPECT_EQ(wireName(send(ControlOp::approve, body_a).status), "already_approved");
  EXPECT_EQ(releases(), 1u);
  // Edited to name another job: the signature no longer verifies.
  auto edited = parse(body_a);
  edited["id"].SetString(b.id.c_str(), edited.GetAllocator());
  EXPECT_EQ(reasonOf(send(ControlOp::approve, json::toString(edited))), "bad_signature");
  auto other_hash = parse(signedRequest("approve", b, "alice"));
  other_hash["job_hash"].SetString(a.hash.c_str(), other_hash.GetAllocator());
  EXPECT_EQ(reasonOf(send(ControlOp::approve, json::toString(other_hash))), "bad_signature");
  // Validly signed over another job's hash / another snapshot: the record's checks refuse.
  const auto wrong_hash = send(ControlOp::approve, signedRequest("approve", b, "alice", "", {{"job_hash", a.hash}}));
  EXPECT_EQ(wrong_hash.code, 409);
  EXPECT_EQ(reasonOf(wrong_hash), "job_changed");
  const auto wrong_snapshot =
      send(ControlOp::approve, signedRequest("approve", b, "alice", "", {{"policy_snapshot", "v1:sha256:00"}}));
  EXPECT_EQ(reasonOf(wrong_snapshot), "snapshot_changed");
  // A signed reject sent as an approve (and the reverse).
  EXPECT_EQ(reasonOf(send(ControlOp::approve, signedRequest("reject", b, "alice"))), "bad_signature");
  EXPECT_EQ(reasonOf(send(ControlOp::reject, signedRequest("approve", b, "alice"))), "bad_signature");
  EXPECT_EQ(releases(), 1u);
}

TEST_F(GovernanceTest, StaleAndFutureTimestampsAreRefused) {
  const Held held = hold("ops.restart", "r-7");
  const auto old = send(ControlOp::approve, signedRequest("approve", held, "alice", "", {}, std::chrono::minutes(10)));
  EXPECT_EQ(old.code, 401);
  EXPECT_EQ(reasonOf(old), "stale_signature");
  const auto future = send(ControlOp::approve, signedRequest("approve", held, "alice", "", {}, -std::chrono::minutes(6)));
  EXPECT_EQ(reasonOf(future), "stale_signature");
  EXPECT_EQ(send(ControlOp::approve, signedRequest("approve", held, "alice", "", {}, std::chrono::seconds(299))).code, 200);
}

TEST_F(GovernanceTest, MalformedSignaturesAndKeysDoNotVerify) {
  const Held held = hold("ops.restart", "r-8");
  const std::string good = signedRequest("approve", held, "alice");
  const auto with = [&](const char* name, const std::string& value) {
    auto doc = parse(good);
    doc[name].SetString(value.c_str(), doc.GetAllocator());
    return send(ControlOp::approve, json::toString(doc));
  };
  const std::string key = signers_["alice"].key();
  std::string bad_crc = key;
  bad_crc.back() = bad_crc.back() == 'A' ? 'B' : 'A';
  std::string sig = field(parse(good), "signature");
  for (const auto& reply : {with("signature", sig + "="), with("signature", "!!!!"), with("signature", sig.substr(4)),
                            with("key", bad_crc), with("key", "S" + key.substr(1)), with("key", "not-a-key")}) {
    EXPECT_EQ(reply.code, 401) << reply.body;
    EXPECT_EQ(reasonOf(reply), "bad_signature") << reply.body;
  }
  auto missing_at = parse(good);
  missing_at.RemoveMember("at");
  EXPECT_EQ(send(ControlOp::approve, json::toString(missing_at)).code, 400);
  EXPECT_EQ(releases(), 0u);
}

TEST_F(GovernanceTest, ChannelsActOnlyForThoseTheyMayActFor) {
  const Held held = holdPay("p-1");
  // slack may act for group:finance (alice) but not for carol.
  const auto outside = send(ControlOp::approve, signedRequest("approve", held, "carol", "slack", {{"via", "slack"}}));
  EXPECT_EQ(outside.code, 403);
  EXPECT_EQ(reasonOf(outside), "channel_not_allowed");
  const auto unnamed = send(ControlOp::approve, signedRequest("approve", held, "alice", "slack"));
  EXPECT_EQ(reasonOf(unnamed), "unknown_key");
  // A person's own key does not pretend a channel carried it.
  const auto own_key_via = send(ControlOp::approve, signedRequest("approve", held, "alice", "", {{"via", "slack"}}));
  EXPECT_EQ(reasonOf(own_key_via), "unknown_key");
  const auto inside = send(ControlOp::approve, signedRequest("approve", held, "alice", "slack", {{"via", "slack"}}));
  EXPECT_EQ(inside.code, 202) << inside.body;
  auto vote = parseVoteRecord(*kv_.value(voteKey(held.id, 0, "alice")));
  ASSERT_TRUE(vote);
  EXPECT_EQ(vote->via, "slack");
}

TEST_F(GovernanceTest, QuorumOfTwoReleasesOnTheSecondDistinctVote) {
  const Held held = holdPay("p-2");
  const auto first = send(ControlOp::approve, signedRequest("approve", held, "bob"));
  EXPECT_EQ(first.code, 202);
  EXPECT_EQ(wireName(first.status), "vote_recorded");
  auto doc = parse(first.body);
  EXPECT_EQ(doc["votes"].GetInt(), 1);
  EXPECT_EQ(doc["quorum"].GetInt(), 2);
  const auto again = send(ControlOp::approve, signedRequest("approve", held, "bob"));
  EXPECT_EQ(again.code, 200);
  EXPECT_EQ(wireName(again.status), "already_voted");
  EXPECT_EQ(releases(), 0u);
  const auto second = send(ControlOp::approve, signedRequest("approve", held, "alice"));
  EXPECT_EQ(second.code, 200) << second.body;
  ASSERT_EQ(releases(), 1u);
  EXPECT_EQ(*findHeader(pub_.on("jobs.")[0].headers, "Countersign-Approved-By"), "alice,bob");
  auto decision = parseDecisionRecord(*kv_.value(decisionKey(held.id)));
  ASSERT_TRUE(decision);
  EXPECT_EQ(decision->by, "alice,bob");
  EXPECT_EQ(wireName(send(ControlOp::approve, signedRequest("approve", held, "carol")).status), "already_approved");
  EXPECT_EQ(releases(), 1u);
  EXPECT_EQ(pub_.on("countersign.events.vote.").size(), 2u);
}

TEST_F(GovernanceTest, TheRequesterMayNotDecideTheirOwnJob) {
  const Held held = holdPay("p-3", "alice");
  const auto own = send(ControlOp::approve, signedRequest("approve", held, "alice"));
  EXPECT_EQ(own.code, 403);
  EXPECT_EQ(reasonOf(own), "self_approval");
  EXPECT_EQ(reasonOf(send(ControlOp::reject, signedRequest("reject", held, "alice"))), "self_approval");
  EXPECT_FALSE(kv_.value(voteKey(held.id, 0, "alice")));
}

TEST_F(GovernanceTest, WithoutARequesterSeparationOfDutiesDeniesAtIntake) {
  const auto outcome = send("finance.payment.execute", R"({"id":"p-4"})");
  EXPECT_EQ(wireName(outcome.status), "denied");
  EXPECT_EQ(outcome.code, 403);
  EXPECT_EQ(field(lastReply(), "reason"), "requester_missing");
  EXPECT_EQ(kv_.size(), 0u);
}

TEST_F(GovernanceTest, OneRejectVetoes) {
  const Held held = holdPay("p-5");
  EXPECT_EQ(send(ControlOp::approve, signedRequest("approve", held, "bob")).code, 202);
  const auto veto = send(ControlOp::reject, signedRequest("reject", held, "carol"));
  EXPECT_EQ(wireName(veto.status), "rejected");
  const auto late = send(ControlOp::approve, signedRequest("approve", held, "alice"));
  EXPECT_EQ(late.code, 409);
  EXPECT_EQ(reasonOf(late), "already_rejected");
  EXPECT_EQ(releases(), 0u);
}

TEST_F(GovernanceTest, EscalationWidensWhoMayDecideOnlyOnceItApplies) {
  const Held held = holdPay("p-6");
  const auto early = send(ControlOp::approve, signedRequest("approve", held, "dave"));
  EXPECT_EQ(early.code, 403);
  EXPECT_EQ(reasonOf(early), "not_an_approver");
  auto replay = replayer();
  ASSERT_TRUE(replay->scan());
  EXPECT_TRUE(pub_.on("countersign.events.escalated.").empty());
  clock_.advance(std::chrono::minutes(10));
  ASSERT_TRUE(replay->scan());
  ASSERT_TRUE(replay->scan());
  EXPECT_EQ(pub_.on("countersign.events.escalated.").size(), 1u);
  EXPECT_EQ(send(ControlOp::approve, signedRequest("approve", held, "dave")).code, 202);
}

TEST_F(GovernanceTest, PerGroupQuorumNeedsEachGroup) {
  const Held held = hold("infra.change", "i-1");
  EXPECT_EQ(wireName(send(ControlOp::approve, signedRequest("approve", held, "alice")).status), "vote_recorded");
  EXPECT_EQ(wireName(send(ControlOp::approve, signedRequest("approve", held, "bob")).status), "vote_recorded");
  EXPECT_EQ(releases(), 0u);
  EXPECT_EQ(send(ControlOp::approve, signedRequest("approve", held, "erin")).code, 200);
  EXPECT_EQ(*findHeader(pub_.on("jobs.")[0].headers, "Countersign-Approved-By"), "alice,bob,erin");
}

TEST_F(GovernanceTest, ARebindDismissesVotes) {
  const Held held = holdPay("p-7");
  EXPECT_EQ(send(ControlOp::approve, signedRequest("approve", held, "bob")).code, 202);
  auto changed = Policy::parse(std::string(kGovernedPolicy) + "  - {id: extra, when: {topic: x}, decision: deny}\n");
  ASSERT_TRUE(changed);
  policy_->replace(*changed);
  EXPECT_EQ(reasonOf(send(ControlOp::approve, signedRequest("approve", held, "alice"))), "snapshot_changed");
  auto record = parseApprovalRecord(*kv_.value(held.id));
  ASSERT_TRUE(record);
  EXPECT_EQ(record->binding, 1);
  EXPECT_TRUE(record->votes.empty());
  const Held rebound{held.id, held.hash, record->policy_snapshot};
  // bob's vote under the old snapshot does not count: alice's is the first of the new binding.
  EXPECT_EQ(wireName(send(ControlOp::approve, signedRequest("approve", rebound, "alice")).status), "vote_recorded");
  EXPECT_EQ(send(ControlOp::approve, signedRequest("approve", rebound, "bob")).code, 200);
  EXPECT_EQ(releases(), 1u);
}

TEST_F(GovernanceTest, TheReplayerFinishesAQuorumReachedBeforeACrash) {
  const Held held = holdPay("p-8");
  EXPECT_EQ(send(ControlOp::approve, signedRequest("approve", held, "bob")).code, 202);
  // The second voter's vote was stored, then the process died before the decision.
  const VoteRecord vote{.approver = "alice", .at = formatRfc3339(clock_.now()), .job_hash = held.hash,
                        .policy_snapshot = held.snapshot};
  kv_.put(voteKey(held.id, 0, "alice"), toJson(vote));
  auto replay = quorumReplayer();
  ASSERT_TRUE(replay->scan());
  EXPECT_FALSE(kv_.value(decisionKey(held.id)));  // within the lease: the voter may still decide
  clock_.advance(std::chrono::seconds(6));
  ASSERT_TRUE(replay->scan());
  auto decision = parseDecisionRecord(*kv_.value(decisionKey(held.id)));
  ASSERT_TRUE(decision);
  EXPECT_EQ(decision->by, "alice,bob");
  for (int i = 0; i < 3 && releases() == 0; ++i) {
    clock_.advance(std::chrono::seconds(6));
    ASSERT_TRUE(replay->scan());
  }
  EXPECT_EQ(releases(), 1u);
}

// The replayer has watched a 1-of-2 quorum for longer than its lease when the last vote lands:
// that voter is creating the decision itself, so the lease starts again from its vote.
TEST_F(GovernanceTest, TheReplayerGivesTheLastVoterTheLeaseFromItsVote) {
  const Held held = holdPay("p-10");
  EXPECT_EQ(send(ControlOp::approve, signedRequest("approve", held, "bob")).code, 202);
  auto replay = quorumReplayer();
  ASSERT_TRUE(replay->scan());
  clock_.advance(std::chrono::seconds(60));
  ASSERT_TRUE(replay->scan());
  EXPECT_FALSE(kv_.value(decisionKey(held.id)));  // one vote of two
  // alice's approve has stored her vote and is about to create the decision.
  const VoteRecord vote{.approver = "alice", .at = formatRfc3339(clock_.now()), .job_hash = held.hash,
                        .policy_snapshot = held.snapshot};
  kv_.put(voteKey(held.id, 0, "alice"), toJson(vote));
  clock_.advance(std::chrono::seconds(1));
  ASSERT_TRUE(replay->scan());
  EXPECT_FALSE(kv_.value(decisionKey(held.id))) << "decided under the feet of a voter still at work";
  clock_.advance(std::chrono::seconds(3));
  ASSERT_TRUE(replay->scan());
  EXPECT_FALSE(kv_.value(decisionKey(held.id)));
  // alice never finished (a crash): a lease after her vote, the replayer decides.
  clock_.advance(std::chrono::seconds(2));
  ASSERT_TRUE(replay->scan());
  const auto decision = kv_.value(decisionKey(held.id));
  ASSERT_TRUE(decision);
  EXPECT_EQ(parseDecisionRecord(*decision)->by, "alice,bob");
}

// A vote key that does not count (here, for another job hash, as one written by hand) sits under
// alice's name; her own vote replaces it: the set of keys is the same, their revision is not.
TEST_F(GovernanceTest, AVoteReplacingOneThatDidNotCountRestartsTheLease) {
  const Held held = holdPay("p-11");
  EXPECT_EQ(send(ControlOp::approve, signedRequest("approve", held, "bob")).code, 202);
  VoteRecord vote{.approver = "alice", .at = formatRfc3339(clock_.now()), .job_hash = "sha256:other",
                  .policy_snapshot = held.snapshot};
  kv_.put(voteKey(held.id, 0, "alice"), toJson(vote));
  auto replay = quorumReplayer();
  ASSERT_TRUE(replay->scan());
  clock_.advance(std::chrono::seconds(60));
  ASSERT_TRUE(replay->scan());
  EXPECT_FALSE(kv_.value(decisionKey(held.id))) << "a vote for another job counted";
  vote.job_hash = held.hash;
  kv_.put(voteKey(held.id, 0, "alice"), toJson(vote));
  clock_.advance(std::chrono::seconds(1));
  ASSERT_TRUE(replay->scan());
  EXPECT_FALSE(kv_.value(decisionKey(held.id))) << "decided under the feet of a voter still at work";
  // alice's request, its vote stored, finishes within the lease: she hears `approved`.
  const auto alice = send(ControlOp::approve, signedRequest("approve", held, "alice"));
  EXPECT_EQ(wireName(alice.status), "approved") << alice.body;
  EXPECT_EQ(releases(), 1u);
  for (int i = 0; i < 3; ++i) {
    clock_.advance(std::chrono::seconds(6));
    ASSERT_TRUE(replay->scan());
  }
  EXPECT_EQ(releases(), 1u);
}

TEST_F(GovernanceTest, AVoteOfSomeoneOutsideTheRuleNeverCounts) {
  const Held held = holdPay("p-9");
  // erin is a registered person, but not one of this rule's approvers.
  EXPECT_EQ(reasonOf(send(ControlOp::approve, signedRequest("approve", held, "erin"))), "not_an_approver");
  // A vote key written for her by hand is not read: only allowed approvers' keys are counted.
  const VoteRecord planted{.approver = "erin", .at = formatRfc3339(clock_.now()), .job_hash = held.hash,
                           .policy_snapshot = held.snapshot};
  kv_.put(voteKey(held.id, 0, "erin"), toJson(planted));
  EXPECT_EQ(wireName(send(ControlOp::approve, signedRequest("approve", held, "bob")).status), "vote_recorded");
  EXPECT_EQ(releases(), 0u);
}

class OpenGovernanceTest : public GovernanceTest {
 protected:
  void SetUp() override {
    require_signature_ = false;
    GovernanceTest::SetUp();
  }
};

TEST_F(OpenGovernanceTest, UnsignedWorksWhenSignaturesAreOptionalButNamesAreChecked) {
  const Held held = hold("ops.restart", "o-1");
  EXPECT_EQ(control_->handle(ControlOp::approve, R"({"id":")" + held.id + R"(","approver":"mallory"})").code, 403);
  EXPECT_EQ(approve(held.id).code, 200);
}

TEST_F(OpenGovernanceTest, AnEdgeThatProvedTheApproverNeedsNoSignature) {
  config_.approvers->require_signature = true;
  const Held held = hold("ops.restart", "o-2");
  ControlRequest request;
  request.op = ControlOp::approve;
  request.id = held.id;
  request.approver = "bob";
  request.authenticated = true;
  EXPECT_EQ(control_->handle(request).code, 200);
}

// A quorum anyone may reach (no registry, no approvers on the rule): the votes are the
// approval's vote keys, counted with every write up to the voter's own vote (its revision is
// what the store is asked to include), so that of two votes at once through two replicas the
// later one's count has both.
class AnyoneQuorumTest : public GatewayTest {
 protected:
  void SetUp() override {
    GatewayTest::SetUp();
    auto policy = Policy::parse(R"(version: v1
rules:
  - id: anyone-pair
    when: { topic: misc.> }
    decision: require_human
    quorum: 2
)");
    ASSERT_TRUE(policy) << policy.error().message;
    policy_->replace(*policy);
  }
  ControlReply approveAs(const std::string& id, const std::string& approver) {
    return control_->handle(ControlOp::approve, R"({"id":")" + id + R"(","approver":")" + approver + R"("})");
  }
  std::uint64_t revisionOf(const std::string& key) {
    auto entry = kv_.get(key);
    EXPECT_TRUE(entry.has_value()) << key;
    return entry ? entry->revision : 0;
  }
};

TEST_F(AnyoneQuorumTest, TheCountIncludesEveryWriteUpToTheVotersOwnVote) {
  const auto held = send("misc.thing", R"({"id":"any-1"})");
  ASSERT_EQ(wireName(held.status), "approval_required");
  const std::string& id = held.approval_id;
  const auto first = approveAs(id, "alice");
  EXPECT_EQ(wireName(first.status), "vote_recorded") << first.body;
  EXPECT_EQ(kv_.group_keys_through, revisionOf(voteKey(id, 0, "alice")));
  kv_.put("unrelated", "moves the bucket on");
  // Their vote exists already: its revision.
  EXPECT_EQ(wireName(approveAs(id, "alice").status), "already_voted");
  EXPECT_EQ(kv_.group_keys_through, revisionOf(voteKey(id, 0, "alice")));
  // A vote written by hand under carol's name: her real vote replaces it, and its revision
  // (the replacement's) is the one asked for.
  kv_.put(voteKey(id, 0, "carol"), R"({"approver":"carol"})");
  const auto second = approveAs(id, "carol");
  EXPECT_EQ(second.code, 200) << second.body;
  EXPECT_EQ(wireName(second.status), "approved");
  EXPECT_EQ(kv_.group_keys_through, revisionOf(voteKey(id, 0, "carol")));
  EXPECT_EQ(pub_.on("jobs.").size(), 1u);
}

TEST(GovernanceUnit, RequesterSources) {
  const Headers headers{{"X-By", "hdr"}};
  const JobView job("agents.jobs.team7.deploy", "team7.deploy", headers,
                    R"({"meta":{"user":"pay"},"labels":{"owner":"lab"},"requester":"top"})");
  EXPECT_EQ(readRequester("header.X-By", job), "hdr");
  EXPECT_EQ(readRequester("payload.meta.user", job), "pay");
  EXPECT_EQ(readRequester("labels.owner", job), "lab");
  EXPECT_EQ(readRequester("subject.2", job), "team7");
  EXPECT_EQ(readRequester("subject.9", job), "");
  EXPECT_EQ(readRequester("", job), "top");
  EXPECT_EQ(readRequester("payload.meta.missing", job), "");
}

TEST(GovernanceUnit, OpenModeCountsNamesButNotGroups) {
  const Governance open(nullptr);
  Quorum two{.count = 2};
  EXPECT_FALSE(open.reached(two, {"a", "a"}));
  EXPECT_TRUE(open.reached(two, {"a", "b"}));
  Quorum groups;
  groups.per_group.emplace("finance", 1);
  EXPECT_FALSE(open.reached(groups, {"a", "b"}));  // membership is known only to the registry
  EXPECT_EQ(joinVoters({"bob", "alice", "bob"}), "alice,bob");
}

}  // namespace
}  // namespace countersign::testing

namespace countersign::testing {
namespace {

// `list` with a state filter answers from the key listing: records the decisive keys rule out
// are not read.
TEST_F(GatewayTest, AFilteredListReadsOnlyTheRecordsItMayShow) {
  std::vector<std::string> ids;
  for (int i = 0; i < 20; ++i) {
    const auto outcome = send("ops.restart", R"({"id":"l-)" + std::to_string(i) + R"("})");
    ASSERT_EQ(wireName(outcome.status), "approval_required");
    ids.push_back(outcome.approval_id);
  }
  for (int i = 0; i < 18; ++i) ASSERT_EQ(approve(ids[static_cast<std::size_t>(i)]).code, 200);
  const int before = kv_.gets.load();
  const auto pending = control_->handle(ControlOp::list, R"({"state":"pending"})");
  EXPECT_EQ(pending.code, 200);
  const auto doc = parse(pending.body);
  ASSERT_EQ(doc["items"].Size(), 2u);
  EXPECT_EQ(std::string(doc["items"][0]["id"].GetString()), "l-18");
  EXPECT_LE(kv_.gets.load() - before, 2) << "only the two pending records are read";
  const int released_before = kv_.gets.load();
  const auto released = control_->handle(ControlOp::list, R"({"state":"released","limit":5})");
  EXPECT_EQ(parse(released.body)["items"].Size(), 5u);
  EXPECT_LE(kv_.gets.load() - released_before, 6);
}

}  // namespace
}  // namespace countersign::testing
