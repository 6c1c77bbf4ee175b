// The list index against the real binary: two replicas on one nats-server and bucket. Lists are
// answered from each replica's in-memory index; a decision taken through the other replica has
// left the pending list by the time the next list is asked; a restart rebuilds the index from the
// bucket; topic filters and cursors page the same items the records hold.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "countersign/json.hpp"
#include "countersign/approval_index.hpp"
#include "countersign/record.hpp"
#include "countersign/store_tags.hpp"
#include "integration/harness/harness.hpp"

namespace countersign::testing {
namespace {

using namespace std::chrono_literals;

constexpr const char* kToken = "alice-list-index-token-4b1e";

constexpr const char* kPolicy = R"(version: v1
rules:
  - id: hold-finance
    when: { topic: "finance.>" }
    decision: require_human
    timeout: 30m
)";

std::string config(const std::string& url) {
  return basicConfig(url, "",
                     std::string("admin:\n  listen: \"127.0.0.1:0\"\n  tokens:\n    - { approver: alice, token: ") +
                         kToken + ", scope: approve }\n");
}

// The admin port from the banner (the readiness probe may have been answered by the other
// replica: wait for this one's banner).
int adminPort(const CountersignProcess& cs) {
  for (int i = 0; i < 150; ++i) {
    const std::string logs = cs.logs();
    const auto at = logs.find("admin http://127.0.0.1:");
    if (at != std::string::npos) return std::atoi(logs.c_str() + at + 23);
    std::this_thread::sleep_for(100ms);
  }
  return 0;
}

// curl's body for one request (every argument is ours: no quoting issues).
std::string curl(int port, const std::string& method, const std::string& path) {
  std::string command = "curl -s -H 'Authorization: Bearer " + std::string(kToken) + "'";
  if (method == "POST") command += " -X POST -H 'Content-Type: application/json' --data-binary '{}'";
  command += " 'http://127.0.0.1:" + std::to_string(port) + path + "'";
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return out;
  char buffer[65536];
  std::size_t n = 0;
  while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) out.append(buffer, n);
  pclose(pipe);
  return out;
}

// Every id of a list, page by page (limit `limit`), in the order given; fails on a bad page.
std::vector<std::string> listAll(int port, const std::string& query, int limit = 100) {
  std::vector<std::string> ids;
  std::string after;
  for (int pages = 0; pages < 1000; ++pages) {
    std::string path = "/api/v1/approvals?limit=" + std::to_string(limit) + (query.empty() ? "" : "&" + query);
    if (!after.empty()) path += "&after=" + after;
    const std::string body = curl(port, "GET", path);
    auto doc = json::parseStrict(body);
    if (!doc || !doc->IsObject() || !doc->HasMember("items")) {
      ADD_FAILURE() << "not a list page: " << body;
      return ids;
    }
    for (const auto& item : (*doc)["items"].GetArray()) ids.emplace_back(item["id"].GetString());
    if (!doc->HasMember("next_after")) break;
    after = (*doc)["next_after"].GetString();
  }
  return ids;
}

std::unique_ptr<CountersignProcess> replica(const NatsServer& server) {
  CountersignOptions options;
  options.config_yaml = config(server.url());
  options.policy_yaml = kPolicy;
  options.nats_url = server.url();
  return CountersignProcess::start(options);
}

