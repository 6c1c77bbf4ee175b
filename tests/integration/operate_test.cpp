// Operating countersign: the real binary against a real nats-server, driven the way an operator
// drives it. The client subcommands (submit, pending, show, approve, reject, audit), the admin
// HTTP listener through the `curl` binary (health, readiness, metrics that move, the REST API
// with bearer tokens), the audit stream's hash chains under tampering, and the logs (JSON lines,
// text on request, never a payload byte or a token).
#include <gtest/gtest.h>
#include <nats/nats.h>
#include <rapidjson/document.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "countersign/nkeys.hpp"
#include "integration/harness/harness.hpp"
#include "integration/harness/wire.hpp"
#include "nats/child_process.hpp"

namespace countersign::testing {
namespace {

namespace fs = std::filesystem;

constexpr const char* kAliceToken = "alice-approve-token-5d0c2b71";
constexpr const char* kReaderToken = "reader-read-token-9e4f1a06";
constexpr const char* kAuditStream = "COUNTERSIGN_AUDIT";
constexpr const char* kPaymentSubject = "agents.jobs.finance.payment.execute";
constexpr const char* kPaymentTopic = "finance.payment.execute";
constexpr const char* kPaymentRule = "require-approval-prod-finance";
constexpr const char* kPrometheusType = "text/plain; version=0.0.4; charset=utf-8";

// A held payment (seed policy: finance.payment.execute in production needs a human).
std::string payment(const std::string& id, const std::string& extra = "") {
  return R"({"id":")" + id + R"(","amount":1200,"currency":"EUR","labels":{"env":"production"})" +
         (extra.empty() ? "" : "," + extra) + "}";
}

// basicConfig() with an admin listener on a free port and two tokens.
std::string operateConfig(const std::string& nats_url) {
  std::string admin =
      "admin:\n"
      "  listen: \"127.0.0.1:0\"\n"
      "  tokens:\n";
  admin += std::string("    - approver: alice\n      token: \"") + kAliceToken +
           "\"\n      scope: approve\n";
  admin += std::string("    - approver: reader\n      token: \"") + kReaderToken +
           "\"\n      scope: read\n";
  return basicConfig(nats_url, "", admin);
}

std::string readFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Polls `done` every 50 ms until it holds or `timeout` passes.
bool eventually(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  return waitUntil(done, timeout, 50ms);
}

// --- curl ------------------------------------------------------------------------------------

struct HttpReply : HttpResponse {
  int curl_exit = -1;  // 0: curl got an answer
};

// `curl -i` output: the final head (1xx interim heads skipped) and the body.
void parseCurlOutput(const std::string& out, HttpReply& reply) {
  std::size_t offset = 0;
  for (;;) {
    const auto end = out.find("\r\n\r\n", offset);
    if (end == std::string::npos) return;
    const std::string head = out.substr(offset, end - offset);
    offset = end + 4;
    const auto first_end = head.find("\r\n");
    const std::string status_line = head.substr(0, first_end);
    const auto space = status_line.find(' ');
    reply.status = space == std::string::npos ? 0 : std::atoi(status_line.c_str() + space + 1);
    reply.headers.clear();
    for (const auto& line : lines(first_end == std::string::npos ? "" : head.substr(first_end))) {
      const auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string value = line.substr(colon + 1);
      while (!value.empty() && (value.front() == ' ')) value.erase(0, 1);
      while (!value.empty() && (value.back() == '\r' || value.back() == ' ')) value.pop_back();
      reply.headers[lower(line.substr(0, colon))] = value;
    }
    if (reply.status >= 200) {
      reply.body = out.substr(offset);
      return;
    }
  }
}

// Runs the curl binary with `-s -i`; proxies from the environment are ignored.
HttpReply curl(const std::vector<std::string>& args, int max_time_s = 20) {
  HttpReply reply;
  const auto run = runCurl(args, max_time_s);
  if (!run) return reply;
  reply.curl_exit = run->exit_code;
  if (reply.curl_exit == 0) parseCurlOutput(run->out, reply);
  return reply;
}

// --- metrics ---------------------------------------------------------------------------------

// The value of one sample (`name{labels}` exactly as exposed); nullopt when the line is absent.
std::optional<double> sample(const std::string& exposition, const std::string& series) {
  for (const auto& line : lines(exposition)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return std::nullopt;
}

const std::string kHeldSeries =
    std::string("countersign_decisions_total{decision=\"held\",rule=\"") + kPaymentRule + "\"}";
const std::string kAllowedSeries =
    "countersign_decisions_total{decision=\"allowed\",rule=\"allow-readonly\"}";
const std::string kApprovedSeries = "countersign_approvals_total{result=\"approved\"}";
const std::string kAlreadyApprovedSeries =
    "countersign_approvals_total{result=\"already_approved\"}";
const std::string kReleasedSeries = "countersign_released_total";

// --- the audit stream, read directly ---------------------------------------------------------

// The events of one approval stored in the audit stream, by name, in stream order.
std::vector<std::string> storedEventsOf(Client& client, const std::string& id) {
  std::vector<std::string> names;
  for (const auto& e : readStream(client, kAuditStream)) {
    rapidjson::Document doc;
    doc.Parse(e.msg.payload.data(), e.msg.payload.size());
    if (!doc.HasParseError() && doc.IsObject() && str(doc, "approval_id") == id) {
      names.push_back(str(doc, "event"));
    }
  }
  return names;
}

bool streamDeniesDelete(Client& client, const std::string& stream) {
  jsStreamInfo* info = nullptr;
  jsErrCode code{};
  if (js_GetStreamInfo(&info, client.js(), stream.c_str(), nullptr, &code) != NATS_OK) {
    ADD_FAILURE() << "no stream " << stream;
    return false;
  }
  const bool deny = info->Config->DenyDelete;
  jsStreamInfo_Destroy(info);
  return deny;
}

// --- the fixture -----------------------------------------------------------------------------

class OperateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = NatsServer::start();
    client_ = std::make_unique<Client>(server_->url());
    beforeStart();
    CountersignOptions options;
    options.config_yaml = operateConfig(server_->url());
    options.policy_yaml = seedPolicy();
    options.nats_url = server_->url();
    countersign_ = CountersignProcess::start(options);
    // The admin line follows the control subscriptions the readiness probe waits for.
    const std::regex admin_line(R"(\n  admin http://127\.0\.0\.1:([0-9]+) )");
    std::smatch match;
    std::string logs;
    ASSERT_TRUE(eventually(
        [&] {
          logs = countersign_->logs();
          return std::regex_search(logs, match, admin_line);
        },
        10s))
        << "no admin line in the output:\n"
        << logs;
    port_ = std::stoi(match[1].str());
    api_ = "http://127.0.0.1:" + std::to_string(port_);
  }

  // countersign's public key (the seed file it created at start in its dir).
  std::string countersignKey() { return countersign_->receiptKey(); }

  // `countersign audit verify --key <countersign's key>`, plus `more`.
  CommandResult auditVerify(const std::vector<std::string>& more = {}) {
    std::vector<std::string> args{"audit", "verify", "--key", countersignKey()};
    args.insert(args.end(), more.begin(), more.end());
    return cli(args);
  }

  // Runs before countersign starts (a test may prepare the server).
  virtual void beforeStart() {}

  // The countersign binary with --server pointing at the test's nats-server.
  CommandResult cli(std::vector<std::string> args,
                    const std::map<std::string, std::string>& env = {}) {
    args.push_back("--server");
    args.push_back(server_->url());
    return runCountersign(args, env);
  }

  // Holds a payment through the producer's path (a request on agents.jobs.>), checks the 202
  // and returns the reply body.
  rapidjson::Document hold(const std::string& id, const std::string& extra = "") {
    auto reply = client_->request(kPaymentSubject, payment(id, extra), {}, 10s);
    if (!reply) {
      ADD_FAILURE() << "no answer to the held job " << id;
      rapidjson::Document none;
      none.SetObject();
      return none;
    }
    auto body = parseJson(reply->payload);
    EXPECT_EQ(str(body, "status"), "approval_required") << reply->payload;
    EXPECT_EQ(num(body, "code"), 202) << reply->payload;
    EXPECT_EQ(str(body, "approval_id"), id) << reply->payload;
    return body;
  }

