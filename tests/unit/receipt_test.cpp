// Receipts on released and allowed jobs, and the worker-side check, on the core's fakes.
#include "countersign/receipt.hpp"

#include "gateway_fixture.hpp"

namespace countersign::testing {
namespace {

Message asDelivered(const fakes::Published& published) {
  return Message{published.subject, "", published.headers, published.payload};
}

class ReceiptTest : public GatewayTest {
 protected:
  void SetUp() override {
    GatewayTest::SetUp();
    rebuild();
  }
  void rebuild() {
    const Services services{config_, kv_, pub_, clock_, ids_, *policy_, throttler_, *events_,
                            log_, metrics_, &signer_};
    intake_ = std::make_unique<Intake>(services);
    releaser_ = std::make_unique<Releaser>(services);
    control_ = std::make_unique<Control>(services, *releaser_);
  }
  Message releasedPayment() {
    const std::string id = holdPayment();
    const auto reply = approve(id);
    EXPECT_EQ(wireName(reply.status), "approved");
    const auto jobs = pub_.on("jobs.finance.payment.execute");
    EXPECT_EQ(jobs.size(), 1u);
    return jobs.empty() ? Message{} : asDelivered(jobs.back());
  }
  Message allowedRead(const std::string& payload = R"({"q":"rates","n":1.50})") {
    EXPECT_EQ(wireName(send("knowledge.read", payload, {{"X-Trace", "t1"}}).status), "allowed");
    const auto jobs = pub_.on("jobs.knowledge.read");
    EXPECT_FALSE(jobs.empty());
    return jobs.empty() ? Message{} : asDelivered(jobs.back());
  }

