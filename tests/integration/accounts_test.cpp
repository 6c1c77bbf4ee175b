// The deploy configs in deploy/nats/ run for real: nats-server with the very account and user
// blocks we ship (accounts-block.conf, accounts-replies-block.conf, users-block.conf), the real
// countersign connecting with its own user's credentials in the URL, and producers, workers and
// approvers each connecting as their own user. What is asserted is what the configs promise:
// jobs reach workers only through countersign, held jobs wait for an approver, and producers
// can neither approve nor bypass countersign.
#include <gtest/gtest.h>
#include <nats/nats.h>
#include <yaml-cpp/yaml.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "integration/harness/harness.hpp"
#include "integration/harness/wire.hpp"
#include "nats/child_process.hpp"

namespace countersign::testing {
namespace {

namespace fs = std::filesystem;

constexpr const char* kBucket = "countersign_approvals";
constexpr const char* kPayment =
    R"({"labels":{"env":"production"},"amount":1200,"currency":"EUR","to":"ACME"})";

// The passwords the deploy blocks read from $NATS_*_PASSWORD. Defined as config variables in
// front of the block, so that the server does not depend on the test's environment.
constexpr const char* kPasswords =
    "NATS_COUNTERSIGN_PASSWORD: \"countersign-secret\"\n"
    "NATS_APPROVER_PASSWORD: \"approver-secret\"\n"
    "NATS_PRODUCER_PASSWORD: \"producer-secret\"\n"
    "NATS_WORKER_PASSWORD: \"worker-secret\"\n";
// The blocks with an auditor user (nats-server refuses a variable that no block uses).
constexpr const char* kAuditorPassword = "NATS_AUDITOR_PASSWORD: \"auditor-secret\"\n";

std::string deployFile(const std::string& name) {
  const fs::path path = fs::path(COUNTERSIGN_SOURCE_DIR) / "deploy" / "nats" / name;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("deploy file missing: " + path.string());
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// A countersign config shipped in deploy/nats/, with the policy the harness writes beside it.
std::string deployConfig(const std::string& name) {
  std::string config = deployFile(name);
  const std::string policy = "file: approval-policy.yaml";
  config.replace(config.find(policy), policy.size(), "file: policy.yaml");
  // The seed file the harness shares among a test's processes, not the host's /var/lib.
  const std::string seed = "seed_file: /var/lib/countersign/receipt.nk";
  config.replace(config.find(seed), seed.size(), "allowed: true");
  return config;
}

std::string userUrl(int port, const std::string& user) {
  return "nats://" + user + ":" + user + "-secret@127.0.0.1:" + std::to_string(port);
}
std::string userUrl(const NatsServer& server, const std::string& user) { return userUrl(server.port(), user); }

// countersign as a deploy layout runs it: a config shipped in deploy/nats/ (config_yaml), the URL
// with its user's password from the environment (as in deploy/systemd and deploy/kubernetes: the
// config file names the server without it), no admin listener, ready when the approver's
// control.list answers.
CountersignOptions deployOptions(int port, const std::string& config_yaml) {
  CountersignOptions options;
  options.config_yaml = config_yaml;
  options.env["COUNTERSIGN_NATS_URL"] = userUrl(port, "countersign");
  options.env["COUNTERSIGN_ADMIN_LISTEN"] = "";
  options.policy_yaml = seedPolicy();
  options.nats_url = userUrl(port, "approver");
  return options;
}
CountersignOptions deployOptions(const NatsServer& server, const std::string& config_yaml) {
  return deployOptions(server.port(), config_yaml);
}

// Publishes a marker read job and waits until the worker has it: every job the producer sent
// before it has then been decided by countersign (one process, one intake subscription).
void drainThrough(Client& producer, const std::string& subject, Collector& worker,
                  std::size_t expected_total) {
  producer.publish(subject, "marker");
  producer.flush();
  ASSERT_GE(worker.waitFor(expected_total, 10s).size(), expected_total)
      << "the marker job did not reach the worker";
  std::this_thread::sleep_for(200ms);
}

// A connection that records the server's asynchronous errors (-ERR 'Permissions Violation ...'):
// cnats reports a refused publish only there, the publish call itself returns OK.
class WatchedConnection {
 public:
  explicit WatchedConnection(const std::string& url) {
    natsOptions* opts = nullptr;
    natsStatus s = natsOptions_Create(&opts);
    if (s == NATS_OK) s = natsOptions_SetURL(opts, url.c_str());
    if (s == NATS_OK) s = natsOptions_SetErrorHandler(opts, &WatchedConnection::onError, this);
    if (s == NATS_OK) s = natsConnection_Connect(&conn_, opts);
    natsOptions_Destroy(opts);
    if (s != NATS_OK) {
      conn_ = nullptr;
      throw std::runtime_error(std::string("cannot connect: ") + natsStatus_GetText(s));
    }
  }
  ~WatchedConnection() {
    for (natsSubscription* sub : subscriptions_) natsSubscription_Destroy(sub);
    natsConnection_Close(conn_);
    natsConnection_Destroy(conn_);
  }
  WatchedConnection(const WatchedConnection&) = delete;
  WatchedConnection& operator=(const WatchedConnection&) = delete;

  natsStatus publish(const std::string& subject, const std::string& payload) {
    natsStatus s = natsConnection_Publish(conn_, subject.c_str(), payload.data(),
                                          static_cast<int>(payload.size()));
    if (s == NATS_OK) s = natsConnection_FlushTimeout(conn_, 5000);
    return s;
  }

  // Subscribes (and makes a round trip, so that a refusal has come back when it returns).
  natsStatus subscribe(const std::string& subject) {
    natsSubscription* sub = nullptr;
    natsStatus s = natsConnection_SubscribeSync(&sub, conn_, subject.c_str());
    if (s == NATS_OK) {
      subscriptions_.push_back(sub);
      s = natsConnection_FlushTimeout(conn_, 5000);
    }
    return s;
  }

  // The first asynchronous error text, waited for up to `timeout`; empty when none came.
  std::string waitError(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, timeout, [this] { return !errors_.empty(); });
    return errors_.empty() ? std::string() : errors_.front();
  }

 private:
  static void onError(natsConnection* nc, natsSubscription*, natsStatus err, void* closure) {
    auto* self = static_cast<WatchedConnection*>(closure);
    const char* text = nullptr;
    natsConnection_GetLastError(nc, &text);
    std::lock_guard lock(self->mutex_);
    self->errors_.push_back(std::string(natsStatus_GetText(err)) + ": " +
                            (text != nullptr ? text : ""));
    self->cv_.notify_all();
  }

  natsConnection* conn_ = nullptr;
  std::vector<natsSubscription*> subscriptions_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::string> errors_;
};

// ---- accounts-block.conf: PRODUCERS -> COUNTERSIGN -> WORKERS with stream imports -------------

class AccountsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    NatsServerOptions server_options;
    server_options.extra_config = std::string(kPasswords) + deployFile("accounts-block.conf");
    server_ = NatsServer::start(server_options);
    producer_ = std::make_unique<Client>(userUrl(*server_, "producer"));
    worker_ = std::make_unique<Client>(userUrl(*server_, "worker"));
    approver_ = std::make_unique<Client>(userUrl(*server_, "approver"));
    // The shipped config of the accounts layouts: it serves this variant too.
    countersign_ = CountersignProcess::start(deployOptions(*server_, deployConfig("countersign-accounts.yaml")));
    // Reads the KV bucket with countersign's own user: the store lives in COUNTERSIGN.
    store_reader_ = std::make_unique<Client>(userUrl(*server_, "countersign"), "_CS_INBOX.reader");
  }

