// Receipts on the real binary: released and allowed jobs carry a receipt that verifies with the
// key countersign printed at start (and `keys show` shows), a job published straight onto the
// worker's subject has none, and `countersign receipt verify` refuses a tampered job.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "countersign/json.hpp"
#include "countersign/nkeys.hpp"
#include "countersign/receipt.hpp"
#include "integration/harness/harness.hpp"
#include "integration/harness/wire.hpp"

namespace countersign::testing {
namespace {

constexpr const char* kPolicy = R"(version: v1
rules:
  - id: allow-reads
    when: { topic: knowledge.read }
    decision: allow
  - id: hold-payments
    when: { topic: finance.payment.execute }
    decision: require_human
)";

// The message in the form `receipt verify` reads on stdin.
std::string wireForm(const Message& m) {
  std::string out = "NATS/1.0\r\n";
  for (const auto& [name, value] : m.headers) out += name + ": " + value + "\r\n";
  return out + "\r\n" + m.payload;
}

// Runs `countersign receipt verify --key KEY <args>` with `message` on stdin.
CommandResult verifyCli(const std::string& key, const Message& message, const std::string& args) {
  const std::string file = "/tmp/receipt_it_" + std::to_string(::getpid()) + ".msg";
  {
    std::ofstream out(file, std::ios::binary);
    out << wireForm(message);
  }
  CommandResult result;
  const std::string command = std::string(COUNTERSIGN_BIN) + " receipt verify --key " + key + " " + args +
                              " < " + file + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) {
    ADD_FAILURE() << "cannot run " << command;
    return result;
  }
  char buffer[4096];
  std::size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) result.out.append(buffer, n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::remove(file.c_str());
  return result;
}

class ReceiptIt : public ::testing::Test {
 protected:
  void SetUp() override {
    s_ = Stack::start(kPolicy);
    const auto seed_file = (s_.countersign->dir() / "receipt.nk").string();
    auto seed = nkeys::readSeedFile(seed_file);
    ASSERT_TRUE(seed) << seed.error().message;
    key_ = nkeys::publicKeyOf(*seed);
    encoded_key_ = nkeys::encodePublicKey(key_);
    struct stat info {};
    ASSERT_EQ(::stat(seed_file.c_str(), &info), 0);
    EXPECT_EQ(info.st_mode & 0777, 0600u);
  }

  Message released(Collector& jobs) {
    auto held = s_.client->request("agents.jobs.finance.payment.execute", R"({"amount":250,"to":"acme"})",
                                   {{"Nats-Msg-Id", "pay-1"}, {"X-Team", "treasury"}});
    EXPECT_TRUE(held.has_value());
    auto approved = s_.client->request("countersign.control.approve", R"({"id":"pay-1","approver":"alice"})");
    EXPECT_TRUE(approved.has_value());
    const auto got = jobs.waitFor(1);
    EXPECT_EQ(got.size(), 1u);
    return got.empty() ? Message{} : got.front();
  }

  Stack s_;
  nkeys::PublicKey key_{};
  std::string encoded_key_;
};

TEST_F(ReceiptIt, KeyIsPrintedAtStartAndShownByKeysShow) {
  EXPECT_NE(s_.countersign->logs().find("receipts signed by " + encoded_key_), std::string::npos)
      << s_.countersign->logs();
  const auto shown = runCountersign({"keys", "show", "--config", (s_.countersign->dir() / "countersign.yaml").string()});
  EXPECT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_EQ(shown.out, encoded_key_ + "\n");
}

TEST_F(ReceiptIt, ReleasedJobCarriesAValidReceipt) {
  Collector jobs(*s_.client, "jobs.finance.>");
  s_.client->flush();
  const Message job = released(jobs);
  const auto check = receipt::verify(job, key_);
  EXPECT_TRUE(check.ok()) << check.problem;
  EXPECT_EQ(check.claims.approval_id, "pay-1");
  EXPECT_EQ(check.claims.approvers, std::vector<std::string>{"alice"});
  EXPECT_EQ(check.claims.rule, "hold-payments");
  EXPECT_EQ(check.claims.msg_id, "countersign:pay-1");
  EXPECT_EQ(headerValues(job, "Countersign-Receipt-Key"), one(encoded_key_));

  const auto cli = verifyCli(encoded_key_, job, "--target jobs.finance.payment.execute");
  EXPECT_EQ(cli.exit_code, 0) << cli.out;
  EXPECT_NE(cli.out.find("receipt VALID"), std::string::npos) << cli.out;
}

