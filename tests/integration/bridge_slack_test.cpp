// The Slack bridge end to end: a real nats-server, the real gateway (`countersign run`), the
// real bridge (`countersign bridge`) and a fake Slack (tests/fake_slack: HTTPS and WSS with a
// CA made for the test) that records every Web API call and plays clicks.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "bridge/core/signatures.hpp"
#include "countersign/json.hpp"
#include "countersign/nkeys.hpp"
#include "integration/harness/harness.hpp"
#include "nats/child_process.hpp"

namespace countersign::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr const char* kPolicy = R"(version: v1
rules:
  - id: hold-payments
    when: { topic: finance.payment.execute }
    decision: require_human
  - id: hold-ops
    when: { topic: ops.> }
    decision: require_human
)";

struct HttpAnswer {
  int status = 0;
  std::string body;
};

// A plain HTTP/1.1 request on loopback (the fake's control API, the bridge's endpoints).
HttpAnswer httpCall(int port, const std::string& method, const std::string& path, const std::string& body = "",
                    const std::vector<std::string>& headers = {}) {
  HttpAnswer answer;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{30, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return answer;
  }
  std::string request = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  for (const auto& h : headers) request += h + "\r\n";
  request += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  std::size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<std::size_t>(n);
  }
  std::string response;
  char buffer[8192];
  while (true) {
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) break;
    response.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  if (response.size() > 12) answer.status = std::stoi(response.substr(9, 3));
  const std::size_t end = response.find("\r\n\r\n");
  if (end != std::string::npos) answer.body = response.substr(end + 4);
  return answer;
}

rapidjson::Document parse(const std::string& text) {
  auto doc = json::parseStrict(text);
  if (!doc) {
    ADD_FAILURE() << "not JSON: " << text.substr(0, 300);
    rapidjson::Document empty;
    empty.SetObject();
    return empty;
  }
  return std::move(*doc);
}

std::string str(const rapidjson::Value& v, const char* name) {
  if (!v.IsObject()) return {};
  const auto it = v.FindMember(name);
  return it != v.MemberEnd() && it->value.IsString() ? it->value.GetString() : "";
}

class FakeSlack {
 public:
  FakeSlack() {
    auto node = natsio::findExecutable("node");
    if (!node) throw std::runtime_error("node not found");
    natsio::SpawnOptions options;
    options.argv = {*node, std::string(COUNTERSIGN_SOURCE_DIR) + "/tests/fake_slack/fake_slack.js", dir_.path().string()};
    options.stdout_path = (dir_.path() / "fake.log").string();
    options.stderr_path = options.stdout_path;
    auto pid = natsio::spawnProcess(options);
    if (!pid) throw std::runtime_error(pid.error().message);
    pid_ = *pid;
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (!fs::exists(dir_.path() / "ports.json")) {
      if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("fake slack did not start");
      std::this_thread::sleep_for(50ms);
    }
    std::ifstream in(dir_.path() / "ports.json");
    std::stringstream text;
    text << in.rdbuf();
    const auto ports = parse(text.str());
    api_ = ports["api"].GetInt();
    control_ = ports["control"].GetInt();
  }
  ~FakeSlack() { natsio::stopProcess(pid_, 5s); }

  std::string hookUrl() const { return "http://127.0.0.1:" + std::to_string(control_) + "/hook"; }
  std::string apiUrl() const { return "https://127.0.0.1:" + std::to_string(api_) + "/api"; }
  std::string caFile() const { return (dir_.path() / "ca.pem").string(); }

  // Calls of one Web API method, in order.
  std::vector<std::string> calls(const std::string& method) {
    std::vector<std::string> out;
    const auto doc = parse(httpCall(control_, "GET", "/calls").body);
    for (const auto& call : doc.GetArray()) {
      if (str(call, "method") == method) out.push_back(json::toString(call));
    }
    return out;
  }
  // Waits until `method` was called at least `count` times; returns the calls.
  std::vector<std::string> waitCalls(const std::string& method, std::size_t count, std::chrono::milliseconds timeout = 20s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      auto got = calls(method);
      if (got.size() >= count || std::chrono::steady_clock::now() > deadline) return got;
      std::this_thread::sleep_for(100ms);
    }
  }
  HttpAnswer control(const std::string& method, const std::string& path, const std::string& body = "") {
    return httpCall(control_, method, path, body);
  }
  rapidjson::Document socketState() { return parse(control("GET", "/socket").body); }
  // The webhook deliveries the fake received, once there are at least n (or `within` passed).
  rapidjson::Document waitHooks(rapidjson::SizeType n, std::chrono::milliseconds within) {
    const auto deadline = std::chrono::steady_clock::now() + within;
    rapidjson::Document hooks = parse(control("GET", "/hooks").body);
    while (hooks.Size() < n && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      hooks = parse(control("GET", "/hooks").body);
    }
    return hooks;
  }
  bool waitSocketHellos(int n, std::chrono::milliseconds timeout = 20s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      const auto s = socketState();
      if (s["hellos"].GetInt() >= n && s["connected"].GetInt() >= 1) return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }

 private:
  TempDir dir_;
  int pid_ = -1;
  int api_ = 0;
  int control_ = 0;
};

class BridgeProcess {
 public:
  BridgeProcess(const fs::path& dir, const std::string& config_name) {
    natsio::SpawnOptions options;
    options.argv = {COUNTERSIGN_BIN, "bridge", "--config", (dir / config_name).string()};
    options.env = std::vector<std::string>{"SLACK_BOT_TOKEN=xoxb-fake", "SLACK_APP_TOKEN=xapp-fake", "HOOK_SECRET=hook-secret",
                                           "SLACK_SIGNING_SECRET=test-signing-secret", "PATH=/usr/bin:/bin"};
    log_ = dir / (config_name + "." + std::to_string(++starts_) + ".log");
    options.stdout_path = log_.string();
    options.stderr_path = log_.string();
    auto pid = natsio::spawnProcess(options);
    if (!pid) throw std::runtime_error(pid.error().message);
    pid_ = *pid;
  }
  ~BridgeProcess() {
    if (pid_ > 0) natsio::stopProcess(pid_, 10s);
  }
  int stop() {
    const int status = natsio::stopProcess(pid_, 15s);
    pid_ = -1;
    return status;
  }
  void kill9() {
    ::kill(pid_, SIGKILL);
    natsio::waitProcess(pid_, 10s);
    pid_ = -1;
  }
  std::string logs() const {
    std::ifstream in(log_);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
  // The port printed on the ready line after `marker` (e.g. "127.0.0.1:" or "admin port ").
  int printedPort(const std::string& marker, std::chrono::milliseconds timeout = 20s) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      const std::string text = logs();
      const std::size_t ready = text.find("countersign bridge ready");
      if (ready != std::string::npos) {
        const std::size_t at = text.find(marker, ready);
        if (at != std::string::npos) return std::stoi(text.substr(at + marker.size()));
      }
      std::this_thread::sleep_for(50ms);
    }
    return 0;
  }

 private:
  static inline int starts_ = 0;
  int pid_ = -1;
  fs::path log_;
};

class BridgeSlackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto seed = nkeys::generateSeed();
    ASSERT_TRUE(nkeys::writeSeedFile((dir_.path() / "slack.nk").string(), seed));
    channel_key_ = nkeys::encodePublicKey(nkeys::publicKeyOf(seed));
    nats_ = NatsServer::start();
    CountersignOptions options;
    options.config_yaml = basicConfig(nats_->url(), approvers());
    options.policy_yaml = kPolicy;
    options.nats_url = nats_->url();
    gateway_ = CountersignProcess::start(options);
    client_ = std::make_unique<Client>(nats_->url());
  }

  // The same registry for the gateway and the bridge: alice and bob on Slack, carol and dave
  // elsewhere, and the bridge's channel key.
  std::string approvers() const {
    return "approvers:\n  people:\n    - { name: alice, slack: U024BE7LH }\n    - { name: bob, slack: U0BOB }\n"
           "    - { name: carol }\n    - { name: dave }\n"
           "  channels:\n    - { name: slack, keys: [\"" + channel_key_ + "\"], may_act_for: [\"*\"] }\n";
  }

  std::string bridgeConfig(const std::string& mode, const std::string& extra = "") const {
    return "nats:\n  servers: [\"" + nats_->url() + "\"]\n" +
           "admin:\n  listen: \"127.0.0.1:0\"\n"
           "slack:\n  api_url: " + slack_.apiUrl() + "\n  ca_file: " + slack_.caFile() +
           "\n  mode: " + mode + "\n  listen: \"127.0.0.1:0\"\n  key_file: slack.nk\n  backfill: 1h\n"
           "  channels:\n    - { topics: [\"finance.>\"], channel: C0FINANCE }\n    - { topics: [\">\"], channel: C0APPROVALS }\n" +
           extra + "audit:\n  public_key: \"" + gateway_->receiptKey() + "\"\n" + approvers();
  }

  std::unique_ptr<BridgeProcess> startBridge(const std::string& mode = "socket", const std::string& extra = "") {
    dir_.write("bridge-" + mode + ".yaml", bridgeConfig(mode, extra));
    return std::make_unique<BridgeProcess>(dir_.path(), "bridge-" + mode + ".yaml");
  }

  // Holds a job; returns its approval id.
  std::string hold(const std::string& id, const std::string& topic = "finance.payment.execute",
                   const std::string& payload = R"({"amount":120,"to":"acme"})") {
    auto reply = client_->request("agents.jobs." + topic, payload, {{"Nats-Msg-Id", {id}}}, 10s);
    EXPECT_TRUE(reply) << "no answer to the hold";
    if (!reply) return {};
    const auto doc = parse(reply->payload);
    EXPECT_EQ(str(doc, "status"), "approval_required") << reply->payload;
    return str(doc, "approval_id");
  }

  // Holds a job and waits for its post (the `nth` post in all); returns its button value.
  // An interactivity payload (a click or a dialog's submission), sent as a Socket Mode envelope.
  void sendOverSocket(const std::string& payload) {
    slack_.control("POST", "/socket/send", R"({"payload":)" + payload + "}");
  }

  std::string holdAndWaitForPost(const std::string& id, std::size_t nth = 1) {
    hold(id);
    const auto posts = slack_.waitCalls("chat.postMessage", nth);
    if (posts.size() < nth) {
      ADD_FAILURE() << "job " << id << " was not posted";
      return {};
    }
    return buttonValue(body(posts[nth - 1]));
  }

  rapidjson::Document control(const std::string& verb, const std::string& body) {
    auto reply = client_->request("countersign.control." + verb, body, {}, 10s);
    EXPECT_TRUE(reply);
    return parse(reply ? reply->payload : "{}");
  }

  std::string state(const std::string& id) {
    const auto doc = control("get", R"({"id":")" + id + R"("})");
    return doc.HasMember("record") ? str(doc["record"], "state") : "";
  }

  // The JSON body a recorded call carried.
  static rapidjson::Document body(const std::string& call) { return parse(json::toString(parse(call)["body"])); }

  static bool hasActions(const rapidjson::Value& message) {
    for (const auto& block : message["blocks"].GetArray()) {
      if (str(block, "type") == "actions") return true;
    }
    return false;
  }

  static std::string buttonValue(const rapidjson::Value& message) {
    for (const auto& block : message["blocks"].GetArray()) {
      if (str(block, "type") == "actions") return str(block["elements"][0], "value");
    }
    return {};
  }

  std::string clickPayload(const std::string& action, const std::string& id, const std::string& value,
                           const std::string& user = "U0UNKNOWN", const std::string& trigger_id = "") {
    std::string value_literal;
    json::appendJsonString(value_literal, value);
    return R"({"type":"block_actions",)" + (trigger_id.empty() ? std::string() : R"("trigger_id":")" + trigger_id + R"(",)") +
           R"("user":{"id":")" + user +
           R"(","username":"someone"},"container":{"type":"message","message_ts":"1700000000.000001","channel_id":"C0FINANCE"},"actions":[{"type":"button","action_id":")" +
           action + R"(","block_id":"countersign:)" + id + R"(","value":)" + value_literal + "}]}";
  }

  TempDir dir_;
  FakeSlack slack_;
  std::unique_ptr<NatsServer> nats_;
  std::unique_ptr<CountersignProcess> gateway_;
  std::unique_ptr<Client> client_;
  std::string channel_key_;
};

TEST_F(BridgeSlackTest, HeldJobIsPostedOnceWithTheEvidenceAndButtons) {
  auto bridge = startBridge();
  const std::string id = hold("pay-1");
  const auto posts = slack_.waitCalls("chat.postMessage", 1);
  ASSERT_EQ(posts.size(), 1u) << bridge->logs();
  const auto message = body(posts[0]);
  EXPECT_EQ(str(message, "channel"), "C0FINANCE");
  EXPECT_TRUE(hasActions(message));
  const auto value = parse(buttonValue(message));
  EXPECT_EQ(str(value, "id"), id);
  const auto record = control("get", R"({"id":")" + id + R"("})");
  EXPECT_EQ(str(value, "job_hash"), str(record["record"], "job_hash"));
  EXPECT_EQ(str(value, "policy_snapshot"), str(record["record"], "policy_snapshot"));
  const std::string text = json::toString(message["blocks"]);
  EXPECT_NE(text.find("*Topic*\\nfinance.payment.execute"), std::string::npos) << text;
  EXPECT_NE(text.find("*Rule*\\nhold-payments"), std::string::npos) << text;
  EXPECT_NE(text.find("{\\\"amount\\\":120,\\\"to\\\":\\\"acme\\\"}"), std::string::npos) << text;
  // The post is recorded under <id>/slack/<channel>/<binding>.
  const auto key = client_->kvGet("countersign_approvals", id + "/slack/C0FINANCE/0");
  ASSERT_TRUE(key);
  EXPECT_FALSE(str(parse(*key), "ts").empty());

  // A restart (the durable redelivers nothing new; a redelivery would find the key): still one post.
  EXPECT_EQ(bridge->stop(), 0) << bridge->logs();
  bridge = startBridge();
  ASSERT_TRUE(slack_.waitSocketHellos(2));
  hold("ops-1", "ops.restart");
  EXPECT_EQ(slack_.waitCalls("chat.postMessage", 2).size(), 2u);
  std::this_thread::sleep_for(1s);
  const auto all = slack_.calls("chat.postMessage");
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(str(body(all[1]), "channel"), "C0APPROVALS");
}