  std::unique_ptr<NatsServer> server_;
  std::unique_ptr<Client> producer_;
  std::unique_ptr<Client> worker_;
  std::unique_ptr<Client> approver_;
  std::unique_ptr<CountersignProcess> countersign_;
  std::unique_ptr<Client> store_reader_;
};

TEST_F(AccountsTest, ProducersUnchangedSubjectReachesWorkersThroughCountersign) {
  Collector jobs(*worker_, "jobs.>");
  const std::string read = R"({"query":"quarterly revenue"})";
  producer_->publish("jobs.knowledge.read", read, {{"Trace", "t-1"}});
  producer_->flush();
  auto got = jobs.waitFor(1, 10s);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].subject, "jobs.knowledge.read");
  EXPECT_EQ(got[0].payload, read);
  EXPECT_EQ(headerValues(got[0], "Countersign-Decision"), one("allow"));
  EXPECT_EQ(headerValues(got[0], "Countersign-Rule"), one("allow-readonly"));
  EXPECT_EQ(headerValues(got[0], "Trace"), one("t-1"));
}

TEST_F(AccountsTest, HeldPaymentWaitsForAnApproverAndIsDeliveredOnce) {
  Collector jobs(*worker_, "jobs.>");
  Collector producer_events(*producer_, "countersign.events.>");
  producer_->publish("jobs.finance.payment.execute", kPayment, {{"Nats-Msg-Id", "acc-pay-1"}});
  producer_->flush();

  // The producer learns about the hold through the events COUNTERSIGN exports to it.
  auto events = producer_events.waitFor(1, 10s);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].subject, "countersign.events.held.finance.payment.execute");
  EXPECT_EQ(jsonFields(events[0].payload)["approval_id"], "acc-pay-1");
  // The record is in COUNTERSIGN's bucket, pending.
  auto record = store_reader_->kvGet(kBucket, "acc-pay-1");
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(jsonFields(*record)["state"], "pending");
  // Not delivered.
  drainThrough(*producer_, "jobs.knowledge.read", jobs, 1);
  EXPECT_EQ(countOn(jobs.messages(), "jobs.finance.payment.execute"), 0u);

  // The approver (a COUNTERSIGN user) approves over the control subject.
  auto approved = approver_->request("countersign.control.approve",
                                     R"({"id":"acc-pay-1","approver":"alice"})", {}, 10s);
  ASSERT_TRUE(approved.has_value());
  EXPECT_EQ(jsonFields(approved->payload)["status"], "approved");
  EXPECT_EQ(jsonFields(approved->payload)["code"], "200");
  auto again = approver_->request("countersign.control.approve",
                                  R"({"id":"acc-pay-1","approver":"alice"})", {}, 10s);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(jsonFields(again->payload)["status"], "already_approved");

  jobs.waitFor(2, 10s);
  drainThrough(*producer_, "jobs.knowledge.read", jobs, 3);
  const auto got = jobs.messages();
  ASSERT_EQ(countOn(got, "jobs.finance.payment.execute"), 1u);
  for (const auto& m : got) {
    if (m.subject != "jobs.finance.payment.execute") continue;
    EXPECT_EQ(m.payload, kPayment);
    EXPECT_EQ(headerValues(m, "Countersign-Approval"), one("granted"));
    EXPECT_EQ(headerValues(m, "Countersign-Approved-By"), one("alice"));
    EXPECT_EQ(headerValues(m, "Nats-Msg-Id"), one("countersign:acc-pay-1"));
  }
}

TEST_F(AccountsTest, ProducerCannotApprove) {
  Collector jobs(*worker_, "jobs.>");
  Collector producer_events(*producer_, "countersign.events.>");
  producer_->publish("jobs.finance.payment.execute", kPayment, {{"Nats-Msg-Id", "acc-pay-2"}});
  producer_->flush();
  ASSERT_EQ(producer_events.waitFor(1, 10s).size(), 1u);

  // The server refuses the publish: the producer's user may publish jobs.> only.
  WatchedConnection rogue(userUrl(*server_, "producer"));
  EXPECT_EQ(rogue.publish("countersign.control.approve", R"({"id":"acc-pay-2","approver":"eve"})"),
            NATS_OK)
      << "cnats reports a refused publish asynchronously, not from the call";
  const std::string error = rogue.waitError(5s);
  EXPECT_NE(error.find("Permissions Violation for Publish to \"countersign.control.approve\""),
            std::string::npos)
      << "error: " << error;
  // Asked as a request, nothing answers either.
  EXPECT_FALSE(
      producer_
          ->request("countersign.control.approve", R"({"id":"acc-pay-2","approver":"eve"})", {}, 1s)
          .has_value());

  // Nothing was approved, nothing released.
  drainThrough(*producer_, "jobs.knowledge.read", jobs, 1);
  EXPECT_EQ(countOn(jobs.messages(), "jobs.finance.payment.execute"), 0u);
  auto record = store_reader_->kvGet(kBucket, "acc-pay-2");
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(jsonFields(*record)["state"], "pending");
  EXPECT_FALSE(store_reader_->kvGet(kBucket, "acc-pay-2/decision").has_value());
}

