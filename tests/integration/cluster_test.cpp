// Cluster: a 3-node nats-server 2.9.10 cluster on loopback, the KV bucket and the JOBS
// stream at 3 replicas, 3 countersign replicas each connected to a different node, and 8 racing
// approvers per held job spread across the nodes. Every job must get exactly one `approved`
// answer and be delivered exactly once (JOBS and a core subscription).
//
// This is the proof that the lock (the create of a never-used `<id>/decision` key,
// docs/exactly-once.md) holds on nats-server 2.9.10 with replicas 3, where nats-server issue #4320 breaks
// locks built on kvStore_Update with an expected revision.
//
// 300 jobs by default (it takes well under the 2-minute budget on 2 cores); COUNTERSIGN_SOAK=1
// runs 1,000. CLUSTER_JOBS=<n> overrides both.
#include <gtest/gtest.h>
#include <nats/nats.h>
#include <rapidjson/document.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <latch>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "integration/harness/harness.hpp"
#include "integration/harness/wire.hpp"

namespace countersign::testing {
namespace {

constexpr const char* kBucket = "countersign_approvals";
constexpr const char* kJobsStream = "JOBS";
constexpr int kNodes = 3;
constexpr int kRacers = 8;

constexpr const char* kPolicy = R"(version: v1
rules:
  - id: hold-risky
    when: { topic: "risky.>" }
    decision: require_human
)";

int jobCount() {
  if (const char* n = std::getenv("CLUSTER_JOBS"); n != nullptr && std::atoi(n) > 0) {
    return std::atoi(n);
  }
  return soak() ? 1000 : 300;
}

// The stream's configured replica count, or -1 when it cannot be read.
std::int64_t streamReplicas(Client& client, const std::string& stream, bool* allow_direct) {
  jsStreamInfo* info = nullptr;
  jsErrCode js_error{};
  if (js_GetStreamInfo(&info, client.js(), stream.c_str(), nullptr, &js_error) != NATS_OK) {
    return -1;
  }
  const std::int64_t replicas = info->Config->Replicas;
  if (allow_direct != nullptr) *allow_direct = info->Config->AllowDirect;
  jsStreamInfo_Destroy(info);
  return replicas;
}

// JOBS over jobs.> at 3 replicas; retried while the cluster is still forming.
bool addReplicatedStream(Client& client, const std::string& name, const std::string& subject) {
  const char* subjects[] = {subject.c_str()};
  jsStreamConfig config;
  jsStreamConfig_Init(&config);
  config.Name = name.c_str();
  config.Subjects = subjects;
  config.SubjectsLen = 1;
  config.Storage = js_FileStorage;
  config.Replicas = kNodes;
  std::string last_error;
  const bool ok = waitUntil(
      [&] {
        jsStreamInfo* info = nullptr;
        jsErrCode js_error{};
        natsStatus s = js_AddStream(&info, client.js(), &config, nullptr, &js_error);
        jsStreamInfo_Destroy(info);
        if (s != NATS_OK) {
          last_error = std::string(natsStatus_GetText(s)) + " (" + std::to_string(js_error) + ")";
        }
        return s == NATS_OK;
      },
      30s, 250ms);
  if (!ok) ADD_FAILURE() << "cannot create " << name << " at R3: " << last_error;
  return ok;
}

struct NatsCluster {
  std::vector<std::unique_ptr<NatsServer>> nodes;
  std::vector<std::unique_ptr<Client>> clients;  // one per node
};

NatsCluster startCluster() {
  std::vector<int> route_ports;
  for (int i = 0; i < kNodes; ++i) route_ports.push_back(freePort());
  NatsCluster c;
  for (int i = 0; i < kNodes; ++i) {
    std::string routes;
    for (int j = 0; j < kNodes; ++j) {
      if (j == i) continue;
      routes += (routes.empty() ? "\"" : ", \"") + std::string("nats-route://127.0.0.1:") +
                std::to_string(route_ports[static_cast<std::size_t>(j)]) + "\"";
    }
    NatsServerOptions options;
    options.extra_config = "server_name: n" + std::to_string(i) +
                           "\n"
                           "cluster {\n"
                           "  name: countersign-it\n"
                           "  listen: \"127.0.0.1:" +
                           std::to_string(route_ports[static_cast<std::size_t>(i)]) +
                           "\"\n"
                           "  routes: [" +
                           routes +
                           "]\n"
                           "}\n";
    c.nodes.push_back(NatsServer::start(options));
  }
  for (const auto& node : c.nodes) c.clients.push_back(std::make_unique<Client>(node->url()));
  // JetStream answers only once the meta leader is elected: ask every node.
  for (std::size_t i = 0; i < c.clients.size(); ++i) {
    const bool ready = waitUntil(
        [&] {
          jsAccountInfo* info = nullptr;
          jsErrCode js_error{};
          natsStatus s = js_GetAccountInfo(&info, c.clients[i]->js(), nullptr, &js_error);
          jsAccountInfo_Destroy(info);
          return s == NATS_OK;
        },
        30s, 200ms);
    if (!ready)
      throw std::runtime_error("JetStream meta leader not elected on node " + std::to_string(i));
  }
  return c;
}

long long msSince(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               since)
      .count();
}

