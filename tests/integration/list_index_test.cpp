// The list index against the real binary: two replicas on one nats-server and bucket. Lists are
// answered from each replica's in-memory index; a decision taken through the other replica has
// left the pending list by the time the next list is asked; a restart rebuilds the index from the
// bucket; topic filters and cursors page the same items the records hold.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "countersign/json.hpp"
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

}  // namespace
}  // namespace countersign::testing