TEST_F(AccountsTest, WorkersNeverSeeJobsCountersignDidNotForward) {
  Collector jobs(*worker_, "jobs.>");
  Collector producer_events(*producer_, "countersign.events.denied.>");
  // Matches no rule: denied. A payload `topic` does not help.
  producer_->publish("jobs.finance.payment.execute", R"({"labels":{"env":"staging"}})");
  producer_->publish("jobs.admin.delete_all", R"({"topic":"knowledge.read"})");
  producer_->flush();
  auto denied = producer_events.waitFor(2, 10s);
  ASSERT_EQ(denied.size(), 2u);
  drainThrough(*producer_, "jobs.knowledge.read", jobs, 1);
  auto got = jobs.messages();
  ASSERT_EQ(got.size(), 1u) << "only the marker may pass; first: " << got[0].subject;
  EXPECT_EQ(got[0].payload, "marker");

  // Without countersign there is no path from producers to workers at all.
  ASSERT_EQ(countersign_->stop(), 0);
  producer_->publish("jobs.knowledge.read", "bypass");
  producer_->flush();
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(jobs.count(), 1u);
}

// ---- accounts-replies-block.conf: the same, plus request-reply across the accounts ------------

class AccountsRepliesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    NatsServerOptions server_options;
    server_options.extra_config =
        std::string(kPasswords) + kAuditorPassword + deployFile("accounts-replies-block.conf");
    server_ = NatsServer::start(server_options);
    producer_ = std::make_unique<Client>(userUrl(*server_, "producer"));
    worker_ = std::make_unique<Client>(userUrl(*server_, "worker"));
    approver_ = std::make_unique<Client>(userUrl(*server_, "approver"));
    // The shipped config: its own inbox prefix, and the approvers' _R_ replies allowed.
    countersign_ = CountersignProcess::start(deployOptions(*server_, deployConfig("countersign-accounts.yaml")));
  }

  std::unique_ptr<NatsServer> server_;
  std::unique_ptr<Client> producer_;
  std::unique_ptr<Client> worker_;
  std::unique_ptr<Client> approver_;
  std::unique_ptr<CountersignProcess> countersign_;
};

TEST_F(AccountsRepliesTest, ProducerRequestsGetCountersignAndWorkerAnswers) {
  Responder responder(*worker_, "jobs.knowledge.read", R"({"answer":42})");
  Collector payments(*worker_, "jobs.finance.>");

  // Allowed: the worker's own reply comes back to the producer.
  auto read = producer_->request("jobs.knowledge.read", R"({"query":"q"})", {}, 10s);
  ASSERT_TRUE(read.has_value());
  EXPECT_EQ(read->payload, R"({"answer":42})");
  ASSERT_EQ(responder.received().size(), 1u);
  EXPECT_EQ(headerValues(responder.received()[0], "Countersign-Decision"), one("allow"));

  // Held: countersign's 202.
  auto held = producer_->request("jobs.finance.payment.execute", kPayment,
                                 {{"Nats-Msg-Id", "rep-pay-1"}}, 10s);
  ASSERT_TRUE(held.has_value());
  EXPECT_EQ(headerValues(*held, "Countersign-Status"), one("approval_required"));
  EXPECT_EQ(jsonFields(held->payload)["code"], "202");
  EXPECT_EQ(jsonFields(held->payload)["approval_id"], "rep-pay-1");

  // Denied: countersign's 403.
  auto denied = producer_->request("jobs.finance.payment.execute",
                                   R"({"labels":{"env":"staging"}})", {}, 10s);
  ASSERT_TRUE(denied.has_value());
  EXPECT_EQ(jsonFields(denied->payload)["code"], "403");

  // The approver, in its own account, approves; the worker gets the payment once.
  EXPECT_EQ(payments.count(), 0u);
  auto approved = approver_->request("countersign.control.approve",
                                     R"({"id":"rep-pay-1","approver":"alice"})", {}, 10s);
  ASSERT_TRUE(approved.has_value());
  EXPECT_EQ(jsonFields(approved->payload)["status"], "approved");
  ASSERT_EQ(payments.waitFor(1, 10s).size(), 1u);
  EXPECT_EQ(headerValues(payments.messages()[0], "Countersign-Approval"), one("granted"));

  // The producer still cannot approve.
  WatchedConnection rogue(userUrl(*server_, "producer"));
  EXPECT_EQ(rogue.publish("countersign.control.reject", R"({"id":"rep-pay-1","approver":"eve"})"),
            NATS_OK);
  EXPECT_NE(rogue.waitError(5s).find("Permissions Violation for Publish"), std::string::npos);
}