TEST_F(ReceiptIt, AllowedJobCarriesAValidReceipt) {
  Collector jobs(*s_.client, "jobs.knowledge.>");
  s_.client->flush();
  s_.client->publish("agents.jobs.knowledge.read", R"({"q":"fx rates"})", {{"X-Trace", "abc"}});
  const auto got = jobs.waitFor(1);
  ASSERT_EQ(got.size(), 1u);
  const auto check = receipt::verify(got.front(), key_);
  EXPECT_TRUE(check.ok()) << check.problem;
  EXPECT_FALSE(check.claims.approval_id.has_value());
  EXPECT_TRUE(check.claims.approvers.empty());
  EXPECT_EQ(check.claims.rule, "allow-reads");
  const auto cli = verifyCli(encoded_key_, got.front(), "--target jobs.knowledge.read --json");
  EXPECT_EQ(cli.exit_code, 0) << cli.out;
  EXPECT_NE(cli.out.find(R"("valid":true)"), std::string::npos) << cli.out;
}

TEST_F(ReceiptIt, JobPublishedStraightToTheWorkerHasNoReceipt) {
  Collector jobs(*s_.client, "jobs.finance.>");
  s_.client->flush();
  s_.client->publish("jobs.finance.payment.execute", R"({"amount":1000000})", {{"Countersign-Approval", "granted"}});
  const auto got = jobs.waitFor(1);
  ASSERT_EQ(got.size(), 1u);
  const auto check = receipt::verify(got.front(), key_);
  EXPECT_FALSE(check.present);
  EXPECT_FALSE(check.ok());
  const auto cli = verifyCli(encoded_key_, got.front(), "--target jobs.finance.payment.execute");
  EXPECT_EQ(cli.exit_code, 1) << cli.out;
  EXPECT_NE(cli.out.find("INVALID"), std::string::npos) << cli.out;
}

TEST_F(ReceiptIt, TamperedJobFailsVerify) {
  Collector jobs(*s_.client, "jobs.finance.>");
  s_.client->flush();
  Message job = released(jobs);
  job.payload = R"({"amount":250000,"to":"acme"})";
  EXPECT_FALSE(receipt::verify(job, key_).hash_matches);
  const auto cli = verifyCli(encoded_key_, job, "--target jobs.finance.payment.execute");
  EXPECT_EQ(cli.exit_code, 1) << cli.out;
  EXPECT_NE(cli.out.find("job hash recomputed from the message matches: NO"), std::string::npos) << cli.out;

  // The genuine job with another countersign's key: refused too.
  const Message genuine = jobs.messages().front();
  const auto other_key = nkeys::encodePublicKey(nkeys::publicKeyOf(nkeys::generateSeed()));
  const auto other = verifyCli(other_key, genuine, "--target jobs.finance.payment.execute");
  EXPECT_EQ(other.exit_code, 1) << other.out;
  EXPECT_NE(other.out.find("signed with another key"), std::string::npos) << other.out;
}

TEST_F(ReceiptIt, RestartKeepsTheKey) {
  s_.countersign->stop();
  CountersignOptions options;
  options.config_yaml = basicConfig(s_.server->url());
  options.policy_yaml = kPolicy;
  options.nats_url = s_.server->url();
  // A second process given the first one's seed file signs with the same key.
  const auto seed_file = (s_.countersign->dir() / "receipt.nk").string();
  options.config_yaml += "receipts:\n  seed_file: " + seed_file + "\n";
  auto second = CountersignProcess::start(options);
  Collector jobs(*s_.client, "jobs.knowledge.>");
  s_.client->flush();
  s_.client->publish("agents.jobs.knowledge.read", "{}");
  const auto got = jobs.waitFor(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(receipt::verify(got.front(), key_).ok());
  EXPECT_EQ(std::filesystem::exists(second->dir() / "receipt.nk"), false);
}

// With receipt signers (concurrency.receipt_signers), the receipts are signed on several threads:
// every allowed job still reaches the worker exactly once, in the order it was published, with a
// receipt that verifies; and jobs still being signed when countersign is told to stop are
// forwarded before it exits.
TEST(ReceiptItSigners, SignedInParallelForwardedInOrderAndDrainedAtStop) {
  auto server = NatsServer::start();
  CountersignOptions options;
  options.config_yaml = basicConfig(server->url(), "concurrency:\n  receipt_signers: 3\n");
  options.policy_yaml = kPolicy;
  options.nats_url = server->url();
  auto cs = CountersignProcess::start(options);
  auto seed = nkeys::readSeedFile((cs->dir() / "receipt.nk").string());
  ASSERT_TRUE(seed) << seed.error().message;
  const auto key = nkeys::publicKeyOf(*seed);
  Client client(server->url());
  Collector jobs(client, "jobs.knowledge.>");
  client.flush();

  constexpr int kFirst = 600;
  constexpr int kSecond = 400;
  const auto publish = [&](int from, int to) {
    for (int i = from; i < to; ++i) {
      client.publish("agents.jobs.knowledge.read", R"({"q":"fx","n":)" + std::to_string(i) + "}",
                     {{"X-Seq", std::to_string(i)}});
    }
    client.flush();
  };
  publish(0, kFirst);
  ASSERT_EQ(jobs.waitFor(kFirst, 30s).size(), static_cast<std::size_t>(kFirst)) << cs->logs();
  int signers = 0;  // the jobs went through the signer threads, not the intake thread
  for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(cs->pid()) + "/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    std::getline(comm, name);
    if (name.starts_with("cs-receipt-")) ++signers;
  }
  EXPECT_EQ(signers, 3);
  // A second burst, and the stop right behind it.
  publish(kFirst, kFirst + kSecond);
  EXPECT_EQ(cs->stop(), 0) << cs->logs();
  const auto got = jobs.waitFor(kFirst + kSecond, 10s);
  ASSERT_EQ(got.size(), static_cast<std::size_t>(kFirst + kSecond)) << "jobs lost at stop";
  for (int i = 0; i < kFirst + kSecond; ++i) {
    const std::string* seq = findHeader(got[i].headers, "X-Seq");
    ASSERT_NE(seq, nullptr);
    ASSERT_EQ(*seq, std::to_string(i)) << "forwarded out of order";
    const auto check = receipt::verify(got[i], key);
    ASSERT_TRUE(check.ok()) << i << ": " << check.problem;
  }
}