  HttpReply get(const std::string& path, const std::string& token = "") {
    std::vector<std::string> args{api_ + path};
    if (!token.empty()) {
      args.push_back("-H");
      args.push_back("Authorization: Bearer " + token);
    }
    return curl(args);
  }

  std::string scrape() {
    const HttpReply r = get("/metrics");
    EXPECT_EQ(r.curl_exit, 0);
    EXPECT_EQ(r.status, 200);
    return r.body;
  }

  std::unique_ptr<NatsServer> server_;
  std::unique_ptr<Client> client_;
  std::unique_ptr<CountersignProcess> countersign_;
  int port_ = 0;
  std::string api_;
};

// === 1. the CLI against a running countersign ================================================

TEST_F(OperateTest, CliSubmitHoldsAndPendingListsTheJob) {
  const auto submitted = cli({"submit", kPaymentSubject, payment("pay-cli-1")});
  ASSERT_EQ(submitted.exit_code, 0) << submitted.out << submitted.err;
  auto reply = parseJson(submitted.out);
  EXPECT_EQ(str(reply, "status"), "approval_required");
  EXPECT_EQ(num(reply, "code"), 202);
  EXPECT_EQ(str(reply, "approval_id"), "pay-cli-1");
  EXPECT_EQ(str(reply, "rule"), kPaymentRule);
  EXPECT_EQ(str(reply, "job_hash").rfind("sha256:", 0), 0u) << submitted.out;

  // A denied job: the CLI says so and exits 1.
  const auto denied =
      cli({"submit", kPaymentSubject, R"({"id":"pay-staging","labels":{"env":"staging"}})"});
  EXPECT_EQ(denied.exit_code, 1) << denied.out << denied.err;
  EXPECT_EQ(str(parseJson(denied.out), "status"), "denied") << denied.out;

  const auto table = cli({"pending"});
  ASSERT_EQ(table.exit_code, 0) << table.out << table.err;
  const auto rows = lines(table.out);
  ASSERT_GE(rows.size(), 2u) << table.out;
  EXPECT_TRUE(contains(rows[0], "ID") && contains(rows[0], "TOPIC") && contains(rows[0], "RULE"))
      << table.out;
  std::size_t matching = 0;
  for (const auto& row : rows) {
    if (contains(row, "pay-cli-1")) {
      ++matching;
      EXPECT_TRUE(contains(row, kPaymentTopic)) << row;
      EXPECT_TRUE(contains(row, kPaymentRule)) << row;
      EXPECT_TRUE(contains(row, "pending")) << row;
    }
  }
  EXPECT_EQ(matching, 1u) << table.out;
  EXPECT_FALSE(contains(table.out, "pay-staging")) << "a denied job is not held:\n" << table.out;

  const auto listed = cli({"pending", "--json"});
  ASSERT_EQ(listed.exit_code, 0) << listed.out << listed.err;
  auto doc = parseJson(listed.out);
  EXPECT_EQ(str(doc, "status"), "ok");
  ASSERT_TRUE(doc.HasMember("items") && doc["items"].IsArray()) << listed.out;
  ASSERT_EQ(doc["items"].Size(), 1u) << listed.out;
  const auto& item = doc["items"][0];
  EXPECT_EQ(str(item, "id"), "pay-cli-1");
  EXPECT_EQ(str(item, "state"), "pending");
  EXPECT_EQ(str(item, "topic"), kPaymentTopic);
  EXPECT_EQ(str(item, "rule"), kPaymentRule);
}

TEST_F(OperateTest, CliShowPrintsThePrettyPayloadSnapshotAndHash) {
  auto held = hold("pay-show-1", R"("to":{"name":"ACME","iban":"DE00"})");
  const std::string job_hash = str(held, "job_hash");
  const std::string snapshot = str(held, "policy_snapshot");
  ASSERT_EQ(job_hash.rfind("sha256:", 0), 0u);
  ASSERT_EQ(snapshot.rfind("v1:sha256:", 0), 0u);

  const auto shown = cli({"show", "pay-show-1"});
  ASSERT_EQ(shown.exit_code, 0) << shown.out << shown.err;
  EXPECT_TRUE(std::regex_search(shown.out, std::regex("(^|\n)job_hash +" + job_hash + "\n")))
      << shown.out;
  EXPECT_TRUE(std::regex_search(shown.out, std::regex("(^|\n)policy_snapshot +" + snapshot + "\n")))
      << shown.out;
  EXPECT_TRUE(std::regex_search(shown.out, std::regex(std::string("(^|\n)rule +") + kPaymentRule)))
      << shown.out;
  EXPECT_TRUE(std::regex_search(shown.out, std::regex("(^|\n)state +pending\n"))) << shown.out;

  // Pretty-printed: one member per line, nested members indented deeper; not the compact text.
  EXPECT_FALSE(contains(shown.out, payment("pay-show-1"))) << shown.out;
  auto indentOf = [&](const std::string& member) -> int {
    for (const auto& line : lines(shown.out)) {
      const auto at = line.find(member);
      if (at == std::string::npos) continue;
      EXPECT_EQ(line.find_first_not_of(' '), at) << "not alone on its line: " << line;
      return static_cast<int>(at);
    }
    ADD_FAILURE() << "no line with " << member << " in:\n" << shown.out;
    return -1;
  };
  const int amount = indentOf(R"("amount": 1200)");
  const int labels = indentOf(R"("labels": {)");
  const int env = indentOf(R"("env": "production")");
  const int to = indentOf(R"("to": {)");
  const int name = indentOf(R"("name": "ACME")");
  EXPECT_GT(amount, 0);
  EXPECT_EQ(labels, amount);
  EXPECT_EQ(to, amount);
  EXPECT_GT(env, labels);
  EXPECT_GT(name, to);

  const auto unknown = cli({"show", "no-such-approval"});
  EXPECT_EQ(unknown.exit_code, 1) << unknown.out << unknown.err;
  EXPECT_TRUE(contains(unknown.err, "404")) << unknown.err;
}

TEST_F(OperateTest, CliApproveOnceAgainRejectAfterAndUnknownId) {
  Collector jobs(*client_, "jobs.>");
  hold("pay-approve-1");

  const auto approved = cli({"approve", "pay-approve-1", "--reason", "r", "--as", "alice"});
  EXPECT_EQ(approved.exit_code, 0) << approved.out << approved.err;
  EXPECT_TRUE(contains(approved.out, "approved (200)")) << approved.out;
  EXPECT_TRUE(contains(approved.out, "pay-approve-1")) << approved.out;
  auto got = jobs.waitFor(1, 10s);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].subject, "jobs.finance.payment.execute");
  EXPECT_EQ(got[0].payload, payment("pay-approve-1"));
  const std::string* by = findHeader(got[0].headers, "Countersign-Approved-By");
  ASSERT_NE(by, nullptr);
  EXPECT_EQ(*by, "alice");

  const auto again = cli({"approve", "pay-approve-1", "--as", "alice"});
  EXPECT_EQ(again.exit_code, 0) << again.out << again.err;
  EXPECT_TRUE(contains(again.out, "already_approved (200)")) << again.out;

  const auto reject = cli({"reject", "pay-approve-1", "--as", "bob", "--reason", "too late"});
  EXPECT_EQ(reject.exit_code, 1) << reject.out << reject.err;
  EXPECT_TRUE(contains(reject.err, "409")) << reject.err;
  EXPECT_TRUE(contains(reject.err, "already_approved")) << reject.err;

  const auto unknown = cli({"approve", "unknown-id", "--as", "alice"});
  EXPECT_EQ(unknown.exit_code, 1) << unknown.out << unknown.err;
  EXPECT_TRUE(contains(unknown.err, "404")) << unknown.err;
  EXPECT_TRUE(contains(unknown.err, "not_found")) << unknown.err;

  // The record names the approver and the reason of the one decision.
  const auto shown = cli({"show", "pay-approve-1", "--json"});
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  auto doc = parseJson(shown.out);
  ASSERT_TRUE(doc.HasMember("record")) << shown.out;
  EXPECT_EQ(str(doc["record"], "decided_by"), "alice") << shown.out;
  EXPECT_EQ(str(doc["record"], "reason"), "r") << shown.out;
  EXPECT_EQ(str(doc["record"], "state"), "released") << shown.out;

  // Released once: anything a second release had published was flushed to the server before
  // its answer, so a flush of this connection brings it in.
  client_->flush();
  EXPECT_EQ(jobs.count(), 1u);
}