// The approver user's permissions cover every approver command of the CLI (pending, show, watch,
// approve, reject), and the auditor's cover the audit commands: nothing times out, nothing is
// refused; the auditor may decide nothing. `subject`: where the producer sends payments;
// `auditor_args`: what the auditor adds to every command (its inbox prefix, in the accounts layout).
void approverAndAuditorRunTheirCliCommands(const NatsServer& server, const CountersignProcess& countersign,
                                           const std::string& subject, const std::vector<std::string>& auditor_args) {
  Client producer(userUrl(server, "producer"));
  ASSERT_TRUE(producer.request(subject, kPayment, {{"Nats-Msg-Id", "cli-pay-1"}}, 10s).has_value());
  ASSERT_TRUE(producer.request(subject, kPayment, {{"Nats-Msg-Id", "cli-pay-2"}}, 10s).has_value());
  const std::string approver = userUrl(server, "approver");
  const std::string auditor = userUrl(server, "auditor");
  auto cli = [&](std::vector<std::string> args, const std::string& url) {
    args.push_back("-s");
    args.push_back(url);
    if (url == auditor) args.insert(args.end(), auditor_args.begin(), auditor_args.end());
    CommandResult r = runCountersign(args);
    EXPECT_EQ(r.exit_code, 0) << args[0] << ": " << r.out << r.err;
    EXPECT_EQ(r.err.find("permission"), std::string::npos) << r.err;
    return r;
  };
  EXPECT_NE(cli({"pending"}, approver).out.find("cli-pay-1"), std::string::npos);
  cli({"show", "cli-pay-1"}, approver);
  auto watched = std::async(std::launch::async, [&] {
    return runCountersign({"watch", "--count", "1", "--timeout-ms", "15000", "-s", approver});
  });
  std::this_thread::sleep_for(500ms);
  cli({"approve", "cli-pay-1", "--reason", "checked"}, approver);
  cli({"reject", "cli-pay-2"}, approver);
  const CommandResult watch = watched.get();
  EXPECT_EQ(watch.exit_code, 0) << watch.err;
  EXPECT_NE(watch.out.find("approved by"), std::string::npos) << watch.out;
  EXPECT_NE(cli({"audit", "cli-pay-1"}, auditor).out.find("released"), std::string::npos);
  cli({"audit", "verify", "--key", countersign.receiptKey()}, auditor);
  // The auditor may not decide anything.
  std::vector<std::string> approve = {"approve", "cli-pay-2", "-s", auditor, "--timeout-ms", "2000"};
  approve.insert(approve.end(), auditor_args.begin(), auditor_args.end());
  const CommandResult refused = runCountersign(approve);
  EXPECT_EQ(refused.exit_code, 1) << refused.err;
  EXPECT_NE(refused.err.find("permission"), std::string::npos) << refused.err;
  // Nor may the approver read the audit stream: the CLI says so instead of timing out.
  const CommandResult unread =
      runCountersign({"audit", "verify", "--key", countersign.receiptKey(), "-s", approver, "--timeout-ms", "2000"});
  EXPECT_EQ(unread.exit_code, 1) << unread.err;
  EXPECT_NE(unread.err.find("permission denied"), std::string::npos) << unread.err;
  EXPECT_EQ(unread.err.find("Timeout"), std::string::npos) << unread.err;
}

TEST_F(AccountsRepliesTest, ApproverAndAuditorRunTheirCliCommands) {
  approverAndAuditorRunTheirCliCommands(*server_, *countersign_, "jobs.finance.payment.execute",
                                        {"--inbox-prefix", "_AUDIT_INBOX"});
}

// The bridge that carries answers to producers carries nothing else: countersign's own KV and
// JetStream traffic (held records, with payloads) uses its own inbox prefix, approvers are
// answered on _R_ subjects, and the auditor's CLI uses its own prefix too.
TEST_F(AccountsRepliesTest, ReplyBridgeCarriesOnlyAnswersToProducers) {
  // A producer listening on every inbox of its account sees what the bridge carries.
  Client spy(userUrl(*server_, "producer"));
  Collector inboxes(spy, "_INBOX.>");
  Responder responder(*worker_, "jobs.knowledge.read", "answer");

  ASSERT_TRUE(producer_->request("jobs.knowledge.read", "q", {}, 10s).has_value());
  ASSERT_TRUE(
      producer_
          ->request("jobs.finance.payment.execute", kPayment, {{"Nats-Msg-Id", "rep-pay-2"}}, 10s)
          .has_value());
  // countersign's KV traffic (create, get) and its answers to the approver stay out of PRODUCERS.
  auto got = approver_->request("countersign.control.get", R"({"id":"rep-pay-2"})", {}, 10s);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(jsonFields(got->payload)["status"], "ok") << got->payload;
  ASSERT_TRUE(approver_
                  ->request("countersign.control.approve",
                            R"({"id":"rep-pay-2","approver":"alice"})", {}, 10s)
                  .has_value());
  // The auditor checks the trail meanwhile, with the CLI and its own inbox prefix.
  const CommandResult audit = runCountersign({"audit", "verify", "-s", userUrl(*server_, "auditor"),
                                              "--key", countersign_->receiptKey(),
                                              "--inbox-prefix", "_AUDIT_INBOX"});
  EXPECT_EQ(audit.exit_code, 0) << audit.out << audit.err;
  std::this_thread::sleep_for(300ms);

  const auto seen = inboxes.messages();
  ASSERT_EQ(seen.size(), 2u) << "the worker's answer and the 202, nothing else";
  EXPECT_EQ(seen[0].payload, "answer");
  EXPECT_EQ(headerValues(seen[1], "Countersign-Status"), one("approval_required"));
  for (const auto& m : seen) {
    EXPECT_EQ(m.payload.find("KV_countersign_approvals"), std::string::npos) << m.payload;
    EXPECT_EQ(m.payload.find("\"state\""), std::string::npos) << m.payload;
  }
}

// ---- users-block.conf: one account, four users ----------------------------------------------

class SingleServerUsersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    NatsServerOptions server_options;
    server_options.extra_config = std::string(kPasswords) + kAuditorPassword + deployFile("users-block.conf");
    server_ = NatsServer::start(server_options);
    producer_ = std::make_unique<Client>(userUrl(*server_, "producer"));
    worker_ = std::make_unique<Client>(userUrl(*server_, "worker"));
    approver_ = std::make_unique<Client>(userUrl(*server_, "approver"));
    countersign_ = CountersignProcess::start(deployOptions(*server_, deployConfig("countersign-single.yaml")));
  }

  std::unique_ptr<NatsServer> server_;
  std::unique_ptr<Client> producer_;
  std::unique_ptr<Client> worker_;
  std::unique_ptr<Client> approver_;
  std::unique_ptr<CountersignProcess> countersign_;
};