  nkeys::Signer signer_{nkeys::generateSeed()};
};

TEST_F(ReceiptTest, ReleasedJobCarriesAValidReceipt) {
  const Message job = releasedPayment();
  const auto check = receipt::verify(job, signer_.publicKey());
  EXPECT_TRUE(check.ok()) << check.problem;
  EXPECT_EQ(check.claims.approval_id, "pay-1");
  EXPECT_EQ(check.claims.approvers, std::vector<std::string>{"alice"});
  EXPECT_EQ(check.claims.rule, "require-approval-prod-finance");
  EXPECT_EQ(check.claims.msg_id, "countersign:pay-1");
  EXPECT_EQ(check.claims.target, "jobs.finance.payment.execute");
  EXPECT_EQ(check.claims.subject, "agents.jobs.finance.payment.execute");
  EXPECT_EQ(check.claims.policy_snapshot, policy_->current()->snapshot());
  EXPECT_EQ(check.claims.job_hash, *findHeader(job.headers, "Countersign-Job-Hash"));
  EXPECT_FALSE(check.claims.decided_at.empty());
  EXPECT_EQ(*findHeader(job.headers, "Countersign-Receipt-Key"), signer_.encodedPublicKey());
}

TEST_F(ReceiptTest, ReceiptIsCanonicalJsonSignedOverItsBytes) {
  const Message job = releasedPayment();
  const std::string& value = *findHeader(job.headers, "Countersign-Receipt");
  const auto dot = value.find('.');
  ASSERT_NE(dot, std::string::npos);
  const auto text = nkeys::base64UrlDecode(value.substr(0, dot));
  const auto signature = nkeys::base64UrlDecode(value.substr(dot + 1));
  ASSERT_TRUE(text && signature);
  auto parsed = json::parseStrict(*text);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(json::canonicalize(*parsed), *text);
  EXPECT_TRUE(nkeys::verify(signer_.publicKey(), *text, *signature));
  for (const char* name : {"approval_id", "job_hash", "policy_snapshot", "rule", "approvers",
                           "decided_at", "target", "msg_id"}) {
    EXPECT_TRUE(parsed->HasMember(name)) << name;
  }
}

TEST_F(ReceiptTest, AllowedJobCarriesAReceiptWithoutApproval) {
  const Message job = allowedRead();
  const auto check = receipt::verify(job, signer_.publicKey());
  EXPECT_TRUE(check.ok()) << check.problem;
  EXPECT_FALSE(check.claims.approval_id.has_value());
  EXPECT_TRUE(check.claims.approvers.empty());
  EXPECT_EQ(check.claims.rule, "allow-readonly");
  EXPECT_EQ(check.claims.msg_id, "");
  const std::string text =
      *nkeys::base64UrlDecode(findHeader(job.headers, "Countersign-Receipt")->substr(
          0, findHeader(job.headers, "Countersign-Receipt")->find('.')));
  EXPECT_EQ(text.find("approval_id"), std::string::npos) << text;
  EXPECT_NE(text.find("\"approvers\":[]"), std::string::npos) << text;
}

TEST_F(ReceiptTest, AllowedJobReceiptNamesItsMsgId) {
  EXPECT_EQ(wireName(send("knowledge.read", "{}", {{"Nats-Msg-Id", "read-7"}}).status), "allowed");
  const auto check = receipt::verify(asDelivered(pub_.on("jobs.knowledge.read").back()), signer_.publicKey());
  EXPECT_TRUE(check.ok()) << check.problem;
  EXPECT_EQ(check.claims.msg_id, "read-7");
}

TEST_F(ReceiptTest, AllowedReceiptsCanBeTurnedOff) {
  config_.receipts.allowed = false;
  rebuild();
  const Message job = allowedRead();
  EXPECT_EQ(findHeader(job.headers, "Countersign-Receipt"), nullptr);
  // Released jobs always carry one.
  const Message released = releasedPayment();
  EXPECT_TRUE(receipt::verify(released, signer_.publicKey()).ok());
}

TEST_F(ReceiptTest, TamperedPayloadOrHeaderFailsTheHash) {
  const Message job = releasedPayment();
  Message changed = job;
  changed.payload = R"({"id":"pay-1","amount":10000,"labels":{"env":"production"}})";
  auto check = receipt::verify(changed, signer_.publicKey());
  EXPECT_TRUE(check.signature_valid);
  EXPECT_FALSE(check.hash_matches);
  EXPECT_FALSE(check.ok());
  EXPECT_NE(check.problem.find("job hash"), std::string::npos) << check.problem;

  Message extra = allowedRead();
  extra.headers.emplace_back("X-Added", "1");
  EXPECT_FALSE(receipt::verify(extra, signer_.publicKey()).hash_matches);

  // Re-ordering keys or whitespace does not change the hash: the same job.
  Message reordered = allowedRead(R"({"n":1.5, "q":"rates"})");
  reordered.payload = R"({"q":"rates","n":1.50})";
  EXPECT_TRUE(receipt::verify(reordered, signer_.publicKey()).ok());
}

TEST_F(ReceiptTest, JobMovedToAnotherSubjectFails) {
  Message job = releasedPayment();
  job.subject = "jobs.finance.payment.refund";
  const auto check = receipt::verify(job, signer_.publicKey());
  EXPECT_TRUE(check.signature_valid);
  EXPECT_FALSE(check.target_matches);
  EXPECT_FALSE(check.ok());
}

TEST_F(ReceiptTest, ReceiptCopiedOntoAnotherJobFails) {
  const Message released = releasedPayment();
  const Message other = allowedRead();
  Message forged = other;
  for (auto& [name, value] : forged.headers) {
    if (name == "Countersign-Receipt") value = *findHeader(released.headers, "Countersign-Receipt");
  }
  const auto check = receipt::verify(forged, signer_.publicKey());
  EXPECT_FALSE(check.ok());
  EXPECT_FALSE(check.hash_matches);
}

TEST_F(ReceiptTest, ReceiptOfAnotherKeyIsRefused) {
  const Message job = releasedPayment();
  const nkeys::Signer other(nkeys::generateSeed());
  const auto check = receipt::verify(job, other.publicKey());
  EXPECT_FALSE(check.signature_valid);
  EXPECT_TRUE(check.signed_by_other_key);
  EXPECT_FALSE(check.ok());

  // A forger with their own key makes a receipt for a job they publish themselves.
  Message forged{"jobs.finance.payment.execute", "", {}, R"({"amount":1})"};
  receipt::addHeaders(forged.headers, other,
                      receipt::Claims{.approval_id = "x", .job_hash = jobHash("agents.jobs.finance.payment.execute",
                                                                                 forged.subject, {}, nullptr, forged.payload),
                                      .subject = "agents.jobs.finance.payment.execute",
                                      .target = forged.subject});
  const auto forged_check = receipt::verify(forged, signer_.publicKey());
  EXPECT_FALSE(forged_check.signature_valid);
  EXPECT_FALSE(forged_check.ok());
}

TEST_F(ReceiptTest, MissingAndMalformedReceipts) {
  const Message job{"jobs.x", "", {{"X-A", "1"}}, "{}"};
  auto check = receipt::verify(job, signer_.publicKey());
  EXPECT_FALSE(check.present);
  EXPECT_FALSE(check.ok());

  const Message released = releasedPayment();
  const std::string good = *findHeader(released.headers, "Countersign-Receipt");
  const std::string json_part = good.substr(0, good.find('.'));
  const std::string sig_part = good.substr(good.find('.') + 1);
  for (const std::string& bad :
       {std::string("garbage"), json_part, json_part + ".", "." + sig_part, json_part + "." + sig_part + "=",
        json_part + "!." + sig_part, nkeys::base64UrlEncode("[1]") + "." + sig_part,
        nkeys::base64UrlEncode("{}") + "." + sig_part, nkeys::base64UrlEncode("not json") + "." + sig_part}) {
    Message m = released;
    for (auto& [name, value] : m.headers) {
      if (name == "Countersign-Receipt") value = bad;
    }
    const auto result = receipt::verify(m, signer_.publicKey());
    EXPECT_FALSE(result.ok()) << bad;
    EXPECT_FALSE(result.signature_valid) << bad;
    EXPECT_FALSE(result.problem.empty()) << bad;
  }
}

TEST_F(ReceiptTest, ReplayedReleaseCarriesTheSameReceipt) {
  const std::string id = holdPayment();
  ASSERT_EQ(wireName(approve(id).status), "approved");
  const auto first = pub_.on("jobs.finance.payment.execute");
  ASSERT_EQ(first.size(), 1u);
  auto record = parseApprovalRecord(kv_.get(id)->value);
  auto decision = parseDecisionRecord(kv_.get(decisionKey(id))->value);
  ASSERT_TRUE(record && decision);
  clock_.advance(10s);
  ASSERT_TRUE(releaser_->release(*record, *decision, "replay").published);
  const auto both = pub_.on("jobs.finance.payment.execute");
  ASSERT_EQ(both.size(), 2u);
  EXPECT_EQ(*findHeader(both[0].headers, "Countersign-Receipt"),
            *findHeader(both[1].headers, "Countersign-Receipt"));
}

// Core intake with a receipt pipeline: the receipts are signed on several threads, and the jobs
// are still forwarded in exactly the order they arrived, each with the receipt (byte for byte)
// that signing in line gives, and each allowed job counted and announced once.
TEST_F(ReceiptTest, PipelinedReceiptsAreForwardedInArrivalOrderWithTheSameBytes) {
  constexpr int kJobs = 400;
  const auto job = [](int i) {
    return std::pair{R"({"q":"rates","n":)" + std::to_string(i) + "}",
                     Headers{{"X-Seq", std::to_string(i)}, {"X-Trace", "t" + std::to_string(i % 7)}}};
  };
  // In line first (the fixture's intake): the expected receipts.
  std::vector<std::string> expected;
  for (int i = 0; i < kJobs; ++i) {
    auto [payload, headers] = job(i);
    ASSERT_EQ(wireName(send("knowledge.read", payload, headers).status), "allowed");
    expected.push_back(*findHeader(pub_.on("jobs.knowledge.read").back().headers, "Countersign-Receipt"));
  }
  pub_.clear();

  EventSink events(pub_, clock_, log_, EventOptions{.allowed_events = true});
  Metrics metrics;
  const Services services{config_, kv_, pub_, clock_, ids_, *policy_, throttler_, events,
                          log_, metrics, &signer_};
  {
    OrderedPipeline pipeline(3, 6, "test");
    Intake intake(services, nullptr, nullptr, nullptr, &pipeline);
    for (int i = 0; i < kJobs; ++i) {
      auto [payload, headers] = job(i);
      const auto outcome = intake.onJob(config_.routes[0], Message{"agents.jobs.knowledge.read", "_INBOX.r1",
                                                                    std::move(headers), payload});
      ASSERT_EQ(wireName(outcome.status), "queued");
      EXPECT_EQ(outcome.rule, "allow-readonly");
      // A denied job between them is answered at once, in line.
      if (i % 50 == 0) {
        EXPECT_EQ(wireName(intake.onJob(config_.routes[0], Message{"agents.jobs.nothing.here", "_INBOX.d", {}, "{}"})
                               .status),
                  "denied");
      }
    }
    pipeline.drain();
    EXPECT_EQ(pipeline.failed(), 0u);
  }
  const auto forwarded = pub_.on("jobs.knowledge.read");
  ASSERT_EQ(forwarded.size(), static_cast<std::size_t>(kJobs));
  for (int i = 0; i < kJobs; ++i) {
    ASSERT_EQ(*findHeader(forwarded[i].headers, "X-Seq"), std::to_string(i)) << "forwarded out of order";
    EXPECT_EQ(*findHeader(forwarded[i].headers, "Countersign-Receipt"), expected[i]) << i;
    EXPECT_EQ(*findHeader(forwarded[i].headers, "Countersign-Receipt-Key"), signer_.encodedPublicKey());
    EXPECT_EQ(forwarded[i].reply, "_INBOX.r1");
    const auto check = receipt::verify(asDelivered(forwarded[i]), signer_.publicKey());
    EXPECT_TRUE(check.ok()) << i << ": " << check.problem;
  }
  EXPECT_EQ(metrics.decisionCount("allowed", "allow-readonly"), static_cast<std::uint64_t>(kJobs));
  EXPECT_EQ(metrics.decisionCount("queued", "allow-readonly"), 0u);
  EXPECT_EQ(metrics.decisionCount("denied", "default"), static_cast<std::uint64_t>(kJobs / 50));
  EXPECT_EQ(pub_.on("countersign.events.allowed").size(), static_cast<std::size_t>(kJobs));
}

// A forward that fails in the pipeline is settled there as in line: nothing forwarded, counted
// as unavailable (not as allowed).
TEST_F(ReceiptTest, PipelinedForwardThatFailsIsAnsweredUnavailable) {
  pub_.fail_delivery = Delivery::core;
  Metrics metrics;
  const Services services{config_, kv_, pub_, clock_, ids_, *policy_, throttler_, *events_,
                          log_, metrics, &signer_};
  {
    OrderedPipeline pipeline(2, 4, "test");
    Intake intake(services, nullptr, nullptr, nullptr, &pipeline);
    const auto outcome = intake.onJob(config_.routes[0],
                                      Message{"agents.jobs.knowledge.read", "", {{"Countersign-Reply-To", "_INBOX.p"}}, "{}"});
    EXPECT_EQ(wireName(outcome.status), "queued");
  }
  EXPECT_TRUE(pub_.on("jobs.knowledge.read").empty());
  EXPECT_EQ(metrics.decisionCount("unavailable", "allow-readonly"), 1u);
  EXPECT_EQ(metrics.decisionCount("allowed", "allow-readonly"), 0u);
}

TEST(ReceiptClaims, ApproversAreSortedNamesOfTheDecision) {
  EXPECT_EQ(receipt::approversOf("alice"), std::vector<std::string>{"alice"});
  EXPECT_EQ(receipt::approversOf("carol,alice,bob"), (std::vector<std::string>{"alice", "bob", "carol"}));
  EXPECT_TRUE(receipt::approversOf("").empty());
  const receipt::Claims claims{.approvers = {"zed", "Ann", "bob"}};
  EXPECT_NE(receipt::canonicalJson(claims).find(R"("approvers":["Ann","bob","zed"])"), std::string::npos);
}

}  // namespace
}  // namespace countersign::testing