TEST_F(OperateTest, CliExitsThreeWithAMessageWhenTheServerIsDead) {
  const std::string dead = "nats://127.0.0.1:" + std::to_string(freePort());
  const std::vector<std::vector<std::string>> commands{
      {"submit", kPaymentSubject, payment("pay-dead")},
      {"pending"},
      {"show", "x"},
      {"approve", "x", "--as", "alice"},
      {"reject", "x", "--as", "alice"},
      {"release", "x", "--force"},
      {"audit", "x"},
      {"audit", "verify", "--key", nkeys::encodePublicKey(nkeys::publicKeyOf(nkeys::generateSeed()))}};
  for (auto args : commands) {
    args.push_back("--server");
    args.push_back(dead);
    const auto r = runCountersign(args);
    EXPECT_EQ(r.exit_code, 3) << args[0] << ": " << r.out << r.err;
    EXPECT_TRUE(contains(r.err, "cannot connect")) << args[0] << ": " << r.err;
    EXPECT_TRUE(contains(r.err, dead)) << args[0] << ": " << r.err;
  }
}

TEST_F(OperateTest, CliHonoursNatsUrlAndServerOverridesIt) {
  hold("pay-env-1");
  const std::string dead = "nats://127.0.0.1:" + std::to_string(freePort());

  const auto from_env = runCountersign({"pending", "--json"}, {{"NATS_URL", server_->url()}});
  ASSERT_EQ(from_env.exit_code, 0) << from_env.out << from_env.err;
  EXPECT_TRUE(contains(from_env.out, R"("id":"pay-env-1")")) << from_env.out;

  const auto dead_env = runCountersign({"pending"}, {{"NATS_URL", dead}});
  EXPECT_EQ(dead_env.exit_code, 3) << dead_env.out << dead_env.err;
  EXPECT_TRUE(contains(dead_env.err, dead)) << dead_env.err;

  const auto submit_env = runCountersign({"submit", kPaymentSubject, payment("pay-env-2")},
                                         {{"NATS_URL", server_->url()}});
  EXPECT_EQ(submit_env.exit_code, 0) << submit_env.out << submit_env.err;
  EXPECT_EQ(str(parseJson(submit_env.out), "approval_id"), "pay-env-2") << submit_env.out;

  const auto overridden =
      runCountersign({"pending", "--json", "--server", server_->url()}, {{"NATS_URL", dead}});
  EXPECT_EQ(overridden.exit_code, 0) << overridden.out << overridden.err;
  EXPECT_TRUE(contains(overridden.out, R"("id":"pay-env-2")")) << overridden.out;
}

TEST(OperateCliTest, HelpOnEverySubcommandExitsZero) {
  const std::vector<std::vector<std::string>> commands{{},
                                                       {"run"},
                                                       {"submit"},
                                                       {"pending"},
                                                       {"show"},
                                                       {"approve"},
                                                       {"reject"},
                                                       {"release"},
                                                       {"audit"},
                                                       {"audit", "verify"},
                                                       {"policy"},
                                                       {"policy", "check"},
                                                       {"policy", "explain"}};
  for (auto args : commands) {
    std::string name = "countersign";
    for (const auto& a : args) name += " " + a;
    args.push_back("--help");
    const auto r = runCountersign(args);
    EXPECT_EQ(r.exit_code, 0) << name << " --help: " << r.out << r.err;
    EXPECT_TRUE(contains(r.out, "Usage")) << name << " --help: " << r.out << r.err;
    if (!args.empty() && args.size() > 1) {
      EXPECT_TRUE(contains(r.out, args[args.size() - 2])) << name << " --help: " << r.out;
    }
  }
  // A subcommand's help names its own options.
  EXPECT_TRUE(contains(runCountersign({"approve", "--help"}).out, "--reason"));
  EXPECT_TRUE(contains(runCountersign({"pending", "--help"}).out, "--state"));
}

// The CLI's contract: 0 ok, 1 refused, 2 usage, 3 unreachable. Every kind of bad command line is
// a usage error.
TEST(OperateCliTest, UsageErrorsExitTwo) {
  const std::vector<std::vector<std::string>> commands{
      {},                                              // no subcommand
      {"no-such-command"},                             // unknown subcommand
      {"approve"},                                     // missing positional
      {"submit"},                                      // missing positional
      {"pending", "--bogus"},                          // unknown option
      {"pending", "--limit", "0"},                     // out of range
      {"release", "x"},                                // neither --force nor --mark-released
      {"release", "x", "--force", "--mark-released"},  // both
      {"run", "--log-format", "xml"},                  // not a member
      {"audit"}};                                      // neither an id nor verify
  for (const auto& args : commands) {
    std::string name = "countersign";
    for (const auto& a : args) name += " " + a;
    const auto r = runCountersign(args);
    EXPECT_EQ(r.exit_code, 2) << name << ": " << r.err;
    EXPECT_FALSE(r.err.empty()) << name << ": says nothing";
  }
}

// === 2. the admin HTTP listener ==============================================================

TEST_F(OperateTest, HttpHealthzAndReadyzFollowTheNatsServer) {
  const auto health = get("/healthz");
  ASSERT_EQ(health.curl_exit, 0);
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.body, "ok");
  const auto ready = get("/readyz");
  ASSERT_EQ(ready.curl_exit, 0);
  EXPECT_EQ(ready.status, 200) << ready.body;

  server_->stop();
  HttpReply last;
  EXPECT_TRUE(eventually(
      [&] {
        last = curl({api_ + "/readyz"}, 5);
        return last.curl_exit == 0 && last.status == 503;
      },
      20s))
      << "readyz still " << last.status << " (curl " << last.curl_exit << "): " << last.body;
  EXPECT_TRUE(contains(last.body, "nats")) << last.body;
  // Liveness is not readiness: the process is fine, only its server is gone.
  const auto still_alive = get("/healthz");
  EXPECT_EQ(still_alive.status, 200);

  server_->restart();
  EXPECT_TRUE(eventually(
      [&] {
        last = curl({api_ + "/readyz"}, 5);
        return last.curl_exit == 0 && last.status == 200;
      },
      30s))
      << "readyz after the restart: " << last.status << ": " << last.body;
}

TEST_F(OperateTest, HttpMetricsCountersMoveByExactlyWhatHappened) {
  const auto first = get("/metrics");
  ASSERT_EQ(first.curl_exit, 0);
  ASSERT_EQ(first.status, 200);
  EXPECT_EQ(first.header("content-type"), kPrometheusType);
  const std::string before = first.body;
  // Fixed series are there from the start; label sets appear with their first count.
  ASSERT_TRUE(sample(before, kReleasedSeries).has_value()) << before;
  const double held0 = sample(before, kHeldSeries).value_or(0);
  const double allowed0 = sample(before, kAllowedSeries).value_or(0);
  const double approved0 = sample(before, kApprovedSeries).value_or(0);
  const double again0 = sample(before, kAlreadyApprovedSeries).value_or(0);
  const double released0 = *sample(before, kReleasedSeries);

  Collector jobs(*client_, "jobs.>");
  client_->publish("agents.jobs.knowledge.read", R"({"query":"metrics"})");
  client_->flush();
  ASSERT_EQ(jobs.waitFor(1, 10s).size(), 1u);
  hold("pay-metrics-1");
  const auto approved = curl({"-X", "POST", api_ + "/api/v1/approvals/pay-metrics-1/approve", "-H",
                              std::string("Authorization: Bearer ") + kAliceToken});
  ASSERT_EQ(approved.status, 200) << approved.body;
  ASSERT_EQ(jobs.waitFor(2, 10s).size(), 2u);

  std::string after;
  const bool reached = eventually(
      [&] {
        after = scrape();
        return sample(after, kHeldSeries).value_or(0) >= held0 + 1 &&
               sample(after, kAllowedSeries).value_or(0) >= allowed0 + 1 &&
               sample(after, kApprovedSeries).value_or(0) >= approved0 + 1 &&
               sample(after, kReleasedSeries).value_or(0) >= released0 + 1;
      },
      10s);
  EXPECT_TRUE(reached) << after;
  EXPECT_EQ(sample(after, kHeldSeries).value_or(-1), held0 + 1) << after;
  EXPECT_EQ(sample(after, kAllowedSeries).value_or(-1), allowed0 + 1) << after;
  EXPECT_EQ(sample(after, kApprovedSeries).value_or(-1), approved0 + 1) << after;
  EXPECT_EQ(sample(after, kReleasedSeries).value_or(-1), released0 + 1) << after;
  EXPECT_EQ(sample(after, kAlreadyApprovedSeries).value_or(0), again0) << after;

  // Approving again counts as already_approved and releases nothing.
  const auto again = curl({"-X", "POST", api_ + "/api/v1/approvals/pay-metrics-1/approve", "-H",
                           std::string("Authorization: Bearer ") + kAliceToken});
  ASSERT_EQ(again.status, 200) << again.body;
  const auto last = scrape();
  EXPECT_EQ(sample(last, kAlreadyApprovedSeries).value_or(-1), again0 + 1) << last;
  EXPECT_EQ(sample(last, kApprovedSeries).value_or(-1), approved0 + 1) << last;
  EXPECT_EQ(sample(last, kReleasedSeries).value_or(-1), released0 + 1) << last;
  EXPECT_EQ(sample(last, kHeldSeries).value_or(-1), held0 + 1) << last;
}