TEST_F(SingleServerUsersTest, EachUserDoesOnlyItsPart) {
  Responder responder(*worker_, "jobs.knowledge.read", "answer");
  Collector payments(*worker_, "jobs.finance.>");

  auto read = producer_->request("agents.jobs.knowledge.read", "q", {}, 10s);
  ASSERT_TRUE(read.has_value());
  EXPECT_EQ(read->payload, "answer");
  auto held = producer_->request("agents.jobs.finance.payment.execute", kPayment,
                                 {{"Nats-Msg-Id", "one-pay-1"}}, 10s);
  ASSERT_TRUE(held.has_value());
  EXPECT_EQ(jsonFields(held->payload)["code"], "202");

  // A producer may neither approve nor publish to the workers' subjects directly.
  WatchedConnection rogue(userUrl(*server_, "producer"));
  EXPECT_EQ(rogue.publish("countersign.control.approve", R"({"id":"one-pay-1","approver":"eve"})"),
            NATS_OK);
  EXPECT_NE(rogue.waitError(5s).find("countersign.control.approve"), std::string::npos);
  WatchedConnection bypass(userUrl(*server_, "producer"));
  EXPECT_EQ(bypass.publish("jobs.finance.payment.execute", kPayment), NATS_OK);
  EXPECT_NE(bypass.waitError(5s).find("jobs.finance.payment.execute"), std::string::npos);
  // A worker may not answer what it did not receive.
  WatchedConnection forger(userUrl(*server_, "worker"));
  EXPECT_EQ(forger.publish("_INBOX.someone", "forged"), NATS_OK);
  EXPECT_NE(forger.waitError(5s).find("Permissions Violation"), std::string::npos);

  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(payments.count(), 0u);
  auto approved = approver_->request("countersign.control.approve",
                                     R"({"id":"one-pay-1","approver":"alice"})", {}, 10s);
  ASSERT_TRUE(approved.has_value());
  EXPECT_EQ(jsonFields(approved->payload)["status"], "approved");
  ASSERT_EQ(payments.waitFor(1, 10s).size(), 1u);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(payments.count(), 1u);
}

TEST_F(SingleServerUsersTest, ApproverAndAuditorRunTheirCliCommands) {
  approverAndAuditorRunTheirCliCommands(*server_, *countersign_, "agents.jobs.finance.payment.execute", {});
}

// ---- the shipped server configs, whole: single.conf and accounts.conf ----------------------------

// `nats-server -c deploy/nats/<conf>` as deploy/nats/README.md starts it, with the passwords and
// the JetStream store dir from the environment (NATS_STORE_DIR), bound to 127.0.0.1 on free ports
// (-a, -p -1, -m -1 override the file's host, port and monitor port). Stopped with SIGTERM.
class ShippedServer {
 public:
  ShippedServer(const std::string& conf, const fs::path& store_dir) {
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
      if (!std::string_view(*e).starts_with("NATS_")) env.emplace_back(*e);
    }
    for (const char* user : {"COUNTERSIGN", "APPROVER", "PRODUCER", "WORKER", "AUDITOR"}) {
      std::string name(user);
      std::string lower;
      for (const char c : name) lower += static_cast<char>(c - 'A' + 'a');
      env.push_back("NATS_" + name + "_PASSWORD=" + lower + "-secret");
    }
    env.push_back("NATS_STORE_DIR=" + store_dir.string());
    natsio::SpawnOptions spawn;
    spawn.argv = {NATS_SERVER_BIN, "-c", (fs::path(COUNTERSIGN_SOURCE_DIR) / "deploy" / "nats" / conf).string(),
                  "-a", "127.0.0.1", "-p", "-1", "-m", "-1", "--ports_file_dir", dir_.path().string()};
    spawn.env = std::move(env);
    log_ = dir_.path() / "nats-server.log";
    spawn.stdout_path = log_.string();
    spawn.stderr_path = log_.string();
    spawn.death_signal = SIGKILL;
    auto pid = natsio::spawnProcess(spawn);
    if (!pid) throw std::runtime_error("nats-server: " + pid.error().message);
    pid_ = *pid;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (natsio::waitProcess(pid_, 0ms)) {
        pid_ = -1;
        throw std::runtime_error(conf + ": nats-server exited:\n" + natsio::tailFile(log_, 20));
      }
      if (auto port = natsio::readNatsPortsFile(dir_.path(), pid_); port && natsio::tcpConnects("127.0.0.1", *port)) {
        port_ = *port;
        return;
      }
      std::this_thread::sleep_for(20ms);
    }
    throw std::runtime_error(conf + ": nats-server not ready:\n" + natsio::tailFile(log_, 20));
  }
  ~ShippedServer() {
    if (pid_ > 0) natsio::stopProcess(pid_, 5s);
  }
  ShippedServer(const ShippedServer&) = delete;
  ShippedServer& operator=(const ShippedServer&) = delete;

  int port() const { return port_; }
  std::string log() const { return natsio::tailFile(log_, 200); }

 private:
  TempDir dir_;
  fs::path log_;
  pid_t pid_ = -1;
  int port_ = 0;
};

// Whether a stream directory named `stream` exists anywhere under `store_dir`.
bool storedUnder(const fs::path& store_dir, const std::string& stream) {
  std::error_code ec;
  for (fs::recursive_directory_iterator it(store_dir, ec), end; it != end; it.increment(ec)) {
    if (it->path().filename() == stream) return true;
  }
  return false;
}

// Each shipped nats-server config with the countersign config beside it, as shipped (the admin
// listener and its console's live event feed included, on a free port): the server keeps its
// JetStream files (countersign's bucket) where NATS_STORE_DIR says, countersign needs nothing its
// user may not do, a producer's request is held (202), and the approved job reaches the worker once.
TEST(ShippedServerConfTest, SingleAndAccountsConfRunWithTheStoreDirFromTheEnvironment) {
  for (const auto& [conf, config, from] :
       {std::tuple{"single.conf", "countersign-single.yaml", "agents.jobs.finance.payment.execute"},
        std::tuple{"accounts.conf", "countersign-accounts.yaml", "jobs.finance.payment.execute"}}) {
    SCOPED_TRACE(conf);
    TempDir store;
    ShippedServer server(conf, store.path());
    CountersignOptions options = deployOptions(server.port(), deployConfig(config));
    options.env["COUNTERSIGN_ADMIN_LISTEN"] = "127.0.0.1:0";
    auto countersign = CountersignProcess::start(options);
    EXPECT_TRUE(storedUnder(store.path(), "KV_countersign_approvals")) << server.log();
    Client producer(userUrl(server.port(), "producer"));
    Client worker(userUrl(server.port(), "worker"));
    Client approver(userUrl(server.port(), "approver"));
    Collector payments(worker, "jobs.finance.>");
    auto held = producer.request(from, kPayment, {{"Nats-Msg-Id", "conf-pay-1"}}, 10s);
    ASSERT_TRUE(held.has_value());
    EXPECT_EQ(jsonFields(held->payload)["code"], "202") << held->payload;
    auto approved =
        approver.request("countersign.control.approve", R"({"id":"conf-pay-1","approver":"alice"})", {}, 10s);
    ASSERT_TRUE(approved.has_value());
    EXPECT_EQ(jsonFields(approved->payload)["status"], "approved") << approved->payload;
    ASSERT_EQ(payments.waitFor(1, 10s).size(), 1u);
    std::this_thread::sleep_for(300ms);
    EXPECT_EQ(payments.count(), 1u);
    EXPECT_EQ(countersign->stop(), 0);
    const std::string logs = countersign->logs();
    EXPECT_EQ(logs.find("Not Permitted"), std::string::npos) << logs;
    EXPECT_EQ(logs.find("no live events"), std::string::npos) << logs;
    const auto stopping = logs.find("\"shutting down\"");
    ASSERT_NE(stopping, std::string::npos) << logs;
    EXPECT_EQ(logs.find("\"level\":\"warn\"", stopping), std::string::npos) << "a clean stop warned:\n" << logs;
    EXPECT_EQ(server.log().find("Violation - User \"countersign\""), std::string::npos) << server.log();
  }
}