namespace countersign::testing {
namespace {

constexpr const char* kMinimalConfig = R"(policy:
  file: policies/p.yaml
routes:
  - name: jobs
    from: "agents.jobs.>"
    to: "jobs.>"
)";

TEST(ReceiptsConfig, DefaultsResolveBesideTheConfigFile) {
  auto config = parseConfig(kMinimalConfig, "test.yaml", "/etc/countersign", {});
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(config->receipts.seed_file, "/etc/countersign/receipt.nk");
  EXPECT_TRUE(config->receipts.allowed);
}

TEST(ReceiptsConfig, SeedFileAndAllowedAreRead) {
  auto config = parseConfig(std::string(kMinimalConfig) + "receipts:\n  seed_file: keys/r.nk\n  allowed: false\n",
                            "test.yaml", "/etc/countersign", {});
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(config->receipts.seed_file, "/etc/countersign/keys/r.nk");
  EXPECT_FALSE(config->receipts.allowed);
  auto absolute = parseConfig(std::string(kMinimalConfig) + "receipts: {seed_file: /run/secrets/r.nk}\n",
                              "test.yaml", "/etc/countersign", {});
  ASSERT_TRUE(absolute) << absolute.error().message;
  EXPECT_EQ(absolute->receipts.seed_file, "/run/secrets/r.nk");
}

TEST(ReceiptsConfig, BadValuesNameTheirPath) {
  for (const auto& [block, path] : {std::pair{"receipts: {allowed: maybe}\n", "receipts.allowed"},
                                    std::pair{"receipts: {seed_file: \"\"}\n", "receipts.seed_file"},
                                    std::pair{"receipts: {seed: x}\n", "receipts.seed"},
                                    std::pair{"receipts: [1]\n", "receipts"}}) {
    auto config = parseConfig(std::string(kMinimalConfig) + block, "test.yaml", "/etc", {});
    ASSERT_FALSE(config) << block;
    EXPECT_NE(config.error().message.find(path), std::string::npos) << config.error().message;
  }
}

}  // namespace
}  // namespace countersign::testing