// A hold as a well-behaved producer sends it: a 503 that says "retryable" (the R3 bucket did not
// confirm the create within countersign's 5 s, as can happen on a loaded 2-vCPU machine) is sent
// again with the same Nats-Msg-Id, up to 3 times. Every retry is printed and counted: a test
// fails when more than kMaxHoldRetries were needed (a store that keeps timing out is a finding,
// not noise). Returns the last answer.
constexpr int kMaxHoldRetries = 3;
int g_hold_retries = 0;
std::optional<Message> hold(Client& producer, const std::string& payload, const std::string& id) {
  std::optional<Message> answer;
  for (int attempt = 1; attempt <= 3; ++attempt) {
    answer = producer.request("agents.jobs.risky.transfer", payload, {{"Nats-Msg-Id", id}}, 10s);
    if (!answer) return answer;
    const auto body = parseJsonQuiet(answer->payload);
    if (num(body, "code") != 503 || !body.IsObject() || !body.HasMember("retryable") ||
        !body["retryable"].IsBool() || !body["retryable"].GetBool()) {
      return answer;
    }
    ++g_hold_retries;
    std::cout << "[cluster] " << id << ": 503 retryable on attempt " << attempt << ", sending again\n";
    std::this_thread::sleep_for(500ms);
  }
  return answer;
}

std::unique_ptr<CountersignProcess> startReplica(const std::string& url) {
  CountersignOptions options;
  options.config_yaml = gatewayConfig({.servers = {url}, .store_replicas = kNodes, .lease = "1s"});
  options.policy_yaml = kPolicy;
  options.nats_url = url;
  options.wait_ready = false;
  auto process = CountersignProcess::start(options);
  if (!saysReady(*process, 30s))
    ADD_FAILURE() << "countersign on " << url << " not ready:\n" << process->logs();
  return process;
}