// ---- deploy/kubernetes/countersign.yaml --------------------------------------------------------

// The manifest parses, and the countersign config and policy of its ConfigMap pass `run --check`
// (with COUNTERSIGN_NATS_URL from its Secret's place in the environment); the Deployment runs
// several replicas and a PodDisruptionBudget keeps all but one of them through a drain.
TEST(ShippedKubernetesTest, ConfigMapPassesRunCheckAndReplicasHaveABudget) {
  const auto docs = YAML::LoadAllFromFile(
      (fs::path(COUNTERSIGN_SOURCE_DIR) / "deploy" / "kubernetes" / "countersign.yaml").string());
  TempDir dir;
  int replicas = 0;
  int min_available = 0;
  for (const YAML::Node& doc : docs) {
    const std::string kind = doc["kind"].as<std::string>("");
    if (kind == "ConfigMap") {
      dir.write("countersign.yaml", doc["data"]["countersign.yaml"].as<std::string>());
      dir.write("policy.yaml", doc["data"]["policy.yaml"].as<std::string>());
    } else if (kind == "Deployment") {
      replicas = doc["spec"]["replicas"].as<int>(0);
    } else if (kind == "PodDisruptionBudget") {
      min_available = doc["spec"]["minAvailable"].as<int>(0);
    }
  }
  EXPECT_GE(replicas, 2);
  EXPECT_EQ(min_available, replicas - 1);
  const CommandResult check =
      runCountersign({"run", "--check", "--config", (dir.path() / "countersign.yaml").string()},
                     {{"COUNTERSIGN_NATS_URL", "nats://countersign:secret@nats.nats.svc.cluster.local:4222"},
                      {"COUNTERSIGN_OPS_TOKEN", "ops-token-for-the-check"}});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  EXPECT_NE(check.out.find("1 route(s)"), std::string::npos) << check.out;
}

// ---- events a producer can use: its own topics' events, each with its job id -----------------

// The producer user docs/protocol.md gives as the way to let a producer read only its own topics'
// events ("Giving each producer only its own events"), taken from the doc itself.
std::string documentedFinanceAgent() {
  std::ifstream in(fs::path(COUNTERSIGN_SOURCE_DIR) / "docs" / "protocol.md");
  std::ostringstream text;
  text << in.rdbuf();
  const std::string doc = text.str();
  const auto begin = doc.find("{ user: finance-agent");
  const auto end = doc.find("} }", begin);
  if (begin == std::string::npos || end == std::string::npos) {
    throw std::runtime_error("docs/protocol.md: no finance-agent user example");
  }
  return doc.substr(begin, end + 3 - begin) + "\n";
}

// users-block.conf with the documented finance-agent beside its users. A fire-and-forget producer
// matches every event of its jobs (held, denied, approved, released, rejected) to the job it sent
// by job_id, sees no event of another producer's topics, and may not read all events.
TEST(ProducerEventsTest, EachProducerReadsOnlyItsTopicsEventsAndMatchesThemByJobId) {
  std::string users = deployFile("users-block.conf");
  const std::string list = "  users: [\n";
  users.insert(users.find(list) + list.size(), documentedFinanceAgent());
  NatsServerOptions server_options;
  server_options.extra_config = std::string(kPasswords) + kAuditorPassword +
                                "FINANCE_AGENT_PASSWORD: \"finance-agent-secret\"\n" + users;
  auto server = NatsServer::start(server_options);
  auto countersign = CountersignProcess::start(deployOptions(*server, deployConfig("countersign-single.yaml")));

  Client agent(userUrl(*server, "finance-agent"));
  Client producer(userUrl(*server, "producer"));
  Client approver(userUrl(*server, "approver"));
  Collector mine(agent, "countersign.events.*.finance.>");
  // Fire and forget: a job id in the header, or in the payload.
  agent.publish("agents.jobs.finance.payment.execute", kPayment, {{"Nats-Msg-Id", "fin-1"}});
  agent.publish("agents.jobs.finance.payment.execute", R"({"id":"fin-2","labels":{"env":"staging"}})");
  agent.publish("agents.jobs.finance.payment.execute",
                R"({"id":"fin-3","labels":{"env":"production"},"amount":5,"currency":"EUR","to":"X"})");
  agent.flush();
  // Another producer's jobs: denied and allowed, on other topics.
  producer.publish("agents.jobs.admin.delete_all", R"({"id":"other-1"})");
  producer.publish("agents.jobs.knowledge.read", R"({"id":"other-2"})");
  producer.flush();
  ASSERT_EQ(mine.waitFor(3, 10s).size(), 3u) << "held fin-1, denied fin-2, held fin-3";
  for (const auto& [verb, id] : {std::pair{"approve", "fin-1"}, std::pair{"reject", "fin-3"}}) {
    auto answer = approver.request(std::string("countersign.control.") + verb,
                                   R"({"id":")" + std::string(id) + R"(","approver":"alice"})", {}, 10s);
    ASSERT_TRUE(answer.has_value()) << verb;
    EXPECT_EQ(jsonFields(answer->payload)["code"], "200") << answer->payload;
  }
  ASSERT_EQ(mine.waitFor(6, 10s).size(), 6u);
  std::this_thread::sleep_for(300ms);

  std::multiset<std::string> seen;  // "<event> <job_id>"
  for (const auto& event : mine.messages()) {
    auto fields = jsonFields(event.payload);
    const std::string name = event.subject.substr(std::string("countersign.events.").size());
    EXPECT_TRUE(name.ends_with(".finance.payment.execute")) << event.subject;
    seen.insert(name.substr(0, name.find('.')) + " " + fields["job_id"]);
    if (!name.starts_with("denied.")) {
      EXPECT_EQ(fields["approval_id"], fields["job_id"]) << event.payload;
    }
  }
  EXPECT_EQ(seen, (std::multiset<std::string>{"held fin-1", "denied fin-2", "held fin-3", "approved fin-1",
                                               "released fin-1", "rejected fin-3"}));

  // All events, or another topic's: refused by the server.
  WatchedConnection nosy(userUrl(*server, "finance-agent"));
  EXPECT_EQ(nosy.subscribe("countersign.events.>"), NATS_OK);
  EXPECT_NE(nosy.waitError(5s).find("Permissions Violation for Subscription to \"countersign.events.>\""),
            std::string::npos);
  EXPECT_EQ(countersign->stop(), 0);
}