TEST(ReceiptItStart, UnreadableSeedFileStopsTheStart) {
  auto server = NatsServer::start();
  CountersignOptions options;
  options.config_yaml = basicConfig(server->url()) + "receipts:\n  seed_file: policy.yaml\n";
  options.policy_yaml = kPolicy;
  options.nats_url = server->url();
  options.wait_ready = false;
  auto process = CountersignProcess::start(options);
  const auto code = process->waitExit(15s);
  ASSERT_TRUE(code.has_value()) << process->logs();
  EXPECT_NE(*code, 0);
  EXPECT_NE(process->logs().find("receipts.seed_file"), std::string::npos) << process->logs();
}

}  // namespace
}  // namespace countersign::testing

namespace countersign::testing {
namespace {

// The Node check of docs/receipts.md (tests/node/receipt_check.js, nkeys.js) on real jobs.
std::string nodeCheck(const std::string& key, const Message& m) {
  std::string input = R"({"subject":")" + m.subject + R"(","headers":[)";
  bool first = true;
  for (const auto& [name, value] : m.headers) {
    input += std::string(first ? "" : ",") + "[\"" + name + "\",\"" + value + "\"]";
    first = false;
  }
  input += R"(],"payload_b64":")" + json::base64Encode(m.payload) + "\"}";
  const std::string file = "/tmp/receipt_node_" + std::to_string(::getpid()) + ".json";
  {
    std::ofstream out(file, std::ios::binary);
    out << input;
  }
  const std::string command = "node " + std::string(COUNTERSIGN_SOURCE_DIR) + "/tests/node/receipt_check.js " +
                              key + " < " + file + " 2>&1";
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return "cannot run node";
  char buffer[4096];
  std::size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) out.append(buffer, n);
  ::pclose(pipe);
  std::remove(file.c_str());
  return out;
}

TEST_F(ReceiptIt, NodeWorkerCheckAcceptsGenuineJobsAndRefusesOthers) {
  Collector jobs(*s_.client, "jobs.>");
  s_.client->flush();
  const Message job = released(jobs);
  EXPECT_NE(nodeCheck(encoded_key_, job).find(R"("ok":true)"), std::string::npos) << nodeCheck(encoded_key_, job);
  s_.client->publish("agents.jobs.knowledge.read", R"({"q":"x","n":1.50})", {{"X-A", "1"}});
  const auto both = jobs.waitFor(2);
  ASSERT_EQ(both.size(), 2u);
  EXPECT_NE(nodeCheck(encoded_key_, both[1]).find(R"("ok":true)"), std::string::npos) << nodeCheck(encoded_key_, both[1]);

  Message tampered = job;
  tampered.payload = R"({"amount":999999,"to":"acme"})";
  EXPECT_NE(nodeCheck(encoded_key_, tampered).find("job changed"), std::string::npos);
  const Message direct{"jobs.finance.payment.execute", "", {}, "{}"};
  EXPECT_NE(nodeCheck(encoded_key_, direct).find("no receipt"), std::string::npos);
  const auto other_key = nkeys::encodePublicKey(nkeys::publicKeyOf(nkeys::generateSeed()));
  EXPECT_NE(nodeCheck(other_key, job).find("bad signature"), std::string::npos);
}

}  // namespace
}  // namespace countersign::testing