TEST_F(OperateTest, HttpArticleApproveFlowWithCurl) {
  Collector jobs(*client_, "jobs.>");
  hold("pay-article-1");
  const std::string url = api_ + "/api/v1/approvals/pay-article-1/approve";
  const std::string auth = std::string("Authorization: Bearer ") + kAliceToken;

  const auto approved = curl({"-X", "POST", url, "-H", "Content-Type: application/json", "-H", auth,
                              "-d", R"({"reason":"validated invoice and policy context"})"});
  ASSERT_EQ(approved.curl_exit, 0);
  EXPECT_EQ(approved.status, 200) << approved.body;
  EXPECT_EQ(approved.header("content-type"), "application/json");
  EXPECT_EQ(approved.header("countersign-status"), "approved");
  auto body = parseJson(approved.body);
  EXPECT_EQ(str(body, "status"), "approved");
  EXPECT_EQ(num(body, "code"), 200);
  EXPECT_EQ(str(body, "approval_id"), "pay-article-1");
  EXPECT_EQ(str(body, "msg_id"), "countersign:pay-article-1");
  ASSERT_TRUE(body.HasMember("released") && body["released"].IsBool()) << approved.body;
  EXPECT_TRUE(body["released"].GetBool());

  // The same request again, with no body at all.
  const auto again = curl({"-X", "POST", url, "-H", auth});
  ASSERT_EQ(again.curl_exit, 0);
  EXPECT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(again.header("countersign-status"), "already_approved");
  auto again_body = parseJson(again.body);
  EXPECT_EQ(str(again_body, "status"), "already_approved");
  EXPECT_EQ(str(again_body, "decided_by"), "alice");

  auto got = jobs.waitFor(1, 10s);
  ASSERT_EQ(got.size(), 1u);
  const std::string* by = findHeader(got[0].headers, "Countersign-Approved-By");
  ASSERT_NE(by, nullptr);
  EXPECT_EQ(*by, "alice");
  client_->flush();
  EXPECT_EQ(jobs.count(), 1u) << "released more than once";

  // The reason the reviewer gave is the record's.
  const auto record = get("/api/v1/approvals/pay-article-1", kReaderToken);
  ASSERT_EQ(record.status, 200) << record.body;
  auto doc = parseJson(record.body);
  ASSERT_TRUE(doc.HasMember("record")) << record.body;
  EXPECT_EQ(str(doc["record"], "reason"), "validated invoice and policy context");
  EXPECT_EQ(str(doc["record"], "decided_by"), "alice");
}

TEST_F(OperateTest, HttpTokensScopesListAndGet) {
  Collector jobs(*client_, "jobs.>");
  auto held = hold("pay-auth-1");
  const std::string url = api_ + "/api/v1/approvals/pay-auth-1/approve";

  const auto no_token = curl({"-X", "POST", url});
  ASSERT_EQ(no_token.curl_exit, 0);
  EXPECT_EQ(no_token.status, 401) << no_token.body;
  EXPECT_TRUE(contains(no_token.header("www-authenticate"), "Bearer")) << no_token.body;

  const auto wrong = curl({"-X", "POST", url, "-H", "Authorization: Bearer not-a-known-token-123"});
  EXPECT_EQ(wrong.status, 401) << wrong.body;

  const auto read_scope =
      curl({"-X", "POST", url, "-H", std::string("Authorization: Bearer ") + kReaderToken});
  EXPECT_EQ(read_scope.status, 403) << read_scope.body;
  EXPECT_EQ(read_scope.header("countersign-status"), "forbidden");

  const auto read_scope_reject = curl({"-X", "POST", api_ + "/api/v1/approvals/pay-auth-1/reject",
                                       "-H", std::string("Authorization: Bearer ") + kReaderToken});
  EXPECT_EQ(read_scope_reject.status, 403) << read_scope_reject.body;

  const auto list_no_token = get("/api/v1/approvals?state=pending");
  EXPECT_EQ(list_no_token.status, 401) << list_no_token.body;

  // Nothing was decided by the refused requests: still pending, nothing released.
  const auto list = get("/api/v1/approvals?state=pending", kReaderToken);
  ASSERT_EQ(list.status, 200) << list.body;
  EXPECT_EQ(list.header("content-type"), "application/json");
  auto doc = parseJson(list.body);
  ASSERT_TRUE(doc.HasMember("items") && doc["items"].IsArray()) << list.body;
  ASSERT_EQ(doc["items"].Size(), 1u) << list.body;
  EXPECT_EQ(str(doc["items"][0], "id"), "pay-auth-1");
  EXPECT_EQ(str(doc["items"][0], "state"), "pending");
  EXPECT_EQ(str(doc["items"][0], "topic"), kPaymentTopic);
  EXPECT_EQ(str(doc["items"][0], "rule"), kPaymentRule);

  const auto one = get("/api/v1/approvals/pay-auth-1", kAliceToken);
  ASSERT_EQ(one.status, 200) << one.body;
  auto record = parseJson(one.body);
  ASSERT_TRUE(record.HasMember("record")) << one.body;
  EXPECT_EQ(str(record["record"], "id"), "pay-auth-1");
  EXPECT_EQ(str(record["record"], "state"), "pending");
  EXPECT_EQ(str(record["record"], "job_hash"), str(held, "job_hash"));
  EXPECT_EQ(str(record["record"], "policy_snapshot"), str(held, "policy_snapshot"));

  const auto missing = get("/api/v1/approvals/no-such-approval", kReaderToken);
  EXPECT_EQ(missing.status, 404) << missing.body;
  EXPECT_EQ(missing.header("countersign-status"), "not_found");

  client_->flush();
  EXPECT_EQ(jobs.count(), 0u) << "a refused approve released the job";

  // The approve token decides; the list follows.
  const auto ok =
      curl({"-X", "POST", url, "-H", std::string("Authorization: Bearer ") + kAliceToken});
  EXPECT_EQ(ok.status, 200) << ok.body;
  const auto after = get("/api/v1/approvals?state=pending", kReaderToken);
  ASSERT_EQ(after.status, 200) << after.body;
  auto after_doc = parseJson(after.body);
  ASSERT_TRUE(after_doc.HasMember("items") && after_doc["items"].IsArray()) << after.body;
  EXPECT_EQ(after_doc["items"].Size(), 0u) << after.body;
}

// === 3. the audit trail ======================================================================