// ---- to_stream across accounts: the stream lives in COUNTERSIGN ----------------------------------

// A stream in WORKERS cannot take countersign's releases with a PubAck (a stream import carries no
// answer back). What deploy/nats/README.md says to do instead, run here: the stream JOBS in
// COUNTERSIGN captures jobs.>, countersign's config names it (to_stream: JOBS), and workers keep
// receiving through the stream export. A release is confirmed by JOBS's PubAck, stored once, and
// delivered to the worker once, also when it is approved again and after a restart.
TEST(AccountsToStreamTest, StreamInTheCountersignAccountTakesReleasesOnce) {
  NatsServerOptions server_options;
  server_options.extra_config = std::string(kPasswords) + kAuditorPassword + deployFile("accounts-replies-block.conf");
  auto server = NatsServer::start(server_options);
  // As the countersign user, which may subscribe only to its own inbox prefix.
  Client admin(userUrl(*server, "countersign"), "_CS_INBOX.admin");
  admin.addStream("JOBS", {"jobs.>"});
  Client producer(userUrl(*server, "producer"));
  Client worker(userUrl(*server, "worker"));
  Client approver(userUrl(*server, "approver"));
  Collector payments(worker, "jobs.finance.>");

  std::string config = deployConfig("countersign-accounts.yaml");
  const std::string mode = "    mode: core\n";
  config.insert(config.find(mode) + mode.size(), "    to_stream: JOBS\n");
  const CountersignOptions options = deployOptions(*server, config);
  auto countersign = CountersignProcess::start(options);
  ASSERT_NE(countersign->logs().find("(to_stream JOBS)"), std::string::npos) << countersign->logs();

  auto held = producer.request("jobs.finance.payment.execute", kPayment, {{"Nats-Msg-Id", "xacct-pay-1"}}, 10s);
  ASSERT_TRUE(held.has_value());
  EXPECT_EQ(jsonFields(held->payload)["status"], "approval_required") << held->payload;
  for (int i = 0; i < 2; ++i) {
    auto approved = approver.request("countersign.control.approve", R"({"id":"xacct-pay-1","approver":"alice"})", {}, 10s);
    ASSERT_TRUE(approved.has_value());
    EXPECT_EQ(jsonFields(approved->payload)["status"], i == 0 ? "approved" : "already_approved") << approved->payload;
  }
  ASSERT_EQ(payments.waitFor(1, 10s).size(), 1u);
  EXPECT_EQ(headerValues(payments.messages()[0], "Countersign-Approval"), one("granted"));
  // The release is recorded as done: JOBS's PubAck came back to countersign.
  ASSERT_TRUE(waitUntil(
      [&] {
        auto got = approver.request("countersign.control.get", R"({"id":"xacct-pay-1"})", {}, 5s);
        return got.has_value() && got->payload.find(R"("state":"released")") != std::string::npos;
      },
      10s))
      << countersign->logs();
  ASSERT_EQ(countersign->stop(), 0);
  countersign = CountersignProcess::start(options);  // its replayer looks at the record again
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(payments.count(), 1u) << "delivered more than once";
  EXPECT_EQ(countersign->stop(), 0);
  EXPECT_EQ(admin.streamMessageCount("JOBS"), 1u) << "JOBS stored the release more than once";
  // No release went elsewhere or failed on its way (the only warning is the open mode's).
  const std::string logs = countersign->logs();
  EXPECT_EQ(logs.find("\"level\":\"error\""), std::string::npos) << logs;
  EXPECT_EQ(logs.find("release stored by another stream"), std::string::npos) << logs;
}

// ---- .creds files: an operator-mode server (JWTs), set up the way `nsc` does ------------------

// tests/node/operator_creds.js (nkeys.js) makes an operator, its accounts SYS and APP and a user of
// APP with its .creds file; nats-server runs with that operator and a MEMORY resolver. countersign
// run (nats.credentials) and the CLI (--creds) connect with the user's JWT and seed; without them,
// or with the creds of an account the server does not know, the server refuses.
// The seed line ("SU...") of a .creds file.
std::string seedOf(const std::string& creds_file) {
  std::ifstream in(creds_file);
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("SU")) return line;
  }
  return "";
}

class OperatorCredsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string command = "node " + std::string(COUNTERSIGN_SOURCE_DIR) + "/tests/node/operator_creds.js " +
                                dir_.path().string();
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
    std::ifstream in(dir_.path() / "server.conf");
    std::ostringstream conf;
    conf << in.rdbuf();
    server_ = NatsServer::start({.extra_config = conf.str()});
    creds_ = (dir_.path() / "user.creds").string();
  }

  TempDir dir_;
  std::unique_ptr<NatsServer> server_;
  std::string creds_;
};