TEST(ClusterTest, EightRacersPerJobOnThreeNodesApproveAndDeliverExactlyOnce) {
  const int jobs = jobCount();
  const auto started = std::chrono::steady_clock::now();
  NatsCluster cluster = startCluster();
  ASSERT_TRUE(addReplicatedStream(*cluster.clients[0], kJobsStream, "jobs.>"));

  // The first replica creates the bucket at R3; the others open it.
  std::vector<std::unique_ptr<CountersignProcess>> replicas;
  for (int i = 0; i < kNodes; ++i) {
    replicas.push_back(startReplica(cluster.nodes[static_cast<std::size_t>(i)]->url()));
  }
  bool allow_direct = false;
  ASSERT_EQ(streamReplicas(*cluster.clients[1], std::string("KV_") + kBucket, &allow_direct), 3)
      << "the test must run against a bucket at replicas 3";
  ASSERT_EQ(streamReplicas(*cluster.clients[2], kJobsStream, nullptr), 3);
  std::cout << "[cluster] bucket at R3, allow_direct " << (allow_direct ? "true" : "false")
            << "; cluster up in " << msSince(started) << " ms\n";

  std::vector<std::unique_ptr<Client>> racers;
  for (int i = 0; i < kRacers; ++i) {
    racers.push_back(
        std::make_unique<Client>(cluster.nodes[static_cast<std::size_t>(i % kNodes)]->url()));
  }
  Collector deliveries(*cluster.clients[1], "jobs.>");

  // Hold every job first (producers on all three nodes).
  std::vector<std::string> ids;
  g_hold_retries = 0;
  for (int j = 0; j < jobs; ++j) {
    const std::string id = "cl-" + std::to_string(j);
    Client& producer = *cluster.clients[static_cast<std::size_t>(j % kNodes)];
    auto held = hold(producer, R"({"job":)" + std::to_string(j) + "}", id);
    ASSERT_TRUE(held.has_value()) << id << ": no answer to the hold";
    ASSERT_EQ(num(parseJsonQuiet(held->payload), "code"), 202) << id << ": " << held->payload;
    ids.push_back(id);
  }
  EXPECT_LE(g_hold_retries, kMaxHoldRetries) << "holds answered 503 retryable too often";
  const auto hold_ms = msSince(started);
  const auto race_started = std::chrono::steady_clock::now();

  int not_one_winner = 0;   // jobs without exactly one `approved` answer
  int incoherent_jobs = 0;  // jobs where a loser got anything but already_approved(winner)
  std::map<std::string, int> totals;
  for (const auto& id : ids) {
    std::vector<std::optional<Message>> replies(kRacers);
    std::latch go(kRacers + 1);
    std::vector<std::thread> threads;
    for (int i = 0; i < kRacers; ++i) {
      threads.emplace_back([&, i] {
        const std::string body =
            R"({"id":")" + id + R"(","approver":"racer-)" + std::to_string(i) + R"("})";
        go.arrive_and_wait();
        replies[static_cast<std::size_t>(i)] = racers[static_cast<std::size_t>(i)]->request(
            "countersign.control.approve", body, {}, 15s);
      });
    }
    go.arrive_and_wait();
    for (auto& t : threads) t.join();

    std::map<std::string, int> tally;
    std::string winner;
    bool losers_coherent = true;
    for (int i = 0; i < kRacers; ++i) {
      const auto& reply = replies[static_cast<std::size_t>(i)];
      if (!reply) {
        ++tally["<no answer>"];
        continue;
      }
      auto body = parseJsonQuiet(reply->payload);
      std::string key = str(body, "status") + "/" + std::to_string(num(body, "code"));
      if (str(body, "status") == "conflict") key += "/" + str(body, "reason");
      ++tally[key];
      if (str(body, "status") == "approved") winner = "racer-" + std::to_string(i);
    }
    for (int i = 0; i < kRacers; ++i) {
      const auto& reply = replies[static_cast<std::size_t>(i)];
      if (!reply || "racer-" + std::to_string(i) == winner) continue;
      auto body = parseJsonQuiet(reply->payload);
      losers_coherent = losers_coherent && str(body, "status") == "already_approved" &&
                        num(body, "code") == 200 && str(body, "decided_by") == winner;
    }
    for (const auto& [key, n] : tally) totals[key] += n;
    if (tally["approved/200"] != 1 && ++not_one_winner <= 10) {
      ADD_FAILURE() << id << ": not exactly one approved answer "
                    << ::testing::PrintToString(tally);
    }
    if (!losers_coherent && ++incoherent_jobs <= 10) {
      ADD_FAILURE() << id << ": a losing racer got something else than already_approved naming "
                    << winner << ": " << ::testing::PrintToString(tally);
    }
  }
  const auto race_ms = msSince(race_started);
  std::cout << "[cluster] answers " << ::testing::PrintToString(totals) << "\n";
  EXPECT_EQ(not_one_winner, 0) << "jobs without exactly one approved answer";
  // A decided job is not "lock_busy": the store confirmed someone's decision (docs/protocol.md
  // says lock_busy means the store did not confirm). Seen on this cluster: cnats 3.4.1 follows a
  // failed create with a get that, answered by a lagging replica (the bucket allows direct gets),
  // clears the "wrong last sequence" text, so the loser looks like a store failure; and the
  // loser's read of `<id>/decision` can come from a replica that does not have it yet.
  EXPECT_EQ(incoherent_jobs, 0) << "jobs where a loser was not told already_approved";

  // Deliveries: JOBS (R3) and the core subscription; give stray releases time to show.
  deliveries.waitFor(static_cast<std::size_t>(jobs), 30s);
  std::this_thread::sleep_for(2500ms);
  std::map<std::string, int> in_stream;
  for (const auto& [seq, m] : readStream(*cluster.clients[2], kJobsStream)) {
    ++in_stream[header(m, "Countersign-Approval-Id")];
  }
  std::map<std::string, int> on_subject;
  for (const auto& m : deliveries.messages()) ++on_subject[header(m, "Countersign-Approval-Id")];
  int wrong_stream = 0;
  int wrong_subject = 0;
  for (const auto& id : ids) {
    if (in_stream[id] != 1 && ++wrong_stream <= 10) {
      ADD_FAILURE() << id << " stored " << in_stream[id] << " times in JOBS";
    }
    if (on_subject[id] != 1 && ++wrong_subject <= 10) {
      ADD_FAILURE() << id << " published " << on_subject[id] << " times on jobs.>";
    }
  }
  EXPECT_EQ(in_stream.size(), ids.size()) << "JOBS holds ids that were never held";
  EXPECT_EQ(wrong_stream, 0);
  EXPECT_EQ(wrong_subject, 0);
  // In a cluster each replica's key watcher follows the bucket with one consumer that stays
  // (consumers made and deleted for short passes would keep the meta group busy).
  const std::string kv_stream = std::string("KV_") + kBucket;
  EXPECT_EQ(cluster.clients[0]->streamConsumerCount(kv_stream), static_cast<std::uint64_t>(kNodes));
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(cluster.clients[0]->streamConsumerCount(kv_stream), static_cast<std::uint64_t>(kNodes));
  for (auto& replica : replicas) EXPECT_FALSE(replica->waitExit(0ms).has_value());
  std::cout << "[cluster] " << jobs << " jobs: held after " << hold_ms << " ms, race " << race_ms
            << " ms, total " << msSince(started) << " ms\n";
}