TEST_F(OperateTest, AuditTrailListsHeldApprovedReleasedAndVerifies) {
  hold("pay-audit-1");
  const auto approved = cli({"approve", "pay-audit-1", "--as", "alice", "--reason", "checked"});
  ASSERT_EQ(approved.exit_code, 0) << approved.err;
  // The events are in the stream once they are stored, not when the approve answers.
  std::vector<std::string> stored;
  ASSERT_TRUE(eventually(
      [&] {
        stored = storedEventsOf(*client_, "pay-audit-1");
        return stored.size() >= 3;
      },
      10s))
      << "events stored: " << stored.size();
  EXPECT_EQ(stored, (std::vector<std::string>{"held", "approved", "released"}));

  const auto trail = cli({"audit", "pay-audit-1"});
  ASSERT_EQ(trail.exit_code, 0) << trail.out << trail.err;
  std::vector<std::string> rows;
  for (const auto& row : lines(trail.out)) {
    for (const char* event : {"held", "approved", "released"}) {
      if (std::regex_search(row, std::regex(std::string(" ") + event + " "))) rows.push_back(event);
    }
  }
  EXPECT_EQ(rows, (std::vector<std::string>{"held", "approved", "released"})) << trail.out;
  const std::regex approved_row(R"( approved +alice +checked)");
  EXPECT_TRUE(std::regex_search(trail.out, approved_row)) << trail.out;

  const auto as_json = cli({"audit", "pay-audit-1", "--json"});
  ASSERT_EQ(as_json.exit_code, 0) << as_json.err;
  const auto json_rows = lines(as_json.out);
  ASSERT_EQ(json_rows.size(), 3u) << as_json.out;
  for (const auto& row : json_rows) {
    auto event = parseJson(row);
    EXPECT_EQ(str(event, "approval_id"), "pay-audit-1");
    EXPECT_NE(str(event, "chain"), "<missing>") << row;
    EXPECT_GE(num(event, "seq"), 1) << row;
    EXPECT_TRUE(event.HasMember("prev") && event["prev"].IsString()) << row;
  }

  const auto none = cli({"audit", "no-such-approval"});
  EXPECT_EQ(none.exit_code, 1) << none.out << none.err;

  const auto verified = auditVerify();
  EXPECT_EQ(verified.exit_code, 0) << verified.out << verified.err;
  EXPECT_TRUE(contains(verified.out, "audit verify ok")) << verified.out;

  // The stream countersign created refuses deletes through the JetStream API.
  EXPECT_TRUE(streamDeniesDelete(*client_, kAuditStream));
  const auto events = readStream(*client_, kAuditStream);
  ASSERT_FALSE(events.empty());
  jsErrCode code{};
  EXPECT_NE(js_DeleteMsg(client_->js(), kAuditStream, events.front().sequence, nullptr, &code),
            NATS_OK);
  const auto still = auditVerify();
  EXPECT_EQ(still.exit_code, 0) << still.out << still.err;
}

// Holds, approves and waits until the three events of the approval are stored.
// Signature headers as countersign writes them, made with `seed` (not countersign's key).
Headers signedBy(const nkeys::Seed& seed, const std::string& body) {
  return {{"Countersign-Event-Signature", nkeys::base64UrlEncode(nkeys::sign(seed, body))},
          {"Countersign-Event-Key", nkeys::encodePublicKey(nkeys::publicKeyOf(seed))}};
}

class AuditTamperTest : public OperateTest {
 protected:
  void SetUp() override {
    OperateTest::SetUp();
    if (HasFatalFailure()) return;
    hold("pay-tamper-1");
    const auto approved = cli({"approve", "pay-tamper-1", "--as", "alice"});
    ASSERT_EQ(approved.exit_code, 0) << approved.err;
    ASSERT_TRUE(
        eventually([&] { return storedEventsOf(*client_, "pay-tamper-1").size() >= 3; }, 10s));
    const auto verified = auditVerify();
    ASSERT_EQ(verified.exit_code, 0) << "before tampering: " << verified.out << verified.err;
  }

  // A core publish into the stream's subjects, waited for until the stream stored it; returns
  // its stream sequence.
  std::uint64_t forge(const std::string& subject, const std::string& body, const Headers& headers = {}) {
    const std::uint64_t before = client_->streamMessageCount(kAuditStream);
    client_->publish(subject, body, headers);
    client_->flush();
    EXPECT_TRUE(
        eventually([&] { return client_->streamMessageCount(kAuditStream) == before + 1; }, 10s));
    const auto events = readStream(*client_, kAuditStream);
    return events.empty() ? 0 : events.back().sequence;
  }

  // The stored message of the approval's event with this name (body and headers as stored).
  StoredMessage storedMessage(const std::string& name) {
    for (auto& e : readStream(*client_, kAuditStream)) {
      rapidjson::Document doc;
      doc.Parse(e.msg.payload.data(), e.msg.payload.size());
      if (!doc.HasParseError() && doc.IsObject() && str(doc, "approval_id") == "pay-tamper-1" &&
          str(doc, "event") == name) {
        return e;
      }
    }
    ADD_FAILURE() << "no stored " << name << " event";
    return {};
  }

  // Three forged events of pay-tamper-1, one of each kind a reader must not believe: 1. a `held`
  // without a signature, claiming to be verified; 2. an `approved` signed with the forger's own
  // key; 3. the genuine `released` with its actor altered, under countersign's key and genuine
  // signature.
  void forgeThreeEvents() {
    const StoredMessage released = storedMessage("released");
    const std::string real_signature = header(released.msg, "Countersign-Event-Signature");
    ASSERT_FALSE(real_signature.empty()) << "events are not signed";
    forge("countersign.events.held.finance.payment.execute",
          R"({"event":"held","approval_id":"pay-tamper-1","topic":"finance.payment.execute","actor":"countersign",)"
          R"("reason":"forged-unsigned","at":"2024-01-01T00:00:00Z","signature_check":"verified"})");
    const auto forger = nkeys::generateSeed();
    const std::string by_forger =
        R"({"event":"approved","approval_id":"pay-tamper-1","topic":"finance.payment.execute","actor":"mallory",)"
        R"("reason":"forged-other-key","at":"2024-01-01T00:00:00Z"})";
    forge("countersign.events.approved.finance.payment.execute", by_forger, signedBy(forger, by_forger));
    std::string altered = released.msg.payload;
    const auto at = altered.find("\"actor\":\"");
    ASSERT_NE(at, std::string::npos);
    altered.insert(at + 9, "mallory-");
    forge(released.msg.subject, altered,
          {{"Countersign-Event-Signature", real_signature}, {"Countersign-Event-Key", countersignKey()}});
  }

  // The stored event of the approval with this name.
  rapidjson::Document storedEvent(const std::string& name) {
    for (const auto& e : readStream(*client_, kAuditStream)) {
      rapidjson::Document doc;
      doc.Parse(e.msg.payload.data(), e.msg.payload.size());
      if (!doc.HasParseError() && doc.IsObject() && str(doc, "approval_id") == "pay-tamper-1" &&
          str(doc, "event") == name) {
        return doc;
      }
    }
    ADD_FAILURE() << "no stored " << name << " event";
    rapidjson::Document none;
    none.SetObject();
    return none;
  }
};

TEST_F(AuditTamperTest, ForgedEventReusingAChainAndSeqFailsVerify) {
  // The released event follows the approved one on the control chain: copy its place.
  auto released = storedEvent("released");
  const std::string chain = str(released, "chain");
  const std::int64_t seq = num(released, "seq");
  const std::string prev = str(released, "prev");
  ASSERT_NE(chain, "<missing>");
  ASSERT_GE(seq, 1);
  const std::string body = R"({"event":"approved","approval_id":"x","topic":"x","actor":"mallory",)"
                           R"("at":"2024-01-01T00:00:00Z","chain":")" +
                           chain + R"(","seq":)" + std::to_string(seq) + R"(,"prev":")" + prev +
                           R"("})";
  const std::uint64_t at = forge("countersign.events.approved.x", body);

  const auto verified = auditVerify();
  EXPECT_EQ(verified.exit_code, 1) << verified.out << verified.err;
  EXPECT_TRUE(contains(verified.err, "stream #" + std::to_string(at) + " (chain " + chain + " seq " +
                                         std::to_string(seq) + "): unsigned"))
      << verified.err;
  EXPECT_TRUE(contains(verified.err, "FAILED")) << verified.err;
}