TEST(ListIndexTest, ReplicasListFromTheirIndexAndSeeEachOthersDecisions) {
  auto server = NatsServer::start();
  auto a = replica(*server);
  auto b = replica(*server);
  const int port_a = adminPort(*a);
  const int port_b = adminPort(*b);
  ASSERT_GT(port_a, 0) << a->logs();
  ASSERT_GT(port_b, 0) << b->logs();

  Client client(server->url());
  constexpr int kJobs = 300;
  std::vector<std::string> expected;
  for (int i = 0; i < kJobs; ++i) {
    char id[16];
    std::snprintf(id, sizeof id, "idx-%03d", i);
    const std::string topic = i % 3 == 0 ? "finance.refund.execute" : "finance.payment.execute";
    auto reply = client.request("agents.jobs." + topic, R"({"amount":)" + std::to_string(i) + "}",
                                {{"Nats-Msg-Id", id}}, 10s);
    ASSERT_TRUE(reply.has_value()) << id;
    ASSERT_NE(reply->payload.find("\"code\":202"), std::string::npos) << reply->payload;
    expected.emplace_back(id);
  }

  // Both replicas list every pending job once, in id order, whatever the page size.
  EXPECT_EQ(listAll(port_a, "state=pending"), expected);
  std::this_thread::sleep_for(1s);  // the first list started the index; it has loaded now
  EXPECT_EQ(listAll(port_a, "state=pending", 7), expected);
  EXPECT_EQ(listAll(port_b, "state=pending", 1000), expected);
  EXPECT_EQ(listAll(port_a, "state=pending&topic=finance.refund.execute").size(), 100u);
  EXPECT_EQ(listAll(port_a, "topic=finance.*.execute").size(), 300u);
  EXPECT_TRUE(listAll(port_a, "state=pending&topic=hr.>").empty());

  // Decided through B; A's next list already knows (it waits until its index saw the bucket's
  // last write as of the request).
  for (int round = 0; round < 5; ++round) {
    char rejected[16];
    char approved[16];
    std::snprintf(rejected, sizeof rejected, "idx-%03d", 10 * round + 1);
    std::snprintf(approved, sizeof approved, "idx-%03d", 10 * round + 2);
    const std::string r = curl(port_b, "POST", std::string("/api/v1/approvals/") + rejected + "/reject");
    ASSERT_NE(r.find("\"status\":\"rejected\""), std::string::npos) << r;
    const std::string ok = curl(port_b, "POST", std::string("/api/v1/approvals/") + approved + "/approve");
    ASSERT_NE(ok.find("\"status\":\"approved\""), std::string::npos) << ok;
    const auto pending = listAll(port_a, "state=pending", 1000);
    const std::set<std::string> left(pending.begin(), pending.end());
    EXPECT_FALSE(left.contains(rejected)) << "round " << round;
    EXPECT_FALSE(left.contains(approved)) << "round " << round;
    EXPECT_EQ(pending.size(), static_cast<std::size_t>(kJobs - 2 * (round + 1)));
  }
  const std::vector<std::string> rejected{"idx-001", "idx-011", "idx-021", "idx-031", "idx-041"};
  const std::vector<std::string> released{"idx-002", "idx-012", "idx-022", "idx-032", "idx-042"};
  EXPECT_EQ(listAll(port_a, "state=rejected"), rejected);
  EXPECT_EQ(listAll(port_a, "state=released"), released);

  // The NATS list request answers from the index too, with the same filters.
  auto nats_list = client.request("countersign.control.list", R"({"state":"rejected","topic":"finance.>"})", {}, 10s);
  ASSERT_TRUE(nats_list.has_value());
  for (const auto& id : rejected) EXPECT_NE(nats_list->payload.find("\"" + id + "\""), std::string::npos) << id;

  // A restarted replica rebuilds its index from the bucket.
  EXPECT_EQ(a->stop(), 0);
  a = replica(*server);
  const int port_a2 = adminPort(*a);
  ASSERT_GT(port_a2, 0);
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(listAll(port_a2, "state=rejected"), rejected);
  EXPECT_EQ(listAll(port_a2, "state=released"), released);
  EXPECT_EQ(listAll(port_a2, "state=pending", 1000).size(), static_cast<std::size_t>(kJobs - 10));
}