// A reviewer who approves the moment the hold is answered, through another node, must find the
// job (the record is read from that node's replica of the bucket). Seen failing about once in 7
// runs with not_found 404: the record was read from a replica that did not have it yet.
TEST(ClusterTest, ApprovalRightAfterTheHoldThroughAnotherNodeFindsTheJob) {
  NatsCluster cluster = startCluster();
  ASSERT_TRUE(addReplicatedStream(*cluster.clients[0], kJobsStream, "jobs.>"));
  std::vector<std::unique_ptr<CountersignProcess>> replicas;
  for (int i = 0; i < kNodes; ++i) {
    replicas.push_back(startReplica(cluster.nodes[static_cast<std::size_t>(i)]->url()));
  }
  std::map<std::string, int> tally;
  std::vector<std::string> odd;  // answers other than approved/200
  constexpr int kJobs = 150;
  g_hold_retries = 0;
  for (int j = 0; j < kJobs; ++j) {
    const std::string id = "quick-" + std::to_string(j);
    auto held = hold(*cluster.clients[static_cast<std::size_t>(j % kNodes)], "{}", id);
    ASSERT_TRUE(held.has_value()) << id;
    ASSERT_EQ(num(parseJsonQuiet(held->payload), "code"), 202) << held->payload;
    auto approved = cluster.clients[static_cast<std::size_t>((j + 1) % kNodes)]->request(
        "countersign.control.approve", R"({"id":")" + id + R"(","approver":"quick"})", {}, 10s);
    ASSERT_TRUE(approved.has_value()) << id;
    auto body = parseJsonQuiet(approved->payload);
    ++tally[str(body, "status") + "/" + std::to_string(num(body, "code"))];
    if (num(body, "code") != 200) odd.push_back(id + ": " + approved->payload);
  }
  EXPECT_LE(g_hold_retries, kMaxHoldRetries) << "holds answered 503 retryable too often";
  EXPECT_EQ(tally["approved/200"], kJobs)
      << ::testing::PrintToString(tally) << "; " << ::testing::PrintToString(odd);
  EXPECT_TRUE(
      waitUntil([&] { return cluster.clients[0]->streamMessageCount(kJobsStream) >= kJobs; }, 10s));
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(cluster.clients[0]->streamMessageCount(kJobsStream), static_cast<std::uint64_t>(kJobs));
}