TEST_F(AuditTamperTest, ReplayedSignedEventFailsVerify) {
  // A genuine event, signature and all, published again (under a new message id).
  const StoredMessage released = storedMessage("released");
  ASSERT_FALSE(header(released.msg, "Countersign-Event-Signature").empty()) << "events are not signed";
  Headers copied;
  for (const auto& [name, value] : released.msg.headers) {
    if (lower(name) != "nats-msg-id") copied.emplace_back(name, value);
  }
  const auto doc = parseJson(released.msg.payload);
  forge(released.msg.subject, released.msg.payload, copied);

  const auto verified = auditVerify();
  EXPECT_EQ(verified.exit_code, 1) << verified.out << verified.err;
  EXPECT_TRUE(contains(verified.err, "chain " + str(doc, "chain") + " seq " + std::to_string(num(doc, "seq"))))
      << verified.err;
  EXPECT_TRUE(contains(verified.err, "seq appears twice")) << verified.err;
}

TEST_F(AuditTamperTest, SignedEventWithAnAlteredBodyFailsVerify) {
  // A genuine event's signature on a body that says something else (and a new seq after the
  // chain's end, with the right prev, so that only the signature can tell).
  const StoredMessage released = storedMessage("released");
  const auto doc = parseJson(released.msg.payload);
  std::string body = released.msg.payload;
  const auto actor = body.find("\"actor\":\"");
  ASSERT_NE(actor, std::string::npos) << body;
  body.insert(actor + 9, "mallory-");
  Headers copied;
  for (const auto& [name, value] : released.msg.headers) {
    if (lower(name) != "nats-msg-id") copied.emplace_back(name, value);
  }
  const std::uint64_t at = forge(released.msg.subject, body, copied);

  const auto verified = auditVerify();
  EXPECT_EQ(verified.exit_code, 1) << verified.out << verified.err;
  EXPECT_TRUE(contains(verified.err, "stream #" + std::to_string(at) + " (chain " + str(doc, "chain")))
      << verified.err;
  EXPECT_TRUE(contains(verified.err, "bad signature")) << verified.err;
}

TEST_F(AuditTamperTest, ForgedEventAppendedWithAWrongPrevFailsVerify) {
  auto released = storedEvent("released");
  const std::string chain = str(released, "chain");
  const std::int64_t next = num(released, "seq") + 1;
  ASSERT_NE(chain, "<missing>");
  const std::string body =
      R"({"event":"approved","approval_id":"x","actor":"mallory","chain":")" + chain +
      R"(","seq":)" + std::to_string(next) +
      R"(,"prev":"sha256:0000000000000000000000000000000000000000000000000000000000000000"})";
  const std::uint64_t at = forge("countersign.events.approved.x", body);

  const auto verified = auditVerify();
  EXPECT_EQ(verified.exit_code, 1) << verified.out << verified.err;
  EXPECT_TRUE(contains(verified.err, "stream #" + std::to_string(at) + " (chain " + chain + " seq " +
                                         std::to_string(next) + ")"))
      << verified.err;
  EXPECT_TRUE(contains(verified.err, "unsigned")) << verified.err;
}

TEST_F(AuditTamperTest, ForeignMessagesAreReportedAndDoNotFailVerify) {
  // Not JSON, and JSON without a place in a chain: they claim nothing, and the stream refuses
  // deletes, so verify names them and goes on.
  const std::uint64_t no_chain =
      forge("countersign.events.approved.x",
            R"({"event":"approved","approval_id":"pay-tamper-1","actor":"mallory"})");
  const std::uint64_t not_json = forge("countersign.events.held.x", "not json at all");

  const auto verified = auditVerify();
  EXPECT_EQ(verified.exit_code, 0) << verified.out << verified.err;
  EXPECT_TRUE(contains(verified.out, "2 foreign message(s)")) << verified.out;
  EXPECT_TRUE(contains(verified.out, "#" + std::to_string(no_chain) + ", #" + std::to_string(not_json)))
      << verified.out;
  EXPECT_TRUE(contains(verified.out, "audit verify ok")) << verified.out;

  const auto as_json = auditVerify({"--json"});
  EXPECT_EQ(as_json.exit_code, 0) << as_json.out << as_json.err;
  const auto report = parseJson(as_json.out);
  EXPECT_EQ(num(report, "foreign"), 2) << as_json.out;
  ASSERT_TRUE(report.HasMember("foreign_seqs") && report["foreign_seqs"].IsArray()) << as_json.out;
  ASSERT_EQ(report["foreign_seqs"].Size(), 2u) << as_json.out;
  EXPECT_EQ(report["foreign_seqs"][0].GetUint64(), no_chain);
  EXPECT_EQ(report["foreign_seqs"][1].GetUint64(), not_json);
}

// Anyone allowed to publish on <prefix>.events.> can add a chain of its own: a made-up chain
// name, seq 1, prev "". Its events carry no signature by countersign's key: refused.
TEST_F(AuditTamperTest, ForgedChainOfItsOwnFailsVerify) {
  const std::uint64_t at =
      forge("countersign.events.approved.finance.payment.execute",
            R"({"event":"approved","approval_id":"pay-tamper-1","topic":"finance.payment.execute",)"
            R"("actor":"mallory","reason":"forged","at":"2024-01-01T00:00:00Z",)"
            R"("chain":"feedfacecafe-control","seq":1,"prev":""})");
  const auto verified = auditVerify();
  EXPECT_EQ(verified.exit_code, 1) << verified.out << verified.err;
  EXPECT_TRUE(contains(verified.err, "stream #" + std::to_string(at) + " (chain feedfacecafe-control seq 1): unsigned"))
      << verified.err;

  // --from: what comes after a stream sequence (after an upgrade, events written before it are
  // unsigned); the chains that began before it are checked from their first event on.
  hold("pay-tamper-2");
  ASSERT_TRUE(eventually([&] { return storedEventsOf(*client_, "pay-tamper-2").size() >= 1; }, 10s));
  const auto after = auditVerify({"--from", std::to_string(at + 1)});
  EXPECT_EQ(after.exit_code, 0) << after.out << after.err;
}

// The same chain signed with a key of the forger's own: a valid signature, by a key nobody trusts.
TEST_F(AuditTamperTest, ForgedChainSignedWithAnotherKeyFailsVerify) {
  const nkeys::Seed mallory = nkeys::generateSeed();
  const std::string body =
      R"({"event":"approved","approval_id":"pay-tamper-1","topic":"finance.payment.execute",)"
      R"("actor":"mallory","reason":"forged","at":"2024-01-01T00:00:00Z",)"
      R"("chain":"feedfacecafe-control","seq":1,"prev":""})";
  const std::uint64_t at = forge("countersign.events.approved.finance.payment.execute", body, signedBy(mallory, body));
  const auto verified = auditVerify();
  EXPECT_EQ(verified.exit_code, 1) << verified.out << verified.err;
  EXPECT_TRUE(contains(verified.err, "stream #" + std::to_string(at) + " (chain feedfacecafe-control seq 1): "
                                     "signed by an unknown key " + nkeys::encodePublicKey(nkeys::publicKeyOf(mallory))))
      << verified.err;

  // Trusting the forger's key as well (as an auditor told the wrong key would) lets it pass:
  // the trust is in the keys given.
  const auto trusting = auditVerify({"--key", nkeys::encodePublicKey(nkeys::publicKeyOf(mallory))});
  EXPECT_EQ(trusting.exit_code, 0) << trusting.out << trusting.err;
}

// `watch --json` marks each event as `audit ID --json` does: signature_check on every line,
// set by watch's own check (a forged body claiming "verified" is still unsigned).
TEST_F(AuditTamperTest, WatchJsonMarksEachEventBySignature) {
  const auto watch = [&](std::vector<std::string> extra) {
    std::vector<std::string> args{"watch", "--json", "--count", "4", "--timeout-ms", "15000"};
    args.insert(args.end(), extra.begin(), extra.end());
    return std::async(std::launch::async, [this, args] { return cli(args); });
  };
  auto with_key = watch({"--key", countersignKey()});
  auto without_key = watch({});
  std::this_thread::sleep_for(1s);
  forgeThreeEvents();
  ASSERT_FALSE(HasFatalFailure());
  hold("pay-watch-json");

  const auto checks = [](const CommandResult& result) {
    EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
    std::vector<std::string> seen;
    for (const auto& row : lines(result.out)) {
      const auto event = parseJson(row);
      EXPECT_TRUE(event.IsObject()) << row;
      seen.push_back(str(event, "event") + ":" + str(event, "signature_check"));
    }
    return seen;
  };
  const CommandResult checked = with_key.get();
  EXPECT_EQ(checks(checked), (std::vector<std::string>{"held:unsigned", "approved:unknown_key",
                                                       "released:bad_signature", "held:verified"}))
      << checked.out;
  // Without a key: a signature can only be seen, not checked.
  const CommandResult unchecked = without_key.get();
  EXPECT_EQ(checks(unchecked), (std::vector<std::string>{"held:unsigned", "approved:not_checked",
                                                         "released:not_checked", "held:not_checked"}))
      << unchecked.out;
  // The rest of each event is as published.
  const auto first = parseJson(lines(checked.out).at(0));
  EXPECT_EQ(str(first, "reason"), "forged-unsigned");
  EXPECT_EQ(str(first, "approval_id"), "pay-tamper-1");
}