// Writes `count` records straight into the bucket (async JetStream publishes, as a countersign
// that held them would have left them), with a rejected <id>/decision when `rejected`; plus the
// markers a countersign leaves once nothing needs tagging.
void seed(Client& client, const std::string& prefix, int count, bool rejected) {
  kvStore* kv = nullptr;
  kvConfig config;
  kvConfig_Init(&config);
  config.Bucket = "countersign_approvals";
  config.History = 1;
  config.StorageType = js_FileStorage;
  if (js_KeyValue(&kv, client.js(), config.Bucket) != NATS_OK) {
    ASSERT_EQ(js_CreateKeyValue(&kv, client.js(), &config), NATS_OK);
  }
  kvStore_Destroy(kv);
  auto put = [&](const std::string& key, const std::string& value) {
    natsMsg* msg = nullptr;
    ASSERT_EQ(natsMsg_Create(&msg, ("$KV.countersign_approvals." + key).c_str(), nullptr, value.data(),
                             static_cast<int>(value.size())),
              NATS_OK);
    if (js_PublishMsgAsync(client.js(), &msg, nullptr) != NATS_OK) natsMsg_Destroy(msg);
  };
  for (int i = 0; i < count; ++i) {
    char id[32];
    std::snprintf(id, sizeof id, "%s-%05d", prefix.c_str(), i);
    ApprovalRecord r;
    r.id = id;
    r.topic = i % 2 == 0 ? "finance.refund.execute" : "finance.payment.execute";
    r.subject = "agents.jobs." + r.topic;
    r.target = "jobs." + r.topic;
    r.rule = "hold-finance";
    r.payload = R"({"amount":1})";
    r.payload_is_json = true;
    r.created_at = "2026-12-06T07:00:00Z";
    r.expires_at = "2099-12-06T07:30:00Z";
    put(id, toJson(r));
    if (rejected) {
      put(std::string(id) + "/decision",
          toJson(DecisionRecord{.decision = FinalDecision::rejected, .by = "alice", .at = "2026-12-06T07:01:00Z"}));
    }
  }
  for (const std::string_view marker : {kTagsAdoptedKey, kVoteTagsAdoptedKey}) {
    put(std::string(marker), R"({"at":"2026-01-01T00:00:00Z"})");
  }
  jsPubOptions wait;
  jsPubOptions_Init(&wait);
  wait.MaxWait = 60000;
  ASSERT_EQ(js_PublishAsyncComplete(client.js(), &wait), NATS_OK);
}

// A process that lists keeps every open approval in memory but only the last
// ApprovalTable::kFinishedKept finished ones: pages that may show finished approvals are then
// read from the store, and every filter still pages every item once, in id order.
TEST(ListIndexTest, FinishedApprovalsBeyondWhatTheIndexKeepsArePagedFromTheStore) {
  auto server = NatsServer::start();
  Client client(server->url());
  constexpr int kRejected = static_cast<int>(ApprovalTable::kFinishedKept) + 40;
  constexpr int kPending = 60;
  seed(client, "old", kRejected, true);
  seed(client, "new", kPending, false);
  auto cs = replica(*server);
  const int port = adminPort(*cs);
  ASSERT_GT(port, 0) << cs->logs();

  std::vector<std::string> pending;
  for (int i = 0; i < kPending; ++i) {
    char id[32];
    std::snprintf(id, sizeof id, "new-%05d", i);
    pending.emplace_back(id);
  }
  EXPECT_EQ(listAll(port, "state=pending", 7), pending);
  std::this_thread::sleep_for(1s);  // the first list started the index; it has loaded now
  EXPECT_EQ(listAll(port, "state=pending", 7), pending);
  EXPECT_EQ(listAll(port, "state=pending&topic=finance.refund.execute", 1000).size(), kPending / 2u);

  const auto rejected = listAll(port, "state=rejected", 1000);
  EXPECT_EQ(rejected.size(), static_cast<std::size_t>(kRejected));
  EXPECT_TRUE(std::is_sorted(rejected.begin(), rejected.end()));
  EXPECT_EQ(std::set<std::string>(rejected.begin(), rejected.end()).size(), rejected.size());
  EXPECT_EQ(rejected.front(), "old-00000");
  EXPECT_EQ(rejected.back(), "old-" + std::to_string(kRejected - 1));
  const auto refunds = listAll(port, "state=rejected&topic=finance.refund.execute", 1000);
  EXPECT_EQ(refunds.size(), static_cast<std::size_t>(kRejected / 2));
  const auto everything = listAll(port, "", 1000);
  EXPECT_EQ(everything.size(), static_cast<std::size_t>(kRejected + kPending));
  EXPECT_TRUE(listAll(port, "state=released", 1000).empty());
}

}  // namespace
}  // namespace countersign::testing