// Anyone who may publish on countersign.events.> can put a message into the audit stream. The
// bridge acts only on events countersign's key verifies: a forged `held` naming a real pending
// job under another topic would otherwise post it into another channel (with buttons), and a
// forged `vote` would show a vote nobody cast.
TEST_F(BridgeSlackTest, ForgedEventsPostNothingAndUpdateNothing) {
  Collector held(*client_, "countersign.events.held.>");
  auto bridge = startBridge();
  const std::string id = hold("ops-forged-1", "ops.restart");
  ASSERT_EQ(slack_.waitCalls("chat.postMessage", 1).size(), 1u) << bridge->logs();
  const auto genuine = held.waitFor(1);
  ASSERT_EQ(genuine.size(), 1u);
  const std::string* real_signature = findHeader(genuine[0].headers, "Countersign-Event-Signature");
  const std::string* real_key = findHeader(genuine[0].headers, "Countersign-Event-Key");
  ASSERT_TRUE(real_signature != nullptr && real_key != nullptr) << "the genuine event is signed";
  EXPECT_EQ(*real_key, gateway_->receiptKey());

  // The same event, moved to a topic the finance channel gets.
  auto forged_doc = parse(genuine[0].payload);
  forged_doc["topic"].SetString("finance.payment.execute", forged_doc.GetAllocator());
  const std::string forged = json::toString(forged_doc);
  const std::string subject = "countersign.events.held.finance.payment.execute";
  const auto attacker = nkeys::generateSeed();
  client_->publish(subject, forged);                                               // unsigned
  client_->publish(subject, forged, {{"Countersign-Event-Signature", *real_signature},  // the real signature
                                     {"Countersign-Event-Key", *real_key}});           // over other bytes
  client_->publish(subject, forged,
                   {{"Countersign-Event-Signature", nkeys::base64UrlEncode(nkeys::sign(attacker, forged))},
                    {"Countersign-Event-Key", nkeys::encodePublicKey(nkeys::publicKeyOf(attacker))}});
  const std::string vote = R"({"event":"vote","approval_id":")" + id +
                           R"(","topic":"ops.restart","actor":"mallory","at":"2026-01-01T00:00:00Z"})";
  client_->publish("countersign.events.vote.ops.restart", vote);
  client_->flush();

  // A genuine job after them: once it is posted, the bridge has handled the forged ones (one
  // consumer, in stream order).
  hold("pay-after-forged");
  ASSERT_EQ(slack_.waitCalls("chat.postMessage", 2).size(), 2u) << bridge->logs();
  std::this_thread::sleep_for(500ms);
  const auto posts = slack_.calls("chat.postMessage");
  ASSERT_EQ(posts.size(), 2u) << "a forged event made a post";
  EXPECT_EQ(str(body(posts[0]), "channel"), "C0APPROVALS");
  EXPECT_EQ(slack_.calls("chat.update").size(), 0u) << "a forged event updated a message";
  EXPECT_FALSE(client_->kvGet("countersign_approvals", id + "/slack/C0FINANCE/0")) << "claimed a post in another channel";

  const int admin = bridge->printedPort("admin port ");
  ASSERT_GT(admin, 0) << bridge->logs();
  const std::string metrics = httpCall(admin, "GET", "/metrics").body;
  EXPECT_NE(metrics.find(R"(countersign_bridge_events_refused_total{signature_check="unsigned"} 2)"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find(R"(countersign_bridge_events_refused_total{signature_check="bad_signature"} 1)"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find(R"(countersign_bridge_events_refused_total{signature_check="unknown_key"} 1)"),
            std::string::npos)
      << metrics;
  EXPECT_NE(bridge->logs().find("ignoring an event countersign did not sign"), std::string::npos);
}

TEST_F(BridgeSlackTest, ABridgeWithoutCountersignsKeyDoesNotStart) {
  // No audit.public_key, and no seed file where receipts.seed_file points: refused, with the key
  // to set. A malformed key is refused by the config check.
  dir_.write("nokey.yaml", "nats:\n  servers: [\"" + nats_->url() + "\"]\nreceipts:\n  seed_file: absent.nk\n" +
                               "notify:\n  webhooks: []\n");
  const auto no_key = runCountersign({"bridge", "--config", (dir_.path() / "nokey.yaml").string(), "--check"});
  EXPECT_EQ(no_key.exit_code, 2) << no_key.out << no_key.err;
  EXPECT_NE(no_key.err.find("audit.public_key"), std::string::npos) << no_key.err;
  dir_.write("badkey.yaml", "nats:\n  servers: [\"" + nats_->url() + "\"]\naudit:\n  public_key: UNOTAKEY\n" +
                                "notify:\n  webhooks: []\n");
  const auto bad_key = runCountersign({"bridge", "--config", (dir_.path() / "badkey.yaml").string(), "--check"});
  EXPECT_EQ(bad_key.exit_code, 2) << bad_key.out << bad_key.err;
  EXPECT_NE(bad_key.err.find("audit.public_key"), std::string::npos) << bad_key.err;
  dir_.write("goodkey.yaml", "nats:\n  servers: [\"" + nats_->url() + "\"]\nreceipts:\n  seed_file: absent.nk\n" +
                                 "audit:\n  public_key: \"" + gateway_->receiptKey() + "\"\nnotify:\n  webhooks: []\n");
  const auto good = runCountersign({"bridge", "--config", (dir_.path() / "goodkey.yaml").string(), "--check"});
  EXPECT_EQ(good.exit_code, 0) << good.out << good.err;
  EXPECT_NE(good.out.find(gateway_->receiptKey()), std::string::npos) << good.out;
}

TEST_F(BridgeSlackTest, ABridgeThatWasDownPostsWhatWasHeldMeanwhile) {
  const std::string first = hold("early-1");
  const std::string second = hold("early-2", "ops.deploy");
  auto bridge = startBridge();
  const auto posts = slack_.waitCalls("chat.postMessage", 2);
  ASSERT_EQ(posts.size(), 2u) << bridge->logs();
}

TEST_F(BridgeSlackTest, TwoReplicasAndAKilledBridgePostEachJobOnce) {
  auto a = startBridge();
  auto b = startBridge();
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(hold("rep-" + std::to_string(i)));
  ASSERT_EQ(slack_.waitCalls("chat.postMessage", 6).size(), 6u) << a->logs() << b->logs();
  a->kill9();
  for (int i = 6; i < 10; ++i) ids.push_back(hold("rep-" + std::to_string(i)));
  ASSERT_EQ(slack_.waitCalls("chat.postMessage", 10).size(), 10u) << b->logs();
  auto c = startBridge();
  std::this_thread::sleep_for(3s);
  const auto posts = slack_.calls("chat.postMessage");
  EXPECT_EQ(posts.size(), 10u);
  std::set<std::string> posted;
  for (const auto& call : posts) posted.insert(str(parse(buttonValue(body(call))), "id"));
  EXPECT_EQ(posted.size(), 10u);
}

TEST_F(BridgeSlackTest, ADecisionMadeElsewhereRemovesTheButtons) {
  auto bridge = startBridge();
  const std::string approved = hold("cli-1");
  const std::string rejected = hold("cli-2");
  ASSERT_EQ(slack_.waitCalls("chat.postMessage", 2).size(), 2u) << bridge->logs();
  EXPECT_EQ(str(control("approve", R"({"id":")" + approved + R"(","approver":"carol"})"), "status"), "approved");
  EXPECT_EQ(str(control("reject", R"({"id":")" + rejected + R"(","approver":"dave","reason":"no"})"), "status"), "rejected");
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  bool approved_done = false;
  bool rejected_done = false;
  while (std::chrono::steady_clock::now() < deadline && !(approved_done && rejected_done)) {
    for (const auto& call : slack_.calls("chat.update")) {
      const auto update = body(call);
      const std::string text = json::toString(update["blocks"]);
      if (hasActions(update)) continue;
      if (text.find("Approved by carol") != std::string::npos && text.find("released") != std::string::npos) approved_done = true;
      if (text.find("Rejected by dave") != std::string::npos) rejected_done = true;
    }
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(approved_done) << bridge->logs();
  EXPECT_TRUE(rejected_done) << bridge->logs();
}

TEST_F(BridgeSlackTest, RateLimitedPostIsRetriedAfterRetryAfter) {
  slack_.control("POST", "/fail", R"({"method":"chat.postMessage","error":"ratelimited","status":429,"retry_after":2,"times":1})");
  auto bridge = startBridge();
  hold("rl-1");
  const auto posts = slack_.waitCalls("chat.postMessage", 2, 30s);
  ASSERT_EQ(posts.size(), 2u) << bridge->logs();
  const auto first = parse(posts[0]);
  const auto second = parse(posts[1]);
  EXPECT_GE(second["at_ms"].GetInt64() - first["at_ms"].GetInt64(), 1900);
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(slack_.calls("chat.postMessage").size(), 2u);
  // Slack's other way to say it: HTTP 200 with {"ok":false,"error":"ratelimited"} and Retry-After.
  slack_.control("POST", "/fail", R"({"method":"chat.postMessage","error":"ratelimited","retry_after":2,"times":1})");
  hold("rl-2");
  const auto again = slack_.waitCalls("chat.postMessage", 4, 30s);
  ASSERT_EQ(again.size(), 4u) << bridge->logs();
  EXPECT_GE(parse(again[3])["at_ms"].GetInt64() - parse(again[2])["at_ms"].GetInt64(), 1900);
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(slack_.calls("chat.postMessage").size(), 4u);
}

TEST_F(BridgeSlackTest, TransientSlackErrorsAreRetriedAndOthersGivenUpAndCounted) {
  auto bridge = startBridge();
  const int admin = bridge->printedPort("admin port ");
  ASSERT_GT(admin, 0) << bridge->logs();
  // A transient error: tried again after the backoff (1 s), then posted.
  slack_.control("POST", "/fail", R"({"method":"chat.postMessage","error":"internal_error","times":1})");
  hold("err-1");
  const auto retried = slack_.waitCalls("chat.postMessage", 2, 20s);
  ASSERT_EQ(retried.size(), 2u) << bridge->logs();
  EXPECT_GE(parse(retried[1])["at_ms"].GetInt64() - parse(retried[0])["at_ms"].GetInt64(), 900);
  // An error retrying cannot fix: given up at once, logged and counted; the next job is posted.
  slack_.control("POST", "/fail", R"({"method":"chat.postMessage","error":"channel_not_found","times":1})");
  hold("err-2");
  ASSERT_EQ(slack_.waitCalls("chat.postMessage", 3, 20s).size(), 3u) << bridge->logs();
  hold("err-3");
  ASSERT_EQ(slack_.waitCalls("chat.postMessage", 4, 20s).size(), 4u) << bridge->logs();
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(slack_.calls("chat.postMessage").size(), 4u);
  const std::string metrics = httpCall(admin, "GET", "/metrics").body;
  EXPECT_NE(metrics.find("countersign_bridge_failures_total 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find(R"(countersign_bridge_slack_api_errors_total{method="chat.postMessage",error="channel_not_found"} 1)"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("countersign_bridge_slack_posts_total 2"), std::string::npos) << metrics;
  EXPECT_NE(bridge->logs().find("cannot post a held job"), std::string::npos) << bridge->logs();
}

TEST_F(BridgeSlackTest, UnknownSlackUserChangesNothingAndIsTold) {
  auto bridge = startBridge();
  ASSERT_TRUE(slack_.waitSocketHellos(1)) << bridge->logs();
  const std::string id = hold("unk-1");
  const auto posts = slack_.waitCalls("chat.postMessage", 1);
  ASSERT_EQ(posts.size(), 1u);
  const std::string value = buttonValue(body(posts[0]));
  std::string send = R"({"payload":)" + clickPayload("countersign_approve", id, value) + "}";
  const auto sent = parse(slack_.control("POST", "/socket/send", send).body);
  EXPECT_EQ(sent["sent"].GetInt(), 1);
  const auto ephemeral = slack_.waitCalls("chat.postEphemeral", 1);
  ASSERT_EQ(ephemeral.size(), 1u) << bridge->logs();
  EXPECT_EQ(str(body(ephemeral[0]), "user"), "U0UNKNOWN");
  // The envelope was acknowledged, and the job is still pending.
  const auto socket = slack_.socketState();
  EXPECT_EQ(socket["acks"].Size(), 1u);
  EXPECT_EQ(state(id), "pending");
}

TEST_F(BridgeSlackTest, ARateLimitedAnswerToOnePersonDelaysNoOtherClick) {
  Collector delivered(*client_, "jobs.>");
  auto bridge = startBridge();
  ASSERT_TRUE(slack_.waitSocketHellos(1)) << bridge->logs();
  const std::string first = holdAndWaitForPost("notice-1", 1);
  const std::string second = holdAndWaitForPost("notice-2", 2);
  ASSERT_FALSE(second.empty()) << bridge->logs();
  // The answer to an unknown user meets a rate limit of 8 s (waited in steps of at most 5 s).
  slack_.control("POST", "/fail", R"({"method":"chat.postEphemeral","error":"ratelimited","status":429,"retry_after":8,"times":1})");
  sendOverSocket(clickPayload("countersign_approve", "notice-1", first, "U0UNKNOWN"));
  ASSERT_EQ(slack_.waitCalls("chat.postEphemeral", 1).size(), 1u) << bridge->logs();
  // Alice's click right after is acted on while that answer waits.
  sendOverSocket(clickPayload("countersign_approve", "notice-2", second, "U024BE7LH"));
  EXPECT_EQ(delivered.waitFor(1, 4s).size(), 1u) << bridge->logs();
  // The answer is sent once the limit is over.
  EXPECT_EQ(slack_.waitCalls("chat.postEphemeral", 2, 20s).size(), 2u) << bridge->logs();
  EXPECT_EQ(state("notice-1"), "pending");
}

TEST_F(BridgeSlackTest, SocketModeReconnectsAfterDisconnectAndDrop) {
  auto bridge = startBridge();
  ASSERT_TRUE(slack_.waitSocketHellos(1)) << bridge->logs();
  slack_.control("POST", "/socket/disconnect");
  ASSERT_TRUE(slack_.waitSocketHellos(2)) << bridge->logs();
  slack_.control("POST", "/socket/drop");
  ASSERT_TRUE(slack_.waitSocketHellos(3, 30s)) << bridge->logs();
  EXPECT_GE(slack_.calls("apps.connections.open").size(), 3u);
  // Still listening: a click is acknowledged and acted on.
  const std::string id = hold("sock-1");
  const auto posts = slack_.waitCalls("chat.postMessage", 1);
  ASSERT_EQ(posts.size(), 1u);
  sendOverSocket(clickPayload("countersign_reject", id, buttonValue(body(posts[0]))));
  EXPECT_EQ(slack_.waitCalls("chat.postEphemeral", 1).size(), 1u);
}

TEST_F(BridgeSlackTest, HttpInteractivityChecksTheSignatureBeforeAnything) {
  auto bridge = startBridge("http");
  const std::string logs_marker = "(POST http://127.0.0.1:";
  const int listen_port = bridge->printedPort(logs_marker);
  ASSERT_GT(listen_port, 0) << bridge->logs();
  const std::string url = "http://127.0.0.1:" + std::to_string(listen_port) + "/slack/interactions";
  const std::string id = hold("http-1");
  const auto posts = slack_.waitCalls("chat.postMessage", 1);
  ASSERT_EQ(posts.size(), 1u) << bridge->logs();
  const std::string payload = clickPayload("countersign_approve", id, buttonValue(body(posts[0])));
  std::string payload_literal;
  json::appendJsonString(payload_literal, payload);
  const auto click = [&](const std::string& signature) {
    return parse(slack_.control("POST", "/http/click",
                                R"({"url":")" + url + R"(","secret":"test-signing-secret","signature":")" + signature +
                                    R"(","payload":)" + payload_literal + "}")
                     .body);
  };
  EXPECT_EQ(click("wrong")["status"].GetInt(), 401);
  EXPECT_EQ(click("stale")["status"].GetInt(), 401);
  EXPECT_EQ(click("none")["status"].GetInt(), 401);
  const auto big = parse(slack_.control("POST", "/http/click",
                                        R"({"url":")" + url + R"(","secret":"test-signing-secret","signature":"right","body_bytes":10485760})")
                             .body);
  EXPECT_EQ(big["status"].GetInt(), 413);
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(slack_.calls("chat.postEphemeral").size(), 0u);
  EXPECT_EQ(state(id), "pending");
  // The right signature: 200 at once, then acted on (an unknown user: told, nothing changes).
  EXPECT_EQ(click("right")["status"].GetInt(), 200);
  EXPECT_EQ(slack_.waitCalls("chat.postEphemeral", 1).size(), 1u) << bridge->logs();
  EXPECT_EQ(state(id), "pending");
  // Other paths and methods.
  EXPECT_EQ(httpCall(listen_port, "GET", "/slack/interactions").status, 405);
  EXPECT_EQ(httpCall(listen_port, "POST", "/other", "x").status, 404);
}

TEST_F(BridgeSlackTest, ReadinessFollowsSlackAuthAndMetricsCount) {
  auto bridge = startBridge();
  const int admin = bridge->printedPort("admin port ");
  ASSERT_GT(admin, 0) << bridge->logs();
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (httpCall(admin, "GET", "/readyz").status != 200 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(httpCall(admin, "GET", "/readyz").status, 200) << httpCall(admin, "GET", "/readyz").body;
  slack_.control("POST", "/fail", R"({"method":"chat.postMessage","error":"invalid_auth","times":2})");
  hold("auth-1");
  const auto until = std::chrono::steady_clock::now() + 20s;
  HttpAnswer ready;
  do {
    ready = httpCall(admin, "GET", "/readyz");
  } while (ready.status == 200 && std::chrono::steady_clock::now() < until);
  EXPECT_EQ(ready.status, 503);
  EXPECT_NE(ready.body.find("slack: authentication refused"), std::string::npos) << ready.body;
  // The post goes through once Slack accepts the token again, and readiness comes back.
  ASSERT_EQ(slack_.waitCalls("chat.postMessage", 3, 30s).size(), 3u) << bridge->logs();
  const auto back = std::chrono::steady_clock::now() + 10s;
  while (httpCall(admin, "GET", "/readyz").status != 200 && std::chrono::steady_clock::now() < back) {
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(httpCall(admin, "GET", "/readyz").status, 200);
  const std::string metrics = httpCall(admin, "GET", "/metrics").body;
  EXPECT_NE(metrics.find("countersign_bridge_slack_posts_total 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find(R"(countersign_bridge_slack_api_errors_total{method="chat.postMessage",error="invalid_auth"} 2)"),
            std::string::npos)
      << metrics;
  // The auth error is logged once for the method, and no token appears in the logs.
  const std::string logs = bridge->logs();
  std::size_t count = 0;
  for (std::size_t at = logs.find("authentication refused"); at != std::string::npos; at = logs.find("authentication refused", at + 1)) ++count;
  EXPECT_EQ(count, 1u) << logs;
  EXPECT_EQ(logs.find("xoxb-fake"), std::string::npos);
  EXPECT_EQ(logs.find("xapp-fake"), std::string::npos);
}

TEST_F(BridgeSlackTest, ApproveInSlackDeliversOnceAsThePersonWhoClicked) {
  Collector delivered(*client_, "jobs.>");
  auto bridge = startBridge();
  ASSERT_TRUE(slack_.waitSocketHellos(1)) << bridge->logs();
  const std::string id = hold("click-1");
  const auto posts = slack_.waitCalls("chat.postMessage", 1);
  ASSERT_EQ(posts.size(), 1u) << bridge->logs();
  const std::string value = buttonValue(body(posts[0]));
  const std::string send = R"({"payload":)" + clickPayload("countersign_approve", id, value, "U024BE7LH") + "}";
  slack_.control("POST", "/socket/send", send);
  slack_.control("POST", "/socket/send", send);  // a double click
  const auto got = delivered.waitFor(1, 20s);
  ASSERT_EQ(got.size(), 1u) << bridge->logs();
  std::vector<std::string> approved_by;
  for (const auto& [name, header_value] : got[0].headers) {
    if (name == "Countersign-Approved-By") approved_by.push_back(header_value);
  }
  EXPECT_EQ(approved_by, std::vector<std::string>{"alice"});
  // The message loses its buttons and names the person.
  bool updated = false;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (!updated && std::chrono::steady_clock::now() < deadline) {
    for (const auto& call : slack_.calls("chat.update")) {
      const auto update = body(call);
      if (!hasActions(update) &&
          json::toString(update["blocks"]).find("Approved by <@U024BE7LH> (alice)") != std::string::npos) {
        updated = true;
      }
    }
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(updated) << bridge->logs();
  const auto record = control("get", R"({"id":")" + id + R"("})");
  EXPECT_EQ(str(record["record"], "decided_by"), "alice");
  // The decision says it came through Slack.
  const auto decision = client_->kvGet("countersign_approvals", id + "/decision");
  ASSERT_TRUE(decision);
  EXPECT_EQ(str(parse(*decision), "via"), "slack") << *decision;
  EXPECT_EQ(str(parse(*decision), "by"), "alice") << *decision;
  EXPECT_EQ(str(parse(*decision), "reason"), "") << "a plain Approve carries no note: " << *decision;
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(delivered.count(), 1u);
  EXPECT_EQ(slack_.socketState()["acks"].Size(), 2u);
}

TEST_F(BridgeSlackTest, AnEditedButtonValueOrALateClickApprovesNothing) {
  Collector delivered(*client_, "jobs.>");
  auto bridge = startBridge();
  ASSERT_TRUE(slack_.waitSocketHellos(1)) << bridge->logs();
  const std::string edited = hold("edit-1");
  const std::string late = hold("late-1");
  const auto posts = slack_.waitCalls("chat.postMessage", 2);
  ASSERT_EQ(posts.size(), 2u) << bridge->logs();
  // The client edits the value: same id, another hash. The gateway's hash check refuses it.
  std::string forged_value;
  for (const auto& call : posts) {
    const std::string value = buttonValue(body(call));
    if (str(parse(value), "id") == edited) {
      forged_value = R"({"id":")" + edited + R"(","job_hash":"sha256:)" + std::string(64, '0') +
                     R"(","policy_snapshot":")" + str(parse(value), "policy_snapshot") + R"("})";
    }
  }
  sendOverSocket(clickPayload("countersign_approve", edited, forged_value, "U024BE7LH"));
  // A click on a job rejected a moment earlier elsewhere.
  EXPECT_EQ(str(control("reject", R"({"id":")" + late + R"(","approver":"carol"})"), "status"), "rejected");
  std::string late_value;
  for (const auto& call : posts) {
    if (str(parse(buttonValue(body(call))), "id") == late) late_value = buttonValue(body(call));
  }
  sendOverSocket(clickPayload("countersign_approve", late, late_value, "U0BOB"));
  const auto told = slack_.waitCalls("chat.postEphemeral", 2);
  EXPECT_EQ(told.size(), 2u) << bridge->logs();
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(delivered.count(), 0u);
  EXPECT_EQ(state(edited), "pending");
  EXPECT_EQ(state(late), "rejected");
}

// Waits until some update's text contains `needle` (and, when given, has or lacks buttons).
bool waitForUpdate(FakeSlack& slack, const std::string& needle, std::chrono::milliseconds timeout = 20s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    for (const auto& call : slack.calls("chat.update")) {
      if (call.find(needle) != std::string::npos) return true;
    }
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

TEST_F(BridgeSlackTest, TwoOfTwoShowsTheFirstVoteThenReleases) {
  gateway_->stop();
  CountersignOptions options;
  options.config_yaml = basicConfig(nats_->url(), approvers());
  options.policy_yaml = R"(version: v1
rules:
  - id: two-people
    when: { topic: finance.payment.execute }
    decision: require_human
    approvers: [alice, bob]
    quorum: 2
)";
  options.nats_url = nats_->url();
  gateway_ = CountersignProcess::start(options);
  Collector delivered(*client_, "jobs.>");
  auto bridge = startBridge();
  ASSERT_TRUE(slack_.waitSocketHellos(1)) << bridge->logs();
  const std::string id = hold("quorum-1");
  const auto posts = slack_.waitCalls("chat.postMessage", 1);
  ASSERT_EQ(posts.size(), 1u) << bridge->logs();
  EXPECT_NE(posts[0].find("*Votes*\\n0 of 2"), std::string::npos) << posts[0];
  const std::string value = buttonValue(body(posts[0]));
  sendOverSocket(clickPayload("countersign_approve", id, value, "U024BE7LH"));
  ASSERT_TRUE(waitForUpdate(slack_, "Vote 1 of 2 recorded")) << bridge->logs();
  EXPECT_EQ(delivered.count(), 0u);
  EXPECT_EQ(state(id), "pending");
  sendOverSocket(clickPayload("countersign_approve", id, value, "U0BOB"));
  const auto got = delivered.waitFor(1, 20s);
  ASSERT_EQ(got.size(), 1u) << bridge->logs();
  std::string approved_by;
  for (const auto& [name, header_value] : got[0].headers) {
    if (name == "Countersign-Approved-By") approved_by = header_value;
  }
  EXPECT_EQ(approved_by, "alice,bob");
  EXPECT_TRUE(waitForUpdate(slack_, "released")) << bridge->logs();
  // The votes say they came through Slack.
  const auto record = control("get", R"({"id":")" + id + R"("})");
  const std::string text = json::toString(record["record"]);
  EXPECT_NE(text.find(R"("via":"slack")"), std::string::npos) << text;
}

TEST_F(BridgeSlackTest, APolicyChangePostsTheReboundJobAgain) {
  auto bridge = startBridge();
  ASSERT_TRUE(slack_.waitSocketHellos(1)) << bridge->logs();
  const std::string id = hold("rebind-1");
  const auto posts = slack_.waitCalls("chat.postMessage", 1);
  ASSERT_EQ(posts.size(), 1u) << bridge->logs();
  const std::string old_value = buttonValue(body(posts[0]));
  // Another meaning, the job still held: a click with the old snapshot re-binds it.
  std::ofstream(gateway_->policyPath()) << std::string(kPolicy) + "  - id: deny-deletes\n    when: { topic: files.delete }\n    decision: deny\n";
  gateway_->signal(SIGHUP);
  std::this_thread::sleep_for(1s);
  sendOverSocket(clickPayload("countersign_approve", id, old_value, "U024BE7LH"));
  const auto reposted = slack_.waitCalls("chat.postMessage", 2);
  ASSERT_EQ(reposted.size(), 2u) << bridge->logs();
  EXPECT_NE(str(parse(buttonValue(body(reposted[1]))), "policy_snapshot"), str(parse(old_value), "policy_snapshot"));
  EXPECT_TRUE(waitForUpdate(slack_, "The policy changed")) << bridge->logs();
  EXPECT_TRUE(client_->kvGet("countersign_approvals", id + "/slack/C0FINANCE/1"));
  EXPECT_EQ(state(id), "pending");
}

TEST_F(BridgeSlackTest, WebhooksAreSignedAndRetried) {
  slack_.control("POST", "/hook/fail", R"({"times":1})");
  auto bridge = startBridge("socket", "notify:\n  webhooks:\n    - { url: \"" + slack_.hookUrl() +
                                          "\", events: [held, rejected], secret_env: HOOK_SECRET }\n");
  const std::string id = hold("hook-1");
  EXPECT_EQ(str(control("reject", R"({"id":")" + id + R"(","approver":"carol"})"), "status"), "rejected");
  const rapidjson::Document hooks = slack_.waitHooks(3, 30s);
  ASSERT_EQ(hooks.Size(), 3u) << bridge->logs();  // held (503, then again), rejected
  EXPECT_TRUE(hooks[0]["failed"].GetBool());
  std::vector<std::string> events;
  for (const auto& hook : hooks.GetArray()) {
    const std::string body_text = str(hook, "body");
    EXPECT_EQ(str(hook, "signature"), bridge::webhookSignature("hook-secret", str(hook, "timestamp"), body_text));
    events.push_back(str(parse(body_text), "event"));
  }
  // The held event's retry waits 1 s on the webhook's lane; the rejected one need not wait for it.
  std::sort(events.begin(), events.end());
  EXPECT_EQ(events, (std::vector<std::string>{"held", "held", "rejected"}));
  EXPECT_EQ(str(parse(str(hooks[0], "body")), "event"), "held");
}

TEST_F(BridgeSlackTest, AFailingWebhookDelaysNoSlackPostAndItsEventsAreAckedOnlyOnceDelivered) {
  slack_.control("POST", "/hook/fail", R"({"times":100000})");
  const std::string hooks_yaml =
      "notify:\n  webhooks:\n    - { url: \"" + slack_.hookUrl() + "\", events: [held], secret_env: HOOK_SECRET }\n";
  auto bridge = startBridge("socket", hooks_yaml);
  std::set<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.insert(hold("hk-" + std::to_string(i)));
  // Each event's webhook fails and is retried (1 s, 2 s, ... up to 10 attempts: minutes). The
  // posts do not wait for that.
  ASSERT_EQ(slack_.waitCalls("chat.postMessage", 5, 15s).size(), 5u) << bridge->logs();
  const auto hookCount = [&](bool only_delivered) {
    std::set<std::string> seen;
    std::size_t all = 0;
    const auto hooks = parse(slack_.control("GET", "/hooks").body);
    for (const auto& hook : hooks.GetArray()) {
      ++all;
      if (!only_delivered || !hook["failed"].GetBool()) seen.insert(str(parse(str(hook, "body")), "approval_id"));
    }
    return only_delivered ? seen.size() : all;
  };
  const auto retried = std::chrono::steady_clock::now() + 20s;
  while (hookCount(false) < 10 && std::chrono::steady_clock::now() < retried) std::this_thread::sleep_for(100ms);
  EXPECT_GE(hookCount(false), 10u) << "each event tried at least twice";
  // Stopped with deliveries waiting: the events were not acked, so the next bridge sends them
  // again, and the receiver, healthy now, gets each held event.
  EXPECT_EQ(bridge->stop(), 0) << bridge->logs();
  slack_.control("POST", "/hook/fail", R"({"times":0})");
  bridge = startBridge("socket", hooks_yaml);
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (hookCount(true) < 5 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(100ms);
  EXPECT_EQ(hookCount(true), 5u) << bridge->logs();
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(slack_.calls("chat.postMessage").size(), 5u);
}

TEST_F(BridgeSlackTest, AtMost128EventsWaitForWebhookRetries) {
  slack_.control("POST", "/hook/fail", R"({"times":100000})");
  auto bridge = startBridge("socket", "notify:\n  webhooks:\n    - { url: \"" + slack_.hookUrl() +
                                          "\", events: [held], secret_env: HOOK_SECRET }\n");
  const int admin = bridge->printedPort("admin port ");
  ASSERT_GT(admin, 0) << bridge->logs();
  for (int i = 0; i < 135; ++i) hold("many-" + std::to_string(i));
  // Every job is posted; the 129th event on finds 128 waiting and its delivery is given up.
  ASSERT_EQ(slack_.waitCalls("chat.postMessage", 135, 60s).size(), 135u) << bridge->logs();
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  std::string metrics;
  do {
    metrics = httpCall(admin, "GET", "/metrics").body;
    if (metrics.find(R"(countersign_bridge_webhook_deliveries_total{result="given_up"} 7)") != std::string::npos) break;
    std::this_thread::sleep_for(200ms);
  } while (std::chrono::steady_clock::now() < deadline);
  EXPECT_NE(metrics.find(R"(countersign_bridge_webhook_deliveries_total{result="given_up"} 7)"), std::string::npos) << metrics;
  EXPECT_NE(bridge->logs().find("too many events wait for deliveries"), std::string::npos);
}

TEST_F(BridgeSlackTest, ASlowWebhookReceiverDelaysNoSlackPost) {
  slack_.control("POST", "/hook/slow", R"({"ms":4000})");
  auto bridge = startBridge("socket", "notify:\n  webhooks:\n    - { url: \"" + slack_.hookUrl() +
                                          "\", events: [held], secret_env: HOOK_SECRET }\n");
  ASSERT_TRUE(slack_.waitSocketHellos(1)) << bridge->logs();
  // Four deliveries of 4 s each, one after the other on the webhook's lane: 16 s. Were they on
  // the consumer's thread, the fourth post would come after 12 s.
  for (int i = 0; i < 4; ++i) hold("slow-" + std::to_string(i));
  ASSERT_EQ(slack_.waitCalls("chat.postMessage", 4, 8s).size(), 4u) << bridge->logs();
  slack_.control("POST", "/hook/slow", R"({"ms":0})");
}

// The bridge's durable consumer deleted (by an operator, or with its stream) while a webhook
// delivery still holds an event fetched through it: the bridge makes the consumer again and goes
// on posting, and the held event's delivery finishes (its ack reads the old subscription, which
// is kept until the bridge stops).
TEST_F(BridgeSlackTest, ADeletedConsumerIsMadeAgainWhileADeliveryStillHoldsItsEvent) {
  slack_.control("POST", "/hook/slow", R"({"ms":3000})");
  auto bridge = startBridge("socket", "notify:\n  webhooks:\n    - { url: \"" + slack_.hookUrl() +
                                          "\", events: [held], secret_env: HOOK_SECRET }\n");
  ASSERT_TRUE(slack_.waitSocketHellos(1)) << bridge->logs();
  hold("gone-0");
  ASSERT_EQ(slack_.waitCalls("chat.postMessage", 1).size(), 1u) << bridge->logs();
  ASSERT_EQ(js_DeleteConsumer(client_->js(), "COUNTERSIGN_AUDIT", "countersign-bridge", nullptr,
                              nullptr),
            NATS_OK);
  std::this_thread::sleep_for(3s);  // the bridge finds the consumer gone within about 2 s
  hold("gone-1");
  ASSERT_EQ(slack_.waitCalls("chat.postMessage", 2, 15s).size(), 2u) << bridge->logs();
  slack_.control("POST", "/hook/slow", R"({"ms":0})");
  const rapidjson::Document hooks = slack_.waitHooks(2, 20s);
  EXPECT_GE(hooks.Size(), 2u) << bridge->logs();
  EXPECT_EQ(bridge->stop(), 0) << bridge->logs();
}

TEST_F(BridgeSlackTest, ADroppedSocketOrAKilledBridgeMidClickActsOnceAtMost) {
  Collector delivered(*client_, "jobs.>");
  auto bridge = startBridge();
  ASSERT_TRUE(slack_.waitSocketHellos(1)) << bridge->logs();
  const std::string id = hold("drop-1");
  const auto posts = slack_.waitCalls("chat.postMessage", 1);
  ASSERT_EQ(posts.size(), 1u) << bridge->logs();
  const std::string value = buttonValue(body(posts[0]));
  const std::string envelope =
      R"({"envelope_id":"env-drop-1","payload":)" + clickPayload("countersign_approve", id, value, "U024BE7LH") + "}";
  // The click, then the socket is dropped at once; Slack sends the envelope again on the new
  // connection, as it does when it is not sure of the ack.
  slack_.control("POST", "/socket/send", envelope);
  slack_.control("POST", "/socket/drop");
  ASSERT_TRUE(slack_.waitSocketHellos(2, 30s)) << bridge->logs();
  slack_.control("POST", "/socket/send", envelope);
  // The bridge is killed while it may still be acting, and a new one comes up: the click again.
  bridge->kill9();
  bridge = startBridge();
  ASSERT_TRUE(slack_.waitSocketHellos(3, 30s)) << bridge->logs();
  slack_.control("POST", "/socket/send", envelope);
  const auto got = delivered.waitFor(1, 20s);
  ASSERT_EQ(got.size(), 1u) << bridge->logs();
  std::this_thread::sleep_for(2s);
  EXPECT_EQ(delivered.count(), 1u);
  EXPECT_EQ(slack_.calls("chat.postMessage").size(), 1u);
  EXPECT_EQ(state(id), "released");
}

TEST_F(BridgeSlackTest, WebApiCallsReuseTheTlsConnectionAndReconnectWhenItIsClosed) {
  auto bridge = startBridge("http");  // no WebSocket: every TLS connection is a Web API one
  ASSERT_GT(bridge->printedPort("(POST http://127.0.0.1:"), 0) << bridge->logs();
  const auto tlsConnections = [&] { return parse(slack_.control("GET", "/connections").body)["tls"].GetInt(); };
  for (int i = 0; i < 5; ++i) {
    hold("ka-" + std::to_string(i));
    ASSERT_EQ(slack_.waitCalls("chat.postMessage", static_cast<std::size_t>(i + 1)).size(), static_cast<std::size_t>(i + 1))
        << bridge->logs();
  }
  // auth.test and five posts: one connection (two if the consumer and start-up overlapped).
  const int kept = tlsConnections();
  EXPECT_LE(kept, 2);
  // A server that closes after each answer: every call still goes through, on a new connection.
  slack_.control("POST", "/keepalive", R"({"enabled":false})");
  for (int i = 5; i < 8; ++i) {
    hold("ka-" + std::to_string(i));
    ASSERT_EQ(slack_.waitCalls("chat.postMessage", static_cast<std::size_t>(i + 1)).size(), static_cast<std::size_t>(i + 1))
        << bridge->logs();
  }
  EXPECT_GE(tlsConnections(), kept + 2);  // the first of the three went on the kept connection
  // Kept alive again, then idle past the server's keep-alive timeout (5 s): the closed connection
  // is noticed and replaced, and the job is posted once.
  slack_.control("POST", "/keepalive", R"({"enabled":true})");
  hold("ka-8");
  ASSERT_EQ(slack_.waitCalls("chat.postMessage", 9).size(), 9u) << bridge->logs();
  std::this_thread::sleep_for(6s);
  hold("ka-9");
  ASSERT_EQ(slack_.waitCalls("chat.postMessage", 10).size(), 10u) << bridge->logs();
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(slack_.calls("chat.postMessage").size(), 10u);
  EXPECT_EQ(bridge->logs().find("slack: no answer"), std::string::npos) << bridge->logs();
}

TEST_F(BridgeSlackTest, RejectOpensTheReasonDialogAndTheTypedReasonIsRecorded) {
  Collector rejected_events(*client_, "countersign.events.rejected.>");
  auto bridge = startBridge();
  ASSERT_TRUE(slack_.waitSocketHellos(1)) << bridge->logs();
  const std::string id = "dialog-1";
  const std::string value = holdAndWaitForPost(id);
  ASSERT_FALSE(value.empty()) << bridge->logs();
  // Someone who is not an approver gets no dialog, only the answer.
  sendOverSocket(clickPayload("countersign_reject", id, value, "U0UNKNOWN", "trig-0"));
  ASSERT_EQ(slack_.waitCalls("chat.postEphemeral", 1).size(), 1u) << bridge->logs();
  EXPECT_TRUE(slack_.calls("views.open").empty());
  // Alice clicks Reject: the dialog opens with Slack's trigger_id; nothing is decided yet.
  sendOverSocket(clickPayload("countersign_reject", id, value, "U024BE7LH", "trig-1"));
  const auto opened = slack_.waitCalls("views.open", 1);
  ASSERT_EQ(opened.size(), 1u) << bridge->logs();
  const auto dialog = body(opened[0]);
  EXPECT_EQ(str(dialog, "trigger_id"), "trig-1");
  EXPECT_EQ(str(dialog["view"], "callback_id"), "countersign_reject_reason");
  EXPECT_EQ(str(parse(str(dialog["view"], "private_metadata")), "id"), id);
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(state(id), "pending");
  // She types a reason and submits.
  const std::string submission =
      slack_.control("POST", "/view/submission", R"({"user":"U024BE7LH","reason":"Amount <looks> wrong"})").body;
  sendOverSocket(submission);
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (state(id) != "rejected" && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(100ms);
  ASSERT_EQ(state(id), "rejected") << bridge->logs();
  const auto record = control("get", R"({"id":")" + id + R"("})");
  EXPECT_EQ(str(record["record"], "decided_by"), "alice");
  EXPECT_EQ(str(record["record"], "reason"), "Amount <looks> wrong") << json::toString(record["record"]);
  const auto decision = client_->kvGet("countersign_approvals", id + "/decision");
  ASSERT_TRUE(decision);
  EXPECT_EQ(str(parse(*decision), "via"), "slack") << *decision;
  const auto events = rejected_events.waitFor(1, 10s);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(str(parse(events[0].payload), "reason"), "Amount <looks> wrong");
  EXPECT_TRUE(waitForUpdate(slack_, "Rejected by <@U024BE7LH> (alice): Amount &lt;looks&gt; wrong")) << bridge->logs();
  EXPECT_EQ(slack_.socketState()["acks"].Size(), 3u);
}

TEST_F(BridgeSlackTest, ApproveWithNoteOpensTheNoteDialogAndTheNoteIsRecordedAndShown) {
  Collector delivered(*client_, "jobs.>");
  Collector approved_events(*client_, "countersign.events.approved.>");
  auto bridge = startBridge();
  ASSERT_TRUE(slack_.waitSocketHellos(1)) << bridge->logs();
  const std::string id = "note-1";
  const std::string value = holdAndWaitForPost(id);
  ASSERT_FALSE(value.empty()) << bridge->logs();
  // Without Slack's trigger_id the dialog cannot open: nothing is approved, the person is told.
  sendOverSocket(clickPayload("countersign_approve_note", id, value, "U024BE7LH"));
  const auto told = slack_.waitCalls("chat.postEphemeral", 1);
  ASSERT_EQ(told.size(), 1u) << bridge->logs();
  EXPECT_NE(told[0].find("nothing was approved"), std::string::npos) << told[0];
  EXPECT_EQ(state(id), "pending");
  // Alice clicks "Approve with note…": the note dialog opens; nothing is decided yet.
  sendOverSocket(clickPayload("countersign_approve_note", id, value, "U024BE7LH", "trig-n"));
  const auto opened = slack_.waitCalls("views.open", 1);
  ASSERT_EQ(opened.size(), 1u) << bridge->logs();
  const auto dialog = body(opened[0]);
  EXPECT_EQ(str(dialog, "trigger_id"), "trig-n");
  EXPECT_EQ(str(dialog["view"], "callback_id"), "countersign_approve_note");
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(state(id), "pending");
  EXPECT_EQ(delivered.count(), 0u);
  // An empty note cannot be submitted (the input is required).
  EXPECT_EQ(slack_.control("POST", "/view/submission", R"({"user":"U024BE7LH","reason":""})").status, 422);
  // She types a note and submits: approved with the note, delivered once.
  const std::string submission =
      slack_.control("POST", "/view/submission", R"({"user":"U024BE7LH","reason":"Checked <the> invoice"})").body;
  sendOverSocket(submission);
  sendOverSocket(submission);  // submitted twice
  const auto got = delivered.waitFor(1, 20s);
  ASSERT_EQ(got.size(), 1u) << bridge->logs();
  const auto decision = client_->kvGet("countersign_approvals", id + "/decision");
  ASSERT_TRUE(decision);
  EXPECT_EQ(str(parse(*decision), "by"), "alice") << *decision;
  EXPECT_EQ(str(parse(*decision), "via"), "slack") << *decision;
  EXPECT_EQ(str(parse(*decision), "reason"), "Checked <the> invoice") << *decision;
  const auto events = approved_events.waitFor(1, 10s);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(str(parse(events[0].payload), "reason"), "Checked <the> invoice");
  EXPECT_TRUE(waitForUpdate(slack_, "Approved by <@U024BE7LH> (alice): Checked &lt;the&gt; invoice \u00b7 released"))
      << bridge->logs();
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(delivered.count(), 1u);
}

TEST_F(BridgeSlackTest, TheReasonDialogWorksOverHttpInteractivityToo) {
  auto bridge = startBridge("http");
  const int listen_port = bridge->printedPort("(POST http://127.0.0.1:");
  ASSERT_GT(listen_port, 0) << bridge->logs();
  const std::string url = "http://127.0.0.1:" + std::to_string(listen_port) + "/slack/interactions";
  const std::string id = "dialog-http-1";
  const std::string value = holdAndWaitForPost(id);
  ASSERT_FALSE(value.empty()) << bridge->logs();
  const auto post = [&](const std::string& payload, const std::string& signature) {
    std::string literal;
    json::appendJsonString(literal, payload);
    return parse(slack_.control("POST", "/http/click",
                                R"({"url":")" + url + R"(","secret":"test-signing-secret","signature":")" + signature +
                                    R"(","payload":)" + literal + "}")
                     .body)["status"]
        .GetInt();
  };
  EXPECT_EQ(post(clickPayload("countersign_reject", id, value, "U0BOB", "trig-h"), "right"), 200);
  ASSERT_EQ(slack_.waitCalls("views.open", 1).size(), 1u) << bridge->logs();
  const std::string submission = slack_.control("POST", "/view/submission", R"({"user":"U0BOB","reason":"not today"})").body;
  // A forged submission (wrong signature) does nothing; Slack's does.
  EXPECT_EQ(post(submission, "wrong"), 401);
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(state(id), "pending");
  EXPECT_EQ(post(submission, "right"), 200);
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (state(id) != "rejected" && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(100ms);
  ASSERT_EQ(state(id), "rejected") << bridge->logs();
  const auto record = control("get", R"({"id":")" + id + R"("})");
  EXPECT_EQ(str(record["record"], "decided_by"), "bob");
  EXPECT_EQ(str(record["record"], "reason"), "not today");
}

TEST_F(BridgeSlackTest, TwoReplicasGivenTheSameClickDeliverOnce) {
  Collector delivered(*client_, "jobs.>");
  auto a = startBridge();
  auto b = startBridge();
  const auto connected = std::chrono::steady_clock::now() + 30s;
  while (slack_.socketState()["connected"].GetInt() < 2 && std::chrono::steady_clock::now() < connected) {
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(slack_.socketState()["connected"].GetInt(), 2) << a->logs() << b->logs();
  const std::string id = "two-1";
  const std::string value = holdAndWaitForPost(id);
  ASSERT_FALSE(value.empty()) << a->logs() << b->logs();
  // The fake sends the envelope on both sockets: both replicas act on the same click.
  const auto sent = parse(slack_.control("POST", "/socket/send",
                                         R"({"payload":)" + clickPayload("countersign_approve", id, value, "U024BE7LH") + "}")
                              .body);
  EXPECT_EQ(sent["sent"].GetInt(), 2);
  ASSERT_EQ(delivered.waitFor(1, 20s).size(), 1u) << a->logs() << b->logs();
  std::this_thread::sleep_for(2s);
  EXPECT_EQ(delivered.count(), 1u);
  EXPECT_EQ(slack_.calls("chat.postMessage").size(), 1u);
  EXPECT_EQ(state(id), "released");
}

TEST_F(BridgeSlackTest, ReplayedOrMalformedHttpPostsApproveAtMostOnce) {
  Collector delivered(*client_, "jobs.>");
  auto bridge = startBridge("http");
  const int listen_port = bridge->printedPort("(POST http://127.0.0.1:");
  const int admin = bridge->printedPort("admin port ");
  ASSERT_GT(listen_port, 0) << bridge->logs();
  const std::string url = "http://127.0.0.1:" + std::to_string(listen_port) + "/slack/interactions";
  const std::string id = "replay-1";
  const std::string value = holdAndWaitForPost(id);
  ASSERT_FALSE(value.empty()) << bridge->logs();
  const auto post = [&](const std::string& payload) {
    std::string literal;
    json::appendJsonString(literal, payload);
    return parse(slack_.control("POST", "/http/click",
                                R"({"url":")" + url + R"(","secret":"test-signing-secret","signature":"right","payload":)" +
                                    literal + "}")
                     .body)["status"]
        .GetInt();
  };
  // Signed by Slack but not a click we can use: answered 200 (Slack wants it), nothing happens.
  EXPECT_EQ(post("{not json"), 200);
  EXPECT_EQ(post(R"({"type":"block_actions"})"), 200);
  EXPECT_EQ(post(R"({"type":"block_actions","user":{"id":"U024BE7LH"},"actions":[{"action_id":"countersign_approve","block_id":"countersign:replay-1"}]})"),
            200);
  // The same approve twice (a replay inside the 300 s window): one decision, one delivery.
  const std::string approve = clickPayload("countersign_approve", id, value, "U024BE7LH");
  EXPECT_EQ(post(approve), 200);
  EXPECT_EQ(post(approve), 200);
  ASSERT_EQ(delivered.waitFor(1, 20s).size(), 1u) << bridge->logs();
  std::this_thread::sleep_for(2s);
  EXPECT_EQ(delivered.count(), 1u);
  EXPECT_EQ(state(id), "released");
  const std::string metrics = httpCall(admin, "GET", "/metrics").body;
  EXPECT_NE(metrics.find(R"(countersign_bridge_clicks_total{result="bad_payload"} 3)"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find(R"(countersign_bridge_clicks_total{result="approved"} 1)"), std::string::npos) << metrics;
}

TEST_F(BridgeSlackTest, CheckValidatesWithoutStarting) {
  dir_.write("check.yaml", bridgeConfig("socket"));
  const auto ok = runCountersign({"bridge", "--config", (dir_.path() / "check.yaml").string(), "--check"},
                                 {{"SLACK_BOT_TOKEN", "xoxb-fake"}, {"SLACK_APP_TOKEN", "xapp-fake"}});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("socket mode"), std::string::npos) << ok.out;
  const auto no_token = runCountersign({"bridge", "--config", (dir_.path() / "check.yaml").string(), "--check"},
                                       {{"SLACK_BOT_TOKEN", "xoxb-fake"}});
  EXPECT_EQ(no_token.exit_code, 2);
  EXPECT_NE(no_token.err.find("SLACK_APP_TOKEN is not set"), std::string::npos) << no_token.err;
  dir_.write("typo.yaml", bridgeConfig("socket", "  chanels: []\n"));
  const auto typo = runCountersign({"bridge", "--config", (dir_.path() / "typo.yaml").string(), "--check"},
                                   {{"SLACK_BOT_TOKEN", "xoxb-fake"}, {"SLACK_APP_TOKEN", "xapp-fake"}});
  EXPECT_EQ(typo.exit_code, 2);
  EXPECT_NE(typo.err.find("slack.chanels: unknown key"), std::string::npos) << typo.err;

  // --json: one object on stdout, for a good config and for a refused one.
  const auto ok_json = runCountersign({"bridge", "--config", (dir_.path() / "check.yaml").string(), "--check", "--json"},
                                      {{"SLACK_BOT_TOKEN", "xoxb-fake"}, {"SLACK_APP_TOKEN", "xapp-fake"}});
  EXPECT_EQ(ok_json.exit_code, 0) << ok_json.err;
  const rapidjson::Document good = parse(ok_json.out);
  ASSERT_TRUE(good.IsObject()) << ok_json.out;
  EXPECT_TRUE(good["ok"].GetBool());
  EXPECT_STREQ(good["slack"]["mode"].GetString(), "socket");
  EXPECT_TRUE(good["event_keys"].IsArray() && good["event_keys"].Size() >= 1) << ok_json.out;
  const auto refused_json = runCountersign({"bridge", "--config", (dir_.path() / "typo.yaml").string(), "--check", "--json"},
                                           {{"SLACK_BOT_TOKEN", "xoxb-fake"}, {"SLACK_APP_TOKEN", "xapp-fake"}});
  EXPECT_EQ(refused_json.exit_code, 2);
  const rapidjson::Document refused = parse(refused_json.out);
  ASSERT_TRUE(refused.IsObject()) << refused_json.out;
  EXPECT_FALSE(refused["ok"].GetBool());
  EXPECT_NE(std::string(refused["error"].GetString()).find("slack.chanels: unknown key"), std::string::npos)
      << refused_json.out;
}


// ---- the receiver examples of docs/webhooks.md, run as written ----------------------------------

// The body of the first fenced block ```<fence> that follows `after` in `text`; empty if none.
std::string fencedBlock(const std::string& text, const std::string& after, const std::string& fence) {
  const std::size_t anchor = text.find(after);
  if (anchor == std::string::npos) return {};
  const std::string open = "```" + fence + "\n";
  const std::size_t start = text.find(open, anchor);
  if (start == std::string::npos) return {};
  const std::size_t end = text.find("\n```\n", start + open.size());
  if (end == std::string::npos) return {};
  return text.substr(start + open.size(), end - start - open.size() + 1);
}

std::string readFile(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

int freeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

bool waitListening(int port, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool up = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    if (up) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

std::size_t countOf(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

class WebhookReceiverExampleTest : public BridgeSlackTest {
 protected:
  // Runs the doc's example (`fence` block after `heading`) with `interpreter`, lets the bridge
  // deliver real signed events to it (and to the fake's recorder), then plays forged ones.
  void checkReceiver(const std::string& heading, const std::string& fence, const std::string& interpreter,
                     const std::string& file) {
    const std::string doc = readFile(fs::path(COUNTERSIGN_SOURCE_DIR) / "docs" / "webhooks.md");
    const std::string code = fencedBlock(doc, heading, fence);
    ASSERT_FALSE(code.empty()) << "docs/webhooks.md has no ```" << fence << " block after '" << heading << "'";
    const auto exe = natsio::findExecutable(interpreter);
    ASSERT_TRUE(exe) << interpreter << " is not installed (scripts/setup.sh installs it)";
    const auto script = dir_.write(file, code);
    const int port = freeLoopbackPort();
    ASSERT_GT(port, 0);
    natsio::SpawnOptions options;
    options.argv = {*exe, script.string()};
    options.env = std::vector<std::string>{"HOOK_SECRET=hook-secret", "PORT=" + std::to_string(port),
                                           "PYTHONUNBUFFERED=1", "PATH=/usr/bin:/bin"};
    const fs::path out = dir_.path() / (file + ".out");
    options.stdout_path = out.string();
    options.stderr_path = (dir_.path() / (file + ".err")).string();
    auto pid = natsio::spawnProcess(options);
    ASSERT_TRUE(pid) << pid.error().message;
    struct Stop {
      int pid;
      ~Stop() { natsio::stopProcess(pid, 5s); }
    } stop{*pid};
    ASSERT_TRUE(waitListening(port, 20s)) << readFile(dir_.path() / (file + ".err"));

    // Real deliveries: the bridge sends held and rejected to the example and to the recorder.
    const std::string receiver = "http://127.0.0.1:" + std::to_string(port) + "/";
    auto bridge = startBridge("socket", "notify:\n  webhooks:\n    - { url: \"" + slack_.hookUrl() +
                                            "\", events: [held], secret_env: HOOK_SECRET }\n    - { url: \"" +
                                            receiver + "\", events: [held, rejected], secret_env: HOOK_SECRET }\n");
    const std::string id = hold("receiver-" + fence);
    ASSERT_FALSE(id.empty());
    EXPECT_EQ(str(control("reject", R"({"id":")" + id + R"(","approver":"carol"})"), "status"), "rejected");
    const auto wait_line = [&](const std::string& line) {
      const auto deadline = std::chrono::steady_clock::now() + 20s;
      while (readFile(out).find(line) == std::string::npos && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(100ms);
      }
      return readFile(out).find(line) != std::string::npos;
    };
    ASSERT_TRUE(wait_line("held " + id + " finance.payment.execute\n"))
        << readFile(out) << readFile(dir_.path() / (file + ".err")) << bridge->logs();
    ASSERT_TRUE(wait_line("rejected " + id + " finance.payment.execute\n")) << readFile(out) << bridge->logs();

    // The held delivery as the recorder saw it: the same bytes the example accepted.
    rapidjson::Document hooks;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    do {
      hooks = parse(slack_.control("GET", "/hooks").body);
      if (hooks.Size() >= 1) break;
      std::this_thread::sleep_for(100ms);
    } while (std::chrono::steady_clock::now() < deadline);
    ASSERT_GE(hooks.Size(), 1u);
    const std::string body_text = str(hooks[0], "body");
    const std::string ts = str(hooks[0], "timestamp");
    const std::string signature = str(hooks[0], "signature");
    ASSERT_EQ(signature, bridge::webhookSignature("hook-secret", ts, body_text));

    const auto post = [&](const std::string& body, const std::string& timestamp, const std::string& sig) {
      std::vector<std::string> headers;
      if (!timestamp.empty()) headers.push_back("X-Countersign-Timestamp: " + timestamp);
      if (!sig.empty()) headers.push_back("X-Countersign-Signature: " + sig);
      return httpCall(port, "POST", "/", body, headers).status;
    };
    const std::string now = std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                               std::chrono::system_clock::now().time_since_epoch())
                                               .count());
    const std::string old = std::to_string(std::stoll(now) - 600);
    const std::string ahead = std::to_string(std::stoll(now) + 600);
    std::string forged_body = body_text;
    forged_body.replace(forged_body.find(id), id.size(), "forged-id");

    // A replayed genuine delivery (within 300 s) is accepted and deduplicated: printed once.
    EXPECT_EQ(post(body_text, ts, signature), 204);
    // Forged or stale: refused.
    EXPECT_EQ(post(forged_body, ts, signature), 401) << "an edited body with the genuine signature";
    EXPECT_EQ(post(forged_body, now, bridge::webhookSignature("wrong-secret", now, forged_body)), 401) << "wrong secret";
    EXPECT_EQ(post(forged_body, old, bridge::webhookSignature("hook-secret", old, forged_body)), 401) << "10 minutes old";
    EXPECT_EQ(post(forged_body, ahead, bridge::webhookSignature("hook-secret", ahead, forged_body)), 401) << "10 minutes ahead";
    EXPECT_EQ(post(forged_body, "", ""), 401) << "unsigned";
    EXPECT_EQ(post(forged_body, now, ""), 401) << "no signature";
    EXPECT_EQ(post(forged_body, now + "x", bridge::webhookSignature("hook-secret", now + "x", forged_body)), 401)
        << "a timestamp that is not a number";
    EXPECT_EQ(post(forged_body, now, "v0=" + bridge::hmacSha256Hex("hook-secret", now + "." + forged_body)), 401)
        << "another scheme";
    // The same edited body, signed now with the secret, is accepted: the refusals above are the check's.
    EXPECT_EQ(post(forged_body, now, bridge::webhookSignature("hook-secret", now, forged_body)), 204);
    ASSERT_TRUE(wait_line("held forged-id finance.payment.execute\n")) << readFile(out);
    const std::string printed = readFile(out);
    EXPECT_EQ(countOf(printed, "held " + id + " "), 1u) << printed;
    EXPECT_EQ(countOf(printed, "rejected " + id + " "), 1u) << printed;
    EXPECT_EQ(countOf(printed, "held forged-id "), 1u) << printed;
    EXPECT_EQ(countOf(printed, "\n"), 3u) << printed;

    // The shell line of the doc computes the same signature for the delivered body.
    if (fence == "python") {
      const std::string shell = fencedBlock(doc, "The same signature in a shell", "sh");
      ASSERT_FALSE(shell.empty());
      dir_.write("body.json", body_text);
      natsio::SpawnOptions sh;
      sh.argv = {"/bin/sh", "-c", shell};
      sh.env = std::vector<std::string>{"TS=" + ts, "HOOK_SECRET=hook-secret", "PATH=/usr/bin:/bin"};
      sh.working_dir = dir_.path().string();
      sh.stdout_path = (dir_.path() / "sh.out").string();
      sh.stderr_path = (dir_.path() / "sh.err").string();
      auto sh_pid = natsio::spawnProcess(sh);
      ASSERT_TRUE(sh_pid);
      EXPECT_EQ(natsio::waitProcess(*sh_pid, 20s), std::optional<int>(0)) << readFile(dir_.path() / "sh.err");
      EXPECT_EQ(readFile(dir_.path() / "sh.out"), signature + "\n") << readFile(dir_.path() / "sh.err");
    }
  }
};

TEST_F(WebhookReceiverExampleTest, PythonAcceptsGenuineAndRefusesForgedOrStale) {
  checkReceiver("In Python:", "python", "python3", "receiver.py");
}

TEST_F(WebhookReceiverExampleTest, NodeAcceptsGenuineAndRefusesForgedOrStale) {
  checkReceiver("In Node.js:", "js", "node", "receiver.js");
}

}  // namespace
}  // namespace countersign::testing