TEST_F(OperatorCredsTest, RunAndTheCliConnectWithACredsFile) {
  CountersignOptions options;
  options.config_yaml = "nats:\n  servers: [\"" + server_->url() + "\"]\n  credentials: " + creds_ +
                        "\npolicy:\n  file: policy.yaml\nroutes:\n  - name: jobs\n    from: \"agents.jobs.>\"\n"
                        "    to: \"jobs.>\"\nadmin:\n  listen: \"\"\n";
  options.policy_yaml = seedPolicy();
  options.wait_ready = false;  // the harness's probe has no credentials: the banner says ready
  auto gateway = CountersignProcess::start(options);
  ASSERT_TRUE(saysReady(*gateway, 20s)) << gateway->logs();

  // The CLI with --creds reaches countersign (which answers: it is connected with its own creds).
  const CommandResult listed = runCountersign({"pending", "--json", "-s", server_->url(), "--creds", creds_});
  EXPECT_EQ(listed.exit_code, 0) << listed.out << listed.err;
  EXPECT_NE(listed.out.find("\"items\""), std::string::npos) << listed.out;
  // The same creds through a `nats` CLI context, and through NATS_CREDS.
  const fs::path config_home = dir_.path() / "xdg";
  fs::create_directories(config_home / "nats" / "context");
  std::ofstream(config_home / "nats" / "context" / "op.json")
      << R"({"url":")" << server_->url() << R"(","creds":")" << creds_ << R"("})";
  const CommandResult by_context =
      runCountersign({"pending", "--context", "op"}, {{"XDG_CONFIG_HOME", config_home.string()}});
  EXPECT_EQ(by_context.exit_code, 0) << by_context.out << by_context.err;
  const CommandResult by_env = runCountersign({"pending", "-s", server_->url()}, {{"NATS_CREDS", creds_}});
  EXPECT_EQ(by_env.exit_code, 0) << by_env.out << by_env.err;

  // Without credentials, or with a user of an account the server does not trust: refused.
  const CommandResult anonymous = runCountersign({"pending", "-s", server_->url()});
  EXPECT_EQ(anonymous.exit_code, 3) << anonymous.out << anonymous.err;
  EXPECT_NE(anonymous.err.find("uthorization"), std::string::npos) << anonymous.err;
  const CommandResult stranger =
      runCountersign({"pending", "-s", server_->url(), "--creds", (dir_.path() / "stranger.creds").string()});
  EXPECT_EQ(stranger.exit_code, 3) << stranger.out << stranger.err;
  EXPECT_NE(stranger.err.find("uthorization"), std::string::npos) << stranger.err;
  // The seed in the creds file is never printed.
  const std::string seed = seedOf(creds_);
  ASSERT_FALSE(seed.empty());
  for (const auto* r : {&listed, &by_context, &by_env, &anonymous, &stranger}) {
    EXPECT_EQ((r->out + r->err).find(seed), std::string::npos) << "the seed was printed";
  }
  EXPECT_EQ(gateway->logs().find(seed), std::string::npos) << "the seed was logged";
  EXPECT_EQ(gateway->stop(), 0);
}

// A creds file the server does not accept (a user of an unknown account), one that does not
// exist, and one without a seed: `run` exits 3 with one plain line that says what is wrong
// (beside its JSON log lines, none of which warns), the CLI exits 3 and points at who connects
// or at the file; no seed is ever printed.
TEST_F(OperatorCredsTest, ABadCredsFileIsOneClearLineAndExitThree) {
  const std::string stranger = (dir_.path() / "stranger.creds").string();
  const std::string missing = (dir_.path() / "missing.creds").string();
  const std::string garbage = (dir_.path() / "garbage.creds").string();
  std::ofstream(garbage) << "not a creds file\n";
  const std::string seed = seedOf(stranger);
  ASSERT_FALSE(seed.empty());
  struct Case {
    std::string file;
    std::string says;  // in run's line and in the CLI's message
    std::string hint;  // the CLI's hint
  };
  const std::vector<Case> cases = {
      {stranger, "Authorization Violation", "check who connects: --creds"},
      {missing, "error opening file '" + missing + "'", "check the file named above"},
      {garbage, "no nkey user seed found in '" + garbage + "'", "check the file named above"},
  };
  TempDir run_dir;
  run_dir.write("policy.yaml", seedPolicy());
  for (const Case& c : cases) {
    SCOPED_TRACE(c.file);
    const std::string config = run_dir
                                   .write("countersign.yaml",
                                          "nats:\n  servers: [\"" + server_->url() + "\"]\n  credentials: " + c.file +
                                              "\npolicy:\n  file: policy.yaml\nroutes:\n  - name: jobs\n"
                                              "    from: \"agents.jobs.>\"\n    to: \"jobs.>\"\nadmin:\n  listen: \"\"\n")
                                   .string();
    const CommandResult run = runCountersign({"run", "--config", config}, {}, 30s);
    EXPECT_EQ(run.exit_code, 3) << run.out << run.err;
    std::vector<std::string> plain;
    std::istringstream err(run.err);
    for (std::string line; std::getline(err, line);) {
      if (line.empty()) continue;
      if (line.starts_with("{\"ts\":")) {
        EXPECT_EQ(line.find("\"level\":\"warn\""), std::string::npos) << line;
        EXPECT_EQ(line.find("\"level\":\"error\""), std::string::npos) << line;
        continue;
      }
      plain.push_back(line);
    }
    ASSERT_EQ(plain.size(), 1u) << run.err;
    EXPECT_TRUE(plain[0].starts_with("countersign: cannot start: cannot connect to NATS")) << plain[0];
    EXPECT_NE(plain[0].find(c.says), std::string::npos) << plain[0];
    EXPECT_EQ(run.out.find("countersign ready"), std::string::npos) << run.out;

    const CommandResult cli = runCountersign({"pending", "-s", server_->url(), "--creds", c.file});
    EXPECT_EQ(cli.exit_code, 3) << cli.out << cli.err;
    EXPECT_NE(cli.err.find(c.says), std::string::npos) << cli.err;
    EXPECT_NE(cli.err.find(c.hint), std::string::npos) << cli.err;
    for (const std::string& output : {run.out, run.err, cli.out, cli.err}) {
      EXPECT_EQ(output.find(seed), std::string::npos) << "the seed was printed";
      EXPECT_EQ(output.find("terminate"), std::string::npos) << output;
    }
  }
}

}  // namespace
}  // namespace countersign::testing