// The fact the design rests on (docs/exactly-once.md), at the cnats level on this server: on a
// bucket at replicas 3, of 8 concurrent creates of a never-used key exactly one wins. Also
// counts how the losers are told (cnats 3.4.1 follows a failed create with a get that, answered
// by a lagging replica, clears the "wrong last sequence" text) and how often a read right after
// a win, through another node, does not see it yet.
TEST(ClusterTest, CreateOfANeverUsedKeyIsExclusiveAtReplicasThree) {
  NatsCluster cluster = startCluster();
  kvStore* admin = nullptr;
  {
    kvConfig config;
    kvConfig_Init(&config);
    config.Bucket = "lockfacts";
    config.History = 1;
    config.StorageType = js_FileStorage;
    config.Replicas = kNodes;
    // A freshly formed cluster may not place a replicas-3 stream yet (seen under load in CI:
    // NATS_ERR after 0.6 s): retry until it can, within a deadline.
    ASSERT_TRUE(waitUntil(
        [&] { return js_CreateKeyValue(&admin, cluster.clients[0]->js(), &config) == NATS_OK; },
        30s, 250ms));
  }
  std::vector<std::unique_ptr<Client>> connections;
  std::vector<kvStore*> handles;
  for (int i = 0; i < kRacers; ++i) {
    connections.push_back(
        std::make_unique<Client>(cluster.nodes[static_cast<std::size_t>(i % kNodes)]->url()));
    kvStore* kv = nullptr;
    ASSERT_EQ(js_KeyValue(&kv, connections.back()->js(), "lockfacts"), NATS_OK);
    handles.push_back(kv);
  }
  constexpr int kRounds = 300;
  std::mutex mutex;
  std::map<std::string, int> outcomes;
  int rounds_without_one_winner = 0;
  int stale_reads = 0;
  for (int r = 0; r < kRounds; ++r) {
    const std::string key = "k" + std::to_string(r);
    std::latch go(kRacers + 1);
    std::vector<std::thread> threads;
    int winners = 0;
    for (int i = 0; i < kRacers; ++i) {
      threads.emplace_back([&, i] {
        go.arrive_and_wait();
        natsStatus s =
            kvStore_Create(nullptr, handles[static_cast<std::size_t>(i)], key.c_str(), "v", 1);
        std::string what = "created";
        if (s == NATS_OK) {
          kvEntry* entry = nullptr;
          natsStatus got = kvStore_Get(&entry, handles[static_cast<std::size_t>((i + 1) % kRacers)],
                                       key.c_str());
          kvEntry_Destroy(entry);
          std::lock_guard lock(mutex);
          ++winners;
          if (got == NATS_NOT_FOUND) ++stale_reads;
        } else {
          natsStatus ignored = NATS_OK;
          const char* text = nats_GetLastError(&ignored);
          const std::string detail = text != nullptr ? text : "";
          what = std::string("lost: ") + natsStatus_GetText(s) + ", " +
                 (detail.find("wrong last sequence") != std::string::npos ? "wrong last sequence"
                  : detail.empty()                                        ? "no error text"
                                                                          : detail);
        }
        std::lock_guard lock(mutex);
        ++outcomes[what];
      });
    }
    go.arrive_and_wait();
    for (auto& t : threads) t.join();
    if (winners != 1) ++rounds_without_one_winner;
  }
  std::cout << "[cluster] " << kRounds << " rounds x " << kRacers
            << " creates: " << ::testing::PrintToString(outcomes)
            << "; reads right after a win that did not see it: " << stale_reads << "\n";
  EXPECT_EQ(rounds_without_one_winner, 0);
  EXPECT_EQ(outcomes["created"], kRounds);
  for (auto* kv : handles) kvStore_Destroy(kv);
  kvStore_Destroy(admin);
}

}  // namespace
}  // namespace countersign::testing

namespace countersign::testing {
namespace {

constexpr const char* kQuorumPolicy = R"(version: v1
rules:
  - id: two-of-three
    when: { topic: "risky.>" }
    decision: require_human
    approvers: [alice, bob, carol]
    quorum: 2
)";

constexpr const char* kQuorumApprovers = R"(approvers:
  people:
    - {name: alice}
    - {name: bob}
    - {name: carol}
)";

int quorumJobs() {
  if (const char* n = std::getenv("QUORUM_JOBS"); n != nullptr && std::atoi(n) > 0) return std::atoi(n);
  return 200;
}