TEST_F(AuditTamperTest, VerifyNeedsAKeyAndRefusesCountersignsEventsUnderAnotherKey) {
  const auto no_key = cli({"audit", "verify"});
  EXPECT_EQ(no_key.exit_code, 2) << no_key.out << no_key.err;
  EXPECT_TRUE(contains(no_key.err, "--key")) << no_key.err;

  const auto bad_key = cli({"audit", "verify", "--key", "UNOTAKEY"});
  EXPECT_EQ(bad_key.exit_code, 2) << bad_key.out << bad_key.err;

  const auto other = cli({"audit", "verify", "--key", nkeys::encodePublicKey(nkeys::publicKeyOf(nkeys::generateSeed()))});
  EXPECT_EQ(other.exit_code, 1) << other.out << other.err;
  EXPECT_TRUE(contains(other.err, "signed by an unknown key " + countersignKey())) << other.err;

  // The config's seed file names the key: --config is enough.
  const auto by_config = cli({"audit", "verify", "--config", (countersign_->dir() / "countersign.yaml").string()});
  EXPECT_EQ(by_config.exit_code, 0) << by_config.out << by_config.err;
}

// Events shown to people are checked too: `audit ID` and the console's timeline (the REST
// evidence) mark each event by its signature, so that what a publisher on the events subjects
// forged is never shown as genuine, and a forged `held` does not end the timeline early.
TEST_F(AuditTamperTest, ForgedEventsAreMarkedInAuditIdAndInTheConsoleTimeline) {
  forgeThreeEvents();
  ASSERT_FALSE(HasFatalFailure());

  // audit ID --json: every event with signature_check and stream_seq.
  const auto as_json = cli({"audit", "pay-tamper-1", "--key", countersignKey(), "--json"});
  ASSERT_EQ(as_json.exit_code, 0) << as_json.out << as_json.err;
  std::vector<std::string> checks;
  for (const auto& row : lines(as_json.out)) {
    const auto event = parseJson(row);
    checks.push_back(str(event, "event") + ":" + str(event, "signature_check"));
    EXPECT_GE(num(event, "stream_seq"), 1) << row;
  }
  EXPECT_EQ(checks, (std::vector<std::string>{"held:verified", "approved:verified", "released:verified",
                                              "held:unsigned", "approved:unknown_key", "released:bad_signature"}))
      << as_json.out;
  EXPECT_TRUE(contains(as_json.err, "3 of 6 events of pay-tamper-1 are not verified")) << as_json.err;

  // In words: the first column says it.
  const auto table = cli({"audit", "pay-tamper-1", "--key", countersignKey()});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_TRUE(std::regex_search(table.out, std::regex(R"(\nunsigned +\S+ +held +countersign +forged-unsigned)")))
      << table.out;
  EXPECT_TRUE(std::regex_search(table.out, std::regex(R"(\nunknown_key +\S+ +approved +mallory )"))) << table.out;
  EXPECT_TRUE(std::regex_search(table.out, std::regex(R"(\nbad_signature +\S+ +released +mallory-)"))) << table.out;
  EXPECT_TRUE(std::regex_search(table.out, std::regex(R"(\nverified +\S+ +released +alice)"))) << table.out;

  // Without a key nothing can be verified: said, and every event is not_checked or unsigned.
  const auto no_key = cli({"audit", "pay-tamper-1"});
  ASSERT_EQ(no_key.exit_code, 0) << no_key.err;
  EXPECT_TRUE(contains(no_key.err, "no countersign public key")) << no_key.err;
  EXPECT_FALSE(contains(no_key.out, "verified")) << no_key.out;
  // The config's seed file is enough.
  const auto by_config =
      cli({"audit", "pay-tamper-1", "--json", "--config", (countersign_->dir() / "countersign.yaml").string()});
  std::size_t verified_rows = 0;
  for (const auto& row : lines(by_config.out)) verified_rows += str(parseJson(row), "signature_check") == "verified";
  EXPECT_EQ(verified_rows, 3u) << by_config.out;

  // The console's timeline (GET .../evidence): the same marks, every event there (the forged
  // `held`, newest, does not end the read-back before the genuine events).
  const HttpReply evidence = get("/api/v1/approvals/pay-tamper-1/evidence", kReaderToken);
  ASSERT_EQ(evidence.status, 200) << evidence.body;
  const auto doc = parseJson(evidence.body);
  ASSERT_TRUE(doc.HasMember("timeline") && doc["timeline"].IsArray()) << evidence.body;
  std::vector<std::string> timeline;
  for (const auto& event : doc["timeline"].GetArray()) {
    timeline.push_back(str(event, "event") + ":" + str(event, "signature_check"));
  }
  EXPECT_EQ(timeline, checks) << evidence.body;
}

// `watch` in words marks what countersign's key does not verify; the genuine events are not marked.
TEST_F(OperateTest, WatchMarksEventsCountersignDidNotSign) {
  auto watched = std::async(std::launch::async, [&] {
    return cli({"watch", "--count", "3", "--timeout-ms", "15000", "--key", countersignKey()});
  });
  std::this_thread::sleep_for(1s);
  client_->publish("countersign.events.approved.finance.payment.execute",
                   R"({"event":"approved","approval_id":"pay-watch-1","topic":"finance.payment.execute",)"
                   R"("actor":"mallory","at":"2024-01-01T00:00:00Z"})");
  client_->flush();
  std::this_thread::sleep_for(300ms);
  hold("pay-watch-2");
  ASSERT_EQ(cli({"approve", "pay-watch-2", "--as", "alice"}).exit_code, 0);
  const CommandResult watch = watched.get();
  ASSERT_EQ(watch.exit_code, 0) << watch.out << watch.err;
  const auto rows = lines(watch.out);
  ASSERT_EQ(rows.size(), 3u) << watch.out;
  EXPECT_TRUE(contains(rows[0], "pay-watch-1") && contains(rows[0], "[NOT VERIFIED: unsigned]")) << watch.out;
  EXPECT_TRUE(contains(rows[1], "pay-watch-2") && !contains(rows[1], "NOT VERIFIED")) << watch.out;
  EXPECT_FALSE(contains(rows[2], "NOT VERIFIED")) << watch.out;
}

// The audit stream exists before countersign starts, without deny-delete: countersign binds to
// it as it is, and a message deleted from the middle of a chain is found by verify.
class ExistingAuditStreamTest : public OperateTest {
 protected:
  void beforeStart() override { client_->addStream(kAuditStream, {"countersign.events.>"}); }
};

TEST_F(ExistingAuditStreamTest, DeletedMiddleEventFailsVerify) {
  EXPECT_FALSE(streamDeniesDelete(*client_, kAuditStream)) << "countersign edited the stream";
  for (const char* id : {"pay-del-1", "pay-del-2", "pay-del-3"}) hold(id);
  // Three held events on one chain (the control connection's), seq 1..3 (core publishes the
  // stream captures).
  std::map<std::int64_t, StoredMessage> intake;
  std::string chain;
  ASSERT_TRUE(eventually(
      [&] {
        intake.clear();
        for (const auto& e : readStream(*client_, kAuditStream)) {
          rapidjson::Document doc;
          doc.Parse(e.msg.payload.data(), e.msg.payload.size());
          if (doc.HasParseError() || !doc.IsObject() || str(doc, "event") != "held") continue;
          chain = str(doc, "chain");
          intake[num(doc, "seq")] = e;
        }
        return intake.size() >= 3;
      },
      10s))
      << "held events stored: " << intake.size();
  ASSERT_TRUE(intake.contains(2) && intake.contains(3)) << "held events are not seq 1..3";
  EXPECT_TRUE(chain.ends_with("-control")) << chain;  // held events go out with the answers

  const auto before = auditVerify();
  ASSERT_EQ(before.exit_code, 0) << before.out << before.err;

  jsErrCode code{};
  ASSERT_EQ(js_DeleteMsg(client_->js(), kAuditStream, intake[2].sequence, nullptr, &code), NATS_OK);
  const auto after = auditVerify();
  EXPECT_EQ(after.exit_code, 1) << after.out << after.err;
  EXPECT_TRUE(contains(after.err, "chain " + chain + " seq 3")) << after.err;
  EXPECT_TRUE(contains(after.err, "missing")) << after.err;
}

// === 4. logs =================================================================================

// Every line of `text` that is not blank, as the failure message shows it.
std::vector<std::string> nonBlankLines(const std::string& text) {
  std::vector<std::string> out;
  for (auto& line : lines(text)) {
    if (line.find_first_not_of(" \t\r") != std::string::npos) out.push_back(line);
  }
  return out;
}

TEST_F(OperateTest, LogsAreJsonLinesAndCarryNoPayloadOrToken) {
  const std::string marker = "PAYLOAD-MARKER-c0ffee-7d1c0f2e";
  Collector jobs(*client_, "jobs.>");
  // A held job, approved; the same id with other content (conflict); an allowed job; a denied
  // job; a job with a reply subject countersign must not answer on: all carrying the marker.
  hold("pay-log-1", R"("memo":")" + marker + R"(")");
  auto conflict = client_->request(
      kPaymentSubject, payment("pay-log-1", R"("memo":")" + marker + R"(-other")"), {}, 10s);
  ASSERT_TRUE(conflict.has_value());
  EXPECT_EQ(str(parseJson(conflict->payload), "status"), "conflict") << conflict->payload;
  client_->publish("agents.jobs.knowledge.read", R"({"memo":")" + marker + R"("})");
  auto denied = client_->request(
      kPaymentSubject, R"({"labels":{"env":"staging"},"memo":")" + marker + R"("})", {}, 10s);
  ASSERT_TRUE(denied.has_value());
  EXPECT_EQ(str(parseJson(denied->payload), "status"), "denied");
  client_->publish(kPaymentSubject, R"({"labels":{"env":"staging"},"memo":")" + marker + R"("})",
                   {}, "not.an.inbox");
  client_->flush();
  const auto bad_token = curl({"-X", "POST", api_ + "/api/v1/approvals/pay-log-1/approve", "-H",
                               "Authorization: Bearer WRONG-TOKEN-marker-51d2"});
  EXPECT_EQ(bad_token.status, 401);
  const auto approved =
      curl({"-X", "POST", api_ + "/api/v1/approvals/pay-log-1/approve", "-H",
            std::string("Authorization: Bearer ") + kAliceToken, "-d", R"({"reason":"ok"})"});
  EXPECT_EQ(approved.status, 200) << approved.body;
  ASSERT_EQ(jobs.waitFor(2, 10s).size(), 2u);
  // Stopped (exit 0 with its server up), so that every line it would write is written.
  EXPECT_EQ(countersign_->stop(), 0);
  const std::string err = readFile(countersign_->dir() / "stderr.log");
  EXPECT_TRUE(contains(err, "\"msg\":\"stopped\"")) << err;
  EXPECT_TRUE(contains(err, "admin API decision")) << err;

  const auto log_lines = nonBlankLines(err);
  ASSERT_GE(log_lines.size(), 2u) << err;
  bool saw_ready = false;
  for (const auto& line : log_lines) {
    rapidjson::Document doc;
    doc.Parse(line.data(), line.size());
    ASSERT_FALSE(doc.HasParseError()) << "not JSON: " << line;
    ASSERT_TRUE(doc.IsObject()) << "not an object: " << line;
    ASSERT_TRUE(doc.HasMember("level") && doc["level"].IsString()) << line;
    ASSERT_TRUE(doc.HasMember("msg") && doc["msg"].IsString()) << line;
    ASSERT_TRUE(doc.HasMember("ts") && doc["ts"].IsString()) << line;
    const std::string level = doc["level"].GetString();
    EXPECT_TRUE(level == "debug" || level == "info" || level == "warn" || level == "error") << line;
    saw_ready = saw_ready || std::string(doc["msg"].GetString()) == "ready";
  }
  EXPECT_TRUE(saw_ready) << err;

  const std::string all = countersign_->logs();
  EXPECT_FALSE(contains(all, "c0ffee-7d1c0f2e")) << "payload bytes in the logs:\n" << all;
  EXPECT_FALSE(contains(all, kAliceToken)) << "a token in the logs:\n" << all;
  EXPECT_FALSE(contains(all, kReaderToken)) << "a token in the logs:\n" << all;
  EXPECT_FALSE(contains(all, "WRONG-TOKEN-marker-51d2")) << "a bearer value in the logs:\n" << all;
}

// `countersign run --log-format text`, started by hand (the harness starts the default format).
TEST(OperateLogFormatTest, TextFormatIsNotJson) {
  auto server = NatsServer::start();
  TempDir dir;
  const fs::path config = dir.write("countersign.yaml", operateConfig(server->url()));
  dir.write("policy.yaml", seedPolicy());
  natsio::SpawnOptions spawn;
  spawn.argv = {COUNTERSIGN_BIN, "run",  "--config",    config.string(),
                "--log-format",  "text", "--log-level", "debug"};
  spawn.working_dir = dir.path().string();
  spawn.stdout_path = (dir.path() / "stdout.log").string();
  spawn.stderr_path = (dir.path() / "stderr.log").string();
  spawn.death_signal = SIGKILL;
  auto pid = natsio::spawnProcess(spawn);
  ASSERT_TRUE(pid.has_value()) << pid.error().message;
  struct Reaper {
    pid_t pid;
    ~Reaper() {
      if (pid > 0) natsio::stopProcess(pid, 15s);
    }
  } reaper{*pid};

  const fs::path err_path = dir.path() / "stderr.log";
  std::string err;
  ASSERT_TRUE(eventually(
      [&] {
        err = readFile(err_path);
        return contains(err, " ready ") || natsio::waitProcess(*pid, 0ms).has_value();
      },
      20s))
      << err;
  ASSERT_TRUE(contains(err, " ready ")) << "not ready:\n"
                                        << err << readFile(dir.path() / "stdout.log");

  // Some activity, so that more than the start is logged.
  Client client(server->url());
  const std::string marker = "TEXT-MARKER-b16b00b5";
  auto held = client.request(kPaymentSubject, payment("pay-text-1", R"("memo":")" + marker + "\""),
                             {}, 10s);
  ASSERT_TRUE(held.has_value());
  EXPECT_EQ(str(parseJson(held->payload), "status"), "approval_required");
  auto approved = client.request("countersign.control.approve",
                                 R"({"id":"pay-text-1","approver":"alice"})", {}, 10s);
  ASSERT_TRUE(approved.has_value());

  EXPECT_EQ(natsio::stopProcess(*pid, 15s), 0);
  reaper.pid = -1;
  err = readFile(err_path);
  const auto log_lines = nonBlankLines(err);
  ASSERT_GE(log_lines.size(), 2u) << err;
  for (const auto& line : log_lines) {
    rapidjson::Document doc;
    doc.Parse(line.data(), line.size());
    EXPECT_TRUE(doc.HasParseError() || !doc.IsObject()) << "JSON in text mode: " << line;
    EXPECT_NE(line.front(), '{') << line;
  }
  EXPECT_TRUE(std::regex_search(err, std::regex(R"((^|\n)\S+ info ready )"))) << err;
  EXPECT_TRUE(contains(err, "stopped")) << err;
  EXPECT_FALSE(contains(err + readFile(dir.path() / "stdout.log"), "b16b00b5"))
      << "payload bytes in the logs";
}

}  // namespace
}  // namespace countersign::testing