// 2-of-3 approvers on 3 countersign replicas (bucket and JOBS at R3): every fourth job gets one
// vote only and must never be released; the others get all three votes at once, through three
// nodes. Exactly one delivery per quorum job, none for the rest, and every delivery names at
// least two approvers.
TEST(ClusterTest, QuorumRaceOfTwoOfThreeDeliversOncePerJobAndNeverWithoutQuorum) {
  const int jobs = quorumJobs();
  const auto started = std::chrono::steady_clock::now();
  NatsCluster cluster = startCluster();
  ASSERT_TRUE(addReplicatedStream(*cluster.clients[0], kJobsStream, "jobs.>"));
  std::vector<std::unique_ptr<CountersignProcess>> replicas;
  for (int i = 0; i < kNodes; ++i) {
    CountersignOptions options;
    const std::string url = cluster.nodes[static_cast<std::size_t>(i)]->url();
    options.config_yaml = gatewayConfig({.servers = {url}, .store_replicas = kNodes, .lease = "1s"}) + kQuorumApprovers;
    options.policy_yaml = kQuorumPolicy;
    options.nats_url = url;
    options.wait_ready = false;
    replicas.push_back(CountersignProcess::start(options));
    ASSERT_TRUE(saysReady(*replicas.back(), 30s)) << replicas.back()->logs();
  }
  const char* names[] = {"alice", "bob", "carol"};
  std::vector<std::string> quorum_ids;
  std::vector<std::string> single_ids;
  std::map<std::string, int> totals;
  int not_one_approved = 0;
  g_hold_retries = 0;
  for (int j = 0; j < jobs; ++j) {
    const std::string id = "q-" + std::to_string(j);
    auto held = hold(*cluster.clients[static_cast<std::size_t>(j % kNodes)], R"({"job":)" + std::to_string(j) + "}", id);
    ASSERT_TRUE(held.has_value()) << id;
    ASSERT_EQ(num(parseJsonQuiet(held->payload), "code"), 202) << id << ": " << held->payload;
    const bool single = j % 4 == 0;
    (single ? single_ids : quorum_ids).push_back(id);
    const int voters = single ? 1 : 3;
    std::vector<std::optional<Message>> replies(static_cast<std::size_t>(voters));
    std::latch go(voters + 1);
    std::vector<std::thread> threads;
    for (int v = 0; v < voters; ++v) {
      threads.emplace_back([&, v] {
        const std::string body = R"({"id":")" + id + R"(","approver":")" + names[v] + R"("})";
        go.arrive_and_wait();
        replies[static_cast<std::size_t>(v)] = cluster.clients[static_cast<std::size_t>((j + v) % kNodes)]->request(
            "countersign.control.approve", body, {}, 15s);
      });
    }
    go.arrive_and_wait();
    for (auto& t : threads) t.join();
    int approved = 0;
    for (const auto& reply : replies) {
      const auto body = reply ? parseJsonQuiet(reply->payload) : parseJsonQuiet("{}");
      const std::string key = reply ? str(body, "status") + "/" + std::to_string(num(body, "code")) : "<no answer>";
      ++totals[key];
      approved += key == "approved/200" ? 1 : 0;
    }
    // A quorum job is approved by one of its answers, unless no vote saw the others (then the
    // replayer decides it, which the delivery count below still checks).
    if (!single && approved > 1 && ++not_one_approved <= 10) {
      ADD_FAILURE() << id << ": " << approved << " approved answers";
    }
    if (single) {
      EXPECT_EQ(approved, 0) << id << ": approved with one vote";
    }
  }
  EXPECT_LE(g_hold_retries, kMaxHoldRetries);
  std::cout << "[quorum] answers " << ::testing::PrintToString(totals) << "\n";
  EXPECT_EQ(not_one_approved, 0);

  // Deliveries, after the replayers' lease has passed for any decision left to them.
  waitUntil([&] { return readStream(*cluster.clients[2], kJobsStream).size() >= quorum_ids.size(); }, 60s, 500ms);
  std::this_thread::sleep_for(3s);
  std::map<std::string, int> in_stream;
  int without_quorum = 0;
  for (const auto& [seq, m] : readStream(*cluster.clients[2], kJobsStream)) {
    ++in_stream[header(m, "Countersign-Approval-Id")];
    const std::string by = header(m, "Countersign-Approved-By");
    if (std::count(by.begin(), by.end(), ',') < 1) ++without_quorum;
  }
  int wrong = 0;
  for (const auto& id : quorum_ids) {
    if (in_stream[id] != 1 && ++wrong <= 10) ADD_FAILURE() << id << " stored " << in_stream[id] << " times";
  }
  int released_single = 0;
  for (const auto& id : single_ids) released_single += in_stream[id];
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(released_single, 0) << "jobs with one vote were released";
  EXPECT_EQ(without_quorum, 0) << "deliveries naming fewer than two approvers";
  std::cout << "[quorum] " << jobs << " jobs (" << quorum_ids.size() << " with 3 racing votes, " << single_ids.size()
            << " with one), " << msSince(started) << " ms\n";
}

}  // namespace
}  // namespace countersign::testing
