// The cnats adapters (src/nats/) and the harness itself, against real nats-server processes.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "integration/harness/harness.hpp"
#include "integration/harness/wire.hpp"
#include "nats/child_process.hpp"
#include "nats/connection.hpp"
#include "nats/embedded_server.hpp"
#include "nats/kv_bucket.hpp"
#include "nats/message_convert.hpp"
#include "nats/nats_publisher.hpp"
#include "nats/record_index.hpp"
#include "nats/subscriber.hpp"

namespace countersign::testing {
namespace {

namespace fs = std::filesystem;
using natsio::Connection;
using natsio::EmbeddedServer;
using natsio::KvBucket;
using natsio::NatsPublisher;
using natsio::Subscription;

// ---- helpers --------------------------------------------------------------------------------

NatsConfig configFor(const std::string& url) {
  NatsConfig config;
  config.servers = {url};
  config.name = "countersign-it";
  return config;
}

std::unique_ptr<Connection> connectTo(const std::string& url, natsio::Logger logger = {}) {
  auto connection = Connection::connect(configFor(url), "test", false, std::move(logger));
  if (!connection) throw std::runtime_error("connect: " + connection.error().message);
  return std::move(*connection);
}

std::unique_ptr<KvBucket> openBucket(Connection& connection,
                                     const std::string& bucket = "approvals",
                                     std::chrono::seconds max_age = std::chrono::seconds(0)) {
  StoreConfig config;
  config.bucket = bucket;
  config.max_age = max_age;
  auto kv = KvBucket::open(connection, config);
  if (!kv) throw std::runtime_error("open bucket: " + kv.error().message);
  return std::move(*kv);
}

// A KV bucket's stream as one made elsewhere might be, without allow_direct: countersign reads
// it through the stream leader.
natsStatus addBucketWithoutDirectGets(Connection& connection, const std::string& bucket) {
  const std::string name = "KV_" + bucket;
  const std::string subject = "$KV." + bucket + ".>";
  const char* subjects[] = {subject.c_str()};
  jsStreamConfig stream;
  jsStreamConfig_Init(&stream);
  stream.Name = name.c_str();
  stream.Subjects = subjects;
  stream.SubjectsLen = 1;
  stream.Storage = js_FileStorage;
  stream.MaxMsgsPerSubject = 1;
  stream.Discard = js_DiscardNew;
  stream.DenyDelete = true;
  stream.AllowRollup = true;
  stream.AllowDirect = false;
  jsStreamInfo* info = nullptr;
  const natsStatus s = js_AddStream(&info, connection.js(), &stream, nullptr, nullptr);
  jsStreamInfo_Destroy(info);
  return s;
}

// A socket listening on a free loopback port until destroyed.
struct Listener {
  int fd = -1;
  int port = 0;
  Listener() {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 4) != 0) {
      throw std::runtime_error("listen");
    }
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    port = ntohs(addr.sin_port);
  }
  ~Listener() { ::close(fd); }
};

std::vector<std::string> valuesOf(const Headers& headers, const std::string& name) {
  std::vector<std::string> values;
  for (const auto& [n, v] : headers) {
    if (n == name) values.push_back(v);
  }
  return values;
}

// Polls `predicate` every 10 ms until it holds or `timeout` passes.
bool eventually(const std::function<bool()>& predicate, std::chrono::milliseconds timeout = 10s) {
  return waitUntil(predicate, timeout, 10ms);
}

// Collects what a Subscription handler receives.
struct Inbox {
  std::mutex mutex;
  std::vector<Message> messages;
  std::vector<std::thread::id> threads;
  Subscription::Handler handler() {
    return [this](Message&& m) {
      std::lock_guard lock(mutex);
      messages.push_back(std::move(m));
      threads.push_back(std::this_thread::get_id());
    };
  }
  std::size_t size() {
    std::lock_guard lock(mutex);
    return messages.size();
  }
  std::vector<Message> copy() {
    std::lock_guard lock(mutex);
    return messages;
  }
};

class NatsAdapterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server = NatsServer::start();
    connection = connectTo(server->url());
  }
  std::unique_ptr<NatsServer> server;
  std::unique_ptr<Connection> connection;
};

// ---- Connection -----------------------------------------------------------------------------

TEST(NatsConnection, FailsClearlyWhenNoServerListens) {
  const int port = freePort();
  const auto started = std::chrono::steady_clock::now();
  auto connection =
      Connection::connect(configFor("nats://127.0.0.1:" + std::to_string(port)), "", false);
  ASSERT_FALSE(connection.has_value());
  EXPECT_EQ(connection.error().code, Errc::unavailable);
  EXPECT_NE(connection.error().message.find(std::to_string(port)), std::string::npos)
      << connection.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
}

TEST(NatsConnection, RefusesAnEmptyServerList) {
  NatsConfig config;
  config.servers.clear();
  auto connection = Connection::connect(config, "", false);
  ASSERT_FALSE(connection.has_value());
  EXPECT_EQ(connection.error().code, Errc::invalid_argument);
}

TEST(NatsConnection, RefusesAMissingCredentialsFile) {
  auto server = NatsServer::start();
  NatsConfig config = configFor(server->url());
  config.credentials = "/nonexistent/countersign.creds";
  auto connection = Connection::connect(config, "", false);
  EXPECT_FALSE(connection.has_value());
}

TEST_F(NatsAdapterTest, ReportsMaxPayloadConnectedAndFlush) {
  EXPECT_TRUE(connection->connected());
  EXPECT_EQ(connection->maxPayload(), 1024u * 1024u);
  EXPECT_TRUE(connection->flush(2s).has_value());
  EXPECT_NE(connection->js(), nullptr);
  EXPECT_NE(connection->raw(), nullptr);
}

TEST(NatsConnection, MaxPayloadFollowsTheServer) {
  NatsServerOptions options;
  options.extra_config = "max_payload: 4096";
  auto server = NatsServer::start(options);
  auto connection = connectTo(server->url());
  EXPECT_EQ(connection->maxPayload(), 4096u);
  // The size is kept from the last connect: a reconnect to a server that allows another size
  // (on the same address) changes it.
  const int port = server->port();
  server->stop();
  ASSERT_TRUE(eventually([&] { return !connection->connected(); }));
  NatsServerOptions smaller;
  smaller.extra_config = "max_payload: 2048";
  smaller.port = port;
  auto other = NatsServer::start(smaller);
  ASSERT_TRUE(eventually([&] { return connection->connected(); }));
  EXPECT_TRUE(eventually([&] { return connection->maxPayload() == 2048u; })) << connection->maxPayload();
}

TEST(NatsConnection, LogsDisconnectAndReconnectAcrossAServerRestart) {
  auto server = NatsServer::start();
  std::mutex mutex;
  std::vector<std::string> lines;
  auto connection = connectTo(server->url(), [&](std::string_view line) {
    std::lock_guard lock(mutex);
    lines.emplace_back(line);
  });
  auto logged = [&](const std::string& word) {
    std::lock_guard lock(mutex);
    return std::any_of(lines.begin(), lines.end(),
                       [&](const std::string& l) { return l.find(word) != std::string::npos; });
  };
  server->stop();
  EXPECT_TRUE(eventually([&] { return logged("disconnected"); }));
  EXPECT_FALSE(connection->connected());
  server->restart();
  EXPECT_TRUE(eventually([&] { return logged("reconnected"); }));
  EXPECT_TRUE(eventually([&] { return connection->connected(); }));
  EXPECT_TRUE(connection->flush(2s).has_value());
  // The connection name carries the suffix given at connect.
  std::lock_guard lock(mutex);
  EXPECT_TRUE(std::any_of(lines.begin(), lines.end(), [](const std::string& l) {
    return l.find("countersign-it-test") != std::string::npos;
  }));
}

TEST_F(NatsAdapterTest, DrainDeliversPendingMessagesThenCloses) {
  Client client(server->url());
  std::atomic<int> handled{0};
  auto sub = Subscription::subscribe(*connection, "slow.>", "", [&](Message&&) {
    std::this_thread::sleep_for(2ms);
    handled.fetch_add(1);
  });
  ASSERT_TRUE(sub.has_value()) << sub.error().message;
  ASSERT_TRUE(connection->flush(2s).has_value());
  for (int i = 0; i < 100; ++i) client.publish("slow.x", std::to_string(i));
  client.flush();
  // Wait until the server handed them all over, then drain: none may be lost.
  ASSERT_TRUE(connection->flush(2s).has_value());
  connection->drain(10s);
  EXPECT_EQ(handled.load(), 100);
  EXPECT_FALSE(connection->connected());
}

// ---- KvBucket -------------------------------------------------------------------------------

TEST_F(NatsAdapterTest, BucketIsCreatedWithHistoryOneFileStorageAndMaxAge) {
  auto kv = openBucket(*connection, "made_here", std::chrono::seconds(3600));
  jsStreamInfo* info = nullptr;
  jsErrCode js_error{};
  ASSERT_EQ(js_GetStreamInfo(&info, connection->js(), "KV_made_here", nullptr, &js_error), NATS_OK);
  EXPECT_EQ(info->Config->MaxMsgsPerSubject, 1);
  EXPECT_EQ(info->Config->Storage, js_FileStorage);
  EXPECT_EQ(info->Config->Replicas, 1);
  EXPECT_EQ(info->Config->MaxAge, 3600LL * 1000 * 1000 * 1000);
  EXPECT_TRUE(info->Config->AllowDirect);  // so that KvBucket::get may read it with direct gets
  jsStreamInfo_Destroy(info);

  // A second open with the same max_age binds to the same bucket and sees its data; one with
  // another max_age is refused (records would age out at another time than configured).
  ASSERT_TRUE(kv->create("k", "v").has_value());
  StoreConfig other;
  other.bucket = "made_here";
  auto refused = KvBucket::open(*connection, other);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, Errc::invalid_argument);
  EXPECT_NE(refused.error().message.find("exists with other settings"), std::string::npos) << refused.error().message;
  auto again = openBucket(*connection, "made_here", std::chrono::seconds(3600));
  auto entry = again->get("k");
  ASSERT_TRUE(entry.has_value());
  EXPECT_EQ(entry->value, "v");
}

TEST_F(NatsAdapterTest, KvCreateGetUpdateSemantics) {
  auto kv = openBucket(*connection);
  auto first = kv->create("job-1", "one");
  ASSERT_TRUE(first.has_value()) << first.error().message;
  EXPECT_GT(*first, 0u);

  auto twice = kv->create("job-1", "other");
  ASSERT_FALSE(twice.has_value());
  EXPECT_EQ(twice.error().code, Errc::exists);

  auto entry = kv->get("job-1");
  ASSERT_TRUE(entry.has_value());
  EXPECT_EQ(entry->value, "one");
  EXPECT_EQ(entry->revision, *first);

  auto updated = kv->update("job-1", "two", *first);
  ASSERT_TRUE(updated.has_value()) << updated.error().message;
  EXPECT_GT(*updated, *first);

  auto stale = kv->update("job-1", "three", *first);
  ASSERT_FALSE(stale.has_value());
  EXPECT_EQ(stale.error().code, Errc::wrong_revision);
  entry = kv->get("job-1");
  ASSERT_TRUE(entry.has_value());
  EXPECT_EQ(entry->value, "two");
  EXPECT_EQ(entry->revision, *updated);

  auto missing = kv->get("nope");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, Errc::not_found);

  auto update_missing = kv->update("nope", "x", 5);
  ASSERT_FALSE(update_missing.has_value());
  EXPECT_EQ(update_missing.error().code, Errc::wrong_revision);
  EXPECT_EQ(kv->get("nope").error().code, Errc::not_found);
}

TEST_F(NatsAdapterTest, KvUpdateWithRevisionZeroIsRefusedNotAnUnconditionalPut) {
  auto kv = openBucket(*connection);
  ASSERT_TRUE(kv->create("k", "original").has_value());
  auto zero = kv->update("k", "overwritten", 0);
  ASSERT_FALSE(zero.has_value());
  EXPECT_EQ(zero.error().code, Errc::invalid_argument);
  EXPECT_EQ(kv->get("k")->value, "original");
  EXPECT_EQ(kv->update("fresh", "x", 0).error().code, Errc::invalid_argument);
  EXPECT_EQ(kv->get("fresh").error().code, Errc::not_found);
}

TEST_F(NatsAdapterTest, KvKeysWithSlashesAndBinaryValues) {
  auto kv = openBucket(*connection);
  const std::string binary("a\0b\xff\r\n", 6);
  ASSERT_TRUE(kv->create("id-1/decision", binary).has_value());
  ASSERT_TRUE(kv->create("id-1/replay/1", "").has_value());
  EXPECT_EQ(kv->get("id-1/decision")->value, binary);
  EXPECT_EQ(kv->get("id-1/replay/1")->value, "");
}

// Reads are direct gets only where the bucket allows them; a bucket made elsewhere without
// allow_direct is read through its stream leader, with the same answers.
TEST_F(NatsAdapterTest, KvBucketWithoutDirectGetsIsReadThroughTheLeader) {
  ASSERT_EQ(addBucketWithoutDirectGets(*connection, "nodirect"), NATS_OK);

  auto kv = openBucket(*connection, "nodirect");
  auto created = kv->create("k1", "first");
  ASSERT_TRUE(created.has_value()) << created.error().message;
  auto got = kv->get("k1");
  ASSERT_TRUE(got.has_value()) << got.error().message;
  EXPECT_EQ(got->value, "first");
  EXPECT_EQ(got->revision, *created);
  auto missing = kv->get("k2");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, Errc::not_found);
  auto lost = kv->create("k1", "second");
  ASSERT_FALSE(lost.has_value());
  EXPECT_EQ(lost.error().code, Errc::exists);
}

// getMany answers each key as get() does, whatever mix of keys it is given: present, updated,
// empty and binary values, never written, deleted, invalid; on a bucket read with direct gets
// (sent at once), on one read through the stream leader, and over a connection whose reply
// inboxes have their own prefix.
TEST_F(NatsAdapterTest, KvGetManyAnswersEachKeyAsGetDoes) {
  ASSERT_EQ(addBucketWithoutDirectGets(*connection, "nodirect"), NATS_OK);

  NatsConfig prefixed = configFor(server->url());
  prefixed.inbox_prefix = "_CS_REPLIES.test";
  auto prefixed_connection = Connection::connect(prefixed, "prefixed", false);
  ASSERT_TRUE(prefixed_connection.has_value()) << prefixed_connection.error().message;
  ASSERT_EQ((*prefixed_connection)->inboxPrefix(), "_CS_REPLIES.test");
  EXPECT_EQ(connection->inboxPrefix(), "_INBOX");

  const std::string binary("a\0b\xff\r\n", 6);
  for (const std::string bucket : {"approvals", "nodirect"}) {
    for (Connection* over : {connection.get(), prefixed_connection->get()}) {
      SCOPED_TRACE(bucket + (over == connection.get() ? "" : ", prefixed inbox"));
      auto kv = openBucket(*over, bucket);
      if (over == connection.get()) {
        ASSERT_TRUE(kv->create("id-1", "record").has_value());
        auto first = kv->create("id-1/decision", "one");
        ASSERT_TRUE(first.has_value());
        ASSERT_TRUE(kv->update("id-1/decision", "two", *first).has_value());
        ASSERT_TRUE(kv->create("id-1/empty", "").has_value());
        ASSERT_TRUE(kv->create("id-1/binary", binary).has_value());
        ASSERT_TRUE(kv->create("id-1/gone", "v").has_value());
        kvStore* raw = nullptr;
        ASSERT_EQ(js_KeyValue(&raw, connection->js(), bucket.c_str()), NATS_OK);
        ASSERT_EQ(kvStore_Delete(raw, "id-1/gone"), NATS_OK);
        kvStore_Destroy(raw);
      }
      const std::vector<std::string> keys{"id-1",     "id-1/released", "id-1/decision", "id-1/empty", "a..b",
                                          "id-1/gone", "id-1/binary",  "id-1",          "other"};
      const auto many = kv->getMany(keys);
      ASSERT_EQ(many.size(), keys.size());
      for (std::size_t i = 0; i < keys.size(); ++i) {
        SCOPED_TRACE(keys[i]);
        const auto one = kv->get(keys[i]);
        ASSERT_EQ(many[i].has_value(), one.has_value()) << (many[i] ? "" : many[i].error().message);
        if (one) {
          EXPECT_EQ(many[i]->value, one->value);
          EXPECT_EQ(many[i]->revision, one->revision);
        } else {
          EXPECT_EQ(many[i].error().code, one.error().code) << many[i].error().message;
        }
      }
      EXPECT_EQ(many[0]->value, "record");
      EXPECT_EQ(many[2]->value, "two");
      EXPECT_EQ(many[3]->value, "");
      EXPECT_EQ(many[6]->value, binary);
      EXPECT_EQ(many[1].error().code, Errc::not_found);
      EXPECT_EQ(many[4].error().code, Errc::invalid_argument);
      EXPECT_EQ(many[5].error().code, Errc::not_found);
      EXPECT_TRUE(kv->getMany(std::vector<std::string>{}).empty());
      ASSERT_EQ(kv->getMany(std::vector<std::string>{"id-1"}).size(), 1u);
    }
  }
}

// writeMany answers each write as create() or update() answers it, sent together: a create, an
// update on the right revision, one on a stale revision, a create of a key that exists, an
// invalid key; the answers come back in order, and what was written reads back. A request sent
// alone on the same thread in between is not confused with them.
TEST_F(NatsAdapterTest, KvWriteManyAnswersEachWriteAsCreateAndUpdateDo) {
  auto kv = openBucket(*connection);
  auto first = kv->create("w-1", "one");
  ASSERT_TRUE(first.has_value()) << first.error().message;
  ASSERT_TRUE(kv->create("w-2", "taken").has_value());
  const std::vector<KvStore::Write> writes{{.key = "w-1/released", .value = "r"},
                                           {.key = "w-1", .value = "two", .expected_revision = *first},
                                           {.key = "w-2", .value = "stale", .expected_revision = *first},
                                           {.key = "w-2", .value = "again"},
                                           {.key = "a..b", .value = "x"}};
  const auto written = kv->writeMany(writes);
  ASSERT_EQ(written.size(), writes.size());
  ASSERT_TRUE(written[0].has_value()) << written[0].error().message;
  ASSERT_TRUE(written[1].has_value()) << written[1].error().message;
  EXPECT_EQ(written[2].error().code, Errc::wrong_revision) << written[2].error().message;
  EXPECT_EQ(written[3].error().code, Errc::exists) << written[3].error().message;
  EXPECT_EQ(written[4].error().code, Errc::invalid_argument) << written[4].error().message;
  EXPECT_EQ(kv->get("w-1")->value, "two");
  EXPECT_EQ(kv->get("w-1")->revision, *written[1]);
  EXPECT_EQ(kv->get("w-1/released")->revision, *written[0]);
  EXPECT_EQ(kv->get("w-2")->value, "taken");
  // One write alone, and a plain request in between, on the same thread's inbox.
  const auto alone = kv->writeMany(std::vector<KvStore::Write>{{.key = "w-3", .value = "3"}});
  ASSERT_EQ(alone.size(), 1u);
  ASSERT_TRUE(alone[0].has_value()) << alone[0].error().message;
  ASSERT_TRUE(kv->create("w-4", "4").has_value());
  const auto again = kv->writeMany(
      std::vector<KvStore::Write>{{.key = "w-3", .value = "33", .expected_revision = *alone[0]}, {.key = "w-5", .value = "5"}});
  ASSERT_TRUE(again[0].has_value()) << again[0].error().message;
  ASSERT_TRUE(again[1].has_value()) << again[1].error().message;
  EXPECT_EQ(kv->get("w-3")->value, "33");
  EXPECT_EQ(kv->get("w-5")->value, "5");
}

// Every key gets an answer at once while the server is down, and the reads work again after it
// is back.
TEST_F(NatsAdapterTest, KvGetManyIsUnavailableWhileTheServerIsDown) {
  auto kv = openBucket(*connection);
  ASSERT_TRUE(kv->create("k", "v").has_value());
  server->stop();
  ASSERT_TRUE(eventually([&] { return !connection->connected(); }));
  const auto started = std::chrono::steady_clock::now();
  const auto many = kv->getMany(std::vector<std::string>{"k", "k/decision"});
  ASSERT_EQ(many.size(), 2u);
  for (const auto& answer : many) {
    ASSERT_FALSE(answer.has_value());
    EXPECT_EQ(answer.error().code, Errc::unavailable) << answer.error().message;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - started, 3s);
  server->restart();
  ASSERT_TRUE(eventually([&] { return connection->connected(); }));
  const auto after = kv->getMany(std::vector<std::string>{"k", "k/decision"});
  ASSERT_TRUE(after[0].has_value()) << after[0].error().message;
  EXPECT_EQ(after[0]->value, "v");
  EXPECT_EQ(after[1].error().code, Errc::not_found);
}

TEST_F(NatsAdapterTest, KvGetRefusesInvalidKeys) {
  auto kv = openBucket(*connection);
  ASSERT_TRUE(kv->create("a.b", "v").has_value());
  for (const std::string key : {"", "has space", ".a", "a.", "a..b", "a.*", "a.>", ">"}) {
    auto got = kv->get(key);
    ASSERT_FALSE(got.has_value()) << key;
    EXPECT_EQ(got.error().code, Errc::invalid_argument) << key;
  }
}

TEST_F(NatsAdapterTest, KvRefusesInvalidKeys) {
  auto kv = openBucket(*connection);
  for (const std::string key :
       {"", "has space", ".leading", "trailing.", "two..dots", "star*", "gt>"}) {
    auto created = kv->create(key, "v");
    ASSERT_FALSE(created.has_value()) << key;
    EXPECT_EQ(created.error().code, Errc::invalid_argument) << key;
  }
}

// createAsync's answers, collected for a test.
struct AsyncAnswers {
  std::mutex mutex;
  std::condition_variable changed;
  std::map<std::string, std::vector<Result<std::uint64_t>>> by_key;
  std::size_t count = 0;
  KvStore::CreateDone collect(const std::string& key) {
    return [this, key](Result<std::uint64_t> result) {
      const std::lock_guard lock(mutex);
      by_key[key].push_back(std::move(result));
      ++count;
      changed.notify_all();
    };
  }
  bool waitFor(std::size_t n, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, timeout, [&] { return count >= n; });
  }
};

TEST_F(NatsAdapterTest, KvDeletedKeyIsNotFoundAndNotListed) {
  auto kv = openBucket(*connection);
  ASSERT_TRUE(kv->create("gone", "v").has_value());
  ASSERT_TRUE(kv->create("kept", "v").has_value());
  kvStore* raw = nullptr;
  ASSERT_EQ(js_KeyValue(&raw, connection->js(), "approvals"), NATS_OK);
  ASSERT_EQ(kvStore_Delete(raw, "gone"), NATS_OK);
  kvStore_Destroy(raw);
  EXPECT_EQ(kv->get("gone").error().code, Errc::not_found);
  auto listed = kv->listKeys();
  ASSERT_TRUE(listed.has_value());
  EXPECT_EQ(*listed, std::vector<std::string>{"kept"});
  // The index hears of the delete from its watcher (another client deleted it).
  EXPECT_TRUE(eventually([&] {
    auto keys = kv->keys();
    return keys && *keys == std::vector<std::string>{"kept"};
  }));
}

TEST_F(NatsAdapterTest, KvKeysComeFromAWatchedIndexThatFollowsOtherWriters) {
  auto kv = openBucket(*connection);
  EXPECT_FALSE(kv->indexLive());        // nothing watched before anyone asks for keys
  ASSERT_TRUE(kv->keys().has_value());  // the first call lists the bucket once, starts the watcher
  ASSERT_TRUE(eventually([&] { return kv->indexLive(); }));
  auto other_connection = connectTo(server->url());
  auto other = openBucket(*other_connection);
  auto contains = [&](const std::string& key) {
    auto keys = kv->keys();
    return keys && std::find(keys->begin(), keys->end(), key) != keys->end();
  };
  ASSERT_TRUE(other->create("from-other", "v").has_value());
  EXPECT_TRUE(eventually([&] { return contains("from-other"); }));
  // This process's own creates are there at once, sync or async.
  ASSERT_TRUE(kv->create("own", "v").has_value());
  EXPECT_TRUE(contains("own"));
  AsyncAnswers answers;
  kv->createAsync("own-async", "v", answers.collect("own-async"));
  ASSERT_TRUE(answers.waitFor(1, 5s));
  EXPECT_TRUE(contains("own-async"));
  EXPECT_TRUE(kv->indexLive());
  // Across a server restart (store kept) the watcher comes back and follows again.
  server->restart();
  ASSERT_TRUE(eventually([&] { return connection->connected() && other_connection->connected(); }));
  ASSERT_TRUE(eventually([&] { return other->create("after-restart", "v").has_value(); }));
  EXPECT_TRUE(eventually([&] { return contains("after-restart"); }, 10s));
  for (const std::string key : {"from-other", "own", "own-async"}) EXPECT_TRUE(contains(key)) << key;
}

TEST_F(NatsAdapterTest, KvRetiredGroupsLeaveTheIndexAndStayOut) {
  auto kv = openBucket(*connection);
  ASSERT_TRUE(kv->keys().has_value());
  ASSERT_TRUE(eventually([&] { return kv->indexLive(); }));
  for (const std::string key : {"done", "done/decision", "done/released", "open", "open/vote/1/alice"}) {
    ASSERT_TRUE(kv->create(key, "v").has_value()) << key;
  }
  auto sorted = [&] {
    auto keys = kv->keys();
    EXPECT_TRUE(keys.has_value());
    std::vector<std::string> out = keys ? *keys : std::vector<std::string>{};
    std::sort(out.begin(), out.end());
    return out;
  };
  EXPECT_EQ(sorted(), (std::vector<std::string>{"done", "done/decision", "done/released", "open", "open/vote/1/alice"}));
  kv->retire("done");
  const std::vector<std::string> open{"open", "open/vote/1/alice"};
  EXPECT_EQ(sorted(), open);
  // Later writes to a retired group, from this process or another, are not indexed.
  ASSERT_TRUE(kv->update("done", "w", kv->get("done")->revision).has_value());
  auto other_connection = connectTo(server->url());
  auto other = openBucket(*other_connection);
  ASSERT_TRUE(other->create("done/late", "v").has_value());
  ASSERT_TRUE(other->create("new", "v").has_value());
  ASSERT_TRUE(eventually([&] {
    auto keys = kv->keys();
    return keys && std::find(keys->begin(), keys->end(), "new") != keys->end();
  }));
  EXPECT_EQ(sorted(), (std::vector<std::string>{"new", "open", "open/vote/1/alice"}));
  // The bucket still has them all.
  EXPECT_EQ(kv->listKeys()->size(), 7u);
}

TEST_F(NatsAdapterTest, KvGroupKeysFollowOtherWritersAndDeletes) {
  auto kv = openBucket(*connection);
  for (const std::string key : {"g", "g/vote/1/alice", "gx/vote/1/bob", "h/vote/1/carol"}) {
    ASSERT_TRUE(kv->create(key, "v").has_value()) << key;
  }
  auto sorted = [&](std::string_view group) {
    auto keys = kv->groupKeys(group);
    EXPECT_TRUE(keys.has_value());
    std::vector<std::string> out = keys ? *keys : std::vector<std::string>{};
    std::sort(out.begin(), out.end());
    return out;
  };
  // Before the index is live: the listing, filtered (a neighbour "gx" is not "g").
  EXPECT_FALSE(kv->indexLive());
  EXPECT_EQ(sorted("g"), (std::vector<std::string>{"g", "g/vote/1/alice"}));
  ASSERT_TRUE(kv->keys().has_value());
  ASSERT_TRUE(eventually([&] { return kv->indexLive(); }));
  EXPECT_EQ(sorted("g"), (std::vector<std::string>{"g", "g/vote/1/alice"}));
  // Own creates at once; another connection's create and delete through the watcher.
  ASSERT_TRUE(kv->create("g/vote/1/own", "v").has_value());
  EXPECT_EQ(sorted("g"), (std::vector<std::string>{"g", "g/vote/1/alice", "g/vote/1/own"}));
  auto other_connection = connectTo(server->url());
  auto other = openBucket(*other_connection);
  ASSERT_TRUE(other->create("g/vote/2/dave", "v").has_value());
  const std::vector<std::string> with_dave{"g", "g/vote/1/alice", "g/vote/1/own", "g/vote/2/dave"};
  EXPECT_TRUE(eventually([&] { return sorted("g") == with_dave; }));
  kvStore* raw = nullptr;
  ASSERT_EQ(js_KeyValue(&raw, other_connection->js(), "approvals"), NATS_OK);
  ASSERT_EQ(kvStore_Delete(raw, "g/vote/1/alice"), NATS_OK);
  kvStore_Destroy(raw);
  const std::vector<std::string> without_alice{"g", "g/vote/1/own", "g/vote/2/dave"};
  EXPECT_TRUE(eventually([&] { return sorted("g") == without_alice; }));
  EXPECT_TRUE(kv->indexLive());  // answered from the index, not a listing
  EXPECT_EQ(sorted("h"), std::vector<std::string>{"h/vote/1/carol"});
  EXPECT_TRUE(sorted("none").empty());
  // A retired group is forgotten by the index: its keys come from a listing.
  kv->retire("g");
  EXPECT_EQ(sorted("g"), without_alice);
}

// groupKeys(group, R) answers only once the index has every write up to revision R: a key
// another process (its own connection and bucket) has just created with revision R is in the
// answer right away, without waiting for the watcher as a plain groupKeys(group) would. Deletes
// and the index not being live are followed the same way.
TEST_F(NatsAdapterTest, KvGroupKeysThroughARevisionSeeAnotherWriterAtOnce) {
  auto kv = openBucket(*connection);
  ASSERT_TRUE(kv->create("q", "v").has_value());
  auto other_connection = connectTo(server->url());
  auto other = openBucket(*other_connection);
  auto sorted = [&](std::string_view group, std::uint64_t through) {
    auto keys = kv->groupKeys(group, through);
    EXPECT_TRUE(keys.has_value()) << (keys ? "" : keys.error().message);
    std::vector<std::string> out = keys ? *keys : std::vector<std::string>{};
    std::sort(out.begin(), out.end());
    return out;
  };
  // Not live yet: the listing, which has every confirmed write.
  auto first = other->create("q/vote/0/first", "v");
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(sorted("q", *first), (std::vector<std::string>{"q", "q/vote/0/first"}));
  ASSERT_TRUE(kv->keys().has_value());
  ASSERT_TRUE(eventually([&] { return kv->indexLive(); }));
  std::vector<std::string> expected{"q", "q/vote/0/first"};
  for (int i = 0; i < 50; ++i) {
    const std::string key = "q/vote/0/v" + std::to_string(i);
    auto revision = other->create(key, "v");
    ASSERT_TRUE(revision.has_value());
    expected.push_back(key);
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(sorted("q", *revision), expected) << "revision " << *revision;
    EXPECT_TRUE(kv->indexLive());
  }
  kvStore* raw = nullptr;
  ASSERT_EQ(js_KeyValue(&raw, other_connection->js(), "approvals"), NATS_OK);
  ASSERT_EQ(kvStore_Delete(raw, "q/vote/0/first"), NATS_OK);
  kvStore_Destroy(raw);
  // The delete marker's revision is the stream's last sequence now: the next write's minus one.
  auto after = other->create("q/vote/0/after", "v");
  ASSERT_TRUE(after.has_value());
  std::erase(expected, "q/vote/0/first");
  expected.push_back("q/vote/0/after");
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(sorted("q", *after), expected);
  EXPECT_TRUE(kv->indexLive());  // answered from the index, not a listing
  // A revision that never comes (beyond the stream's end, as for a watcher far behind): a short
  // wait, then the index answers all the same, without listing the bucket (seconds at a million
  // keys, on a control thread).
  const auto listings = kv->listings();
  const auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(sorted("q", *after + 1000), expected);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
  EXPECT_EQ(kv->listings(), listings) << "a listing answered";
  EXPECT_TRUE(kv->indexLive());
  // Stopped: the listing.
  kv->stopWatching();
  auto late = other->create("q/vote/0/late", "v");
  ASSERT_TRUE(late.has_value());
  expected.push_back("q/vote/0/late");
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(sorted("q", *late), expected);
  EXPECT_EQ(kv->listings(), listings + 1);
}

// After its first pass the watcher keeps no consumer on the bucket: it catches up in short
// passes (none at all while nothing is written), so nats-server does not send it every write as
// it is stored. Only while callers wait for revisions does it follow the bucket with a consumer
// that stays, and it lets that go a few seconds after the last wait.
TEST_F(NatsAdapterTest, KvWatcherCatchesUpInPassesAndFollowsOnlyWhileSomeoneWaits) {
  auto kv = openBucket(*connection);
  ASSERT_TRUE(kv->create("p", "v").has_value());
  ASSERT_TRUE(kv->keys().has_value());
  ASSERT_TRUE(eventually([&] { return kv->indexLive(); }));
  auto other_connection = connectTo(server->url());
  auto other = openBucket(*other_connection);
  Client observer(server->url());
  auto consumers = [&] { return observer.streamConsumerCount("KV_approvals"); };
  // Consumer creates asked of the server, counted as they go by.
  std::atomic<int> creates{0};
  natsSubscription* api = nullptr;
  ASSERT_EQ(natsConnection_Subscribe(
                &api, other_connection->raw(), "$JS.API.CONSUMER.CREATE.KV_approvals",
                [](natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
                  ++*static_cast<std::atomic<int>*>(closure);
                  natsMsg_Destroy(msg);
                },
                &creates),
            NATS_OK);
  ASSERT_EQ(natsConnection_Flush(other_connection->raw()), NATS_OK);
  auto contains = [&](const std::string& key) {
    auto keys = kv->keys();
    return keys && std::find(keys->begin(), keys->end(), key) != keys->end();
  };
  // The first pass's consumer is gone; nothing written: no consumer is made at all.
  EXPECT_TRUE(eventually([&] { return consumers() == 0u; }));
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(creates.load(), 0);
  EXPECT_EQ(consumers(), 0u);
  // Another writer's keys come in the next pass, and the pass's consumer goes with it.
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(other->create("k" + std::to_string(i), "v").has_value());
  EXPECT_TRUE(eventually([&] { return contains("k19"); }));
  EXPECT_GE(creates.load(), 1);
  EXPECT_TRUE(eventually([&] { return consumers() == 0u; }));
  for (int i = 0; i < 20; ++i) EXPECT_TRUE(contains("k" + std::to_string(i))) << i;
  EXPECT_TRUE(kv->indexLive());
  // Callers that wait for a revision (each right after another writer's write, before a pass
  // could take it): answered at once, and the watcher follows the bucket.
  std::vector<std::string> expected{"p"};
  for (int i = 0; i < 5; ++i) {
    const std::string key = "p/vote/0/v" + std::to_string(i);
    auto vote = other->create(key, "v");
    ASSERT_TRUE(vote.has_value());
    expected.push_back(key);
    const auto started = std::chrono::steady_clock::now();
    auto group = kv->groupKeys("p", *vote);
    ASSERT_TRUE(group.has_value());
    EXPECT_LT(std::chrono::steady_clock::now() - started, 200ms) << "a wait ran out";
    std::sort(group->begin(), group->end());
    EXPECT_EQ(*group, expected);
  }
  // The consumer that follows stays (a pass's would be gone by now).
  EXPECT_TRUE(eventually([&] { return consumers() == 1u; }, 2s));
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(consumers(), 1u);
  // While it follows, a write is there without a pass (no new consumer).
  const int before = creates.load();
  ASSERT_TRUE(other->create("p/vote/0/bob", "v").has_value());
  EXPECT_TRUE(eventually([&] { return contains("p/vote/0/bob"); }));
  EXPECT_EQ(creates.load(), before);
  // Some seconds after the last wait it lets the consumer go, and passes take over again.
  EXPECT_TRUE(eventually([&] { return consumers() == 0u; }, 15s));
  ASSERT_TRUE(other->create("after-following", "v").has_value());
  EXPECT_TRUE(eventually([&] { return contains("after-following"); }));
  EXPECT_TRUE(eventually([&] { return consumers() == 0u; }));
  EXPECT_TRUE(kv->indexLive());
  natsSubscription_Unsubscribe(api);
  natsSubscription_Destroy(api);
}

// The replayer's incremental scans: the approvals at work (decided, released, claimed, voted on),
// the records that came since the last visit (whoever wrote them) and those deleted since, and
// the index's counts.
TEST_F(NatsAdapterTest, KvBusyVisitsGiveTheApprovalsAtWorkAndWhatChanged) {
  auto kv = openBucket(*connection);
  for (const std::string key : {"a", "b", "b/decision", "c", "c/slack/ts", "d", "d/vote/0/alice", "e/replay/1"}) {
    ASSERT_TRUE(kv->create(key, "v").has_value()) << key;
  }
  struct Seen {
    KvStore::BusyVisit visit;
    std::vector<std::string> keys;
  };
  auto visit = [&](bool all) {
    Seen seen;
    auto visited = kv->visitBusyKeys(
        [&](std::string_view group, std::string_view rest) {
          seen.keys.push_back(std::string(group) + (rest.empty() ? "" : "/" + std::string(rest)));
        },
        all);
    EXPECT_TRUE(visited.has_value());
    if (visited) seen.visit = std::move(*visited);
    std::sort(seen.keys.begin(), seen.keys.end());
    return seen;
  };
  Seen seen = visit(false);
  EXPECT_TRUE(seen.visit.all) << "the first visit: every key";
  EXPECT_EQ(seen.keys.size(), 8u);
  ASSERT_TRUE(kv->indexLive());
  seen = visit(false);
  EXPECT_FALSE(seen.visit.all);
  EXPECT_EQ(seen.keys, (std::vector<std::string>{"b", "b/decision", "d", "d/vote/0/alice", "e/replay/1"}));
  EXPECT_EQ(seen.visit.records, 4u);
  EXPECT_EQ(seen.visit.decided_records, 1u);
  // Another process holds, decides and deletes; this one creates.
  auto other_connection = connectTo(server->url());
  auto other = openBucket(*other_connection);
  ASSERT_TRUE(other->create("f", "v").has_value());
  ASSERT_TRUE(other->create("c/decision", "v").has_value());
  kvStore* raw = nullptr;
  ASSERT_EQ(js_KeyValue(&raw, other_connection->js(), "approvals"), NATS_OK);
  ASSERT_EQ(kvStore_Delete(raw, "a"), NATS_OK);
  kvStore_Destroy(raw);
  ASSERT_TRUE(kv->create("g", "v").has_value());
  std::set<std::string> keys;
  std::set<std::string> removed;
  ASSERT_TRUE(eventually([&] {
    const Seen more = visit(false);
    EXPECT_FALSE(more.visit.all);
    keys.insert(more.keys.begin(), more.keys.end());
    removed.insert(more.visit.removed.begin(), more.visit.removed.end());
    return keys.contains("f") && keys.contains("c/decision") && removed.contains("a");
  }));
  EXPECT_TRUE(keys.contains("g"));
  EXPECT_EQ(removed, std::set<std::string>{"a"});
  seen = visit(false);
  EXPECT_EQ(seen.keys, (std::vector<std::string>{"b", "b/decision", "c", "c/decision", "c/slack/ts", "d",
                                                 "d/vote/0/alice", "e/replay/1"}));
  EXPECT_TRUE(seen.visit.removed.empty());
  EXPECT_EQ(seen.visit.records, 5u);  // b c d f g
  EXPECT_EQ(seen.visit.decided_records, 2u);
  // A retired group is neither visited nor reported removed.
  kv->retire("b");
  seen = visit(false);
  EXPECT_EQ(seen.keys, (std::vector<std::string>{"c", "c/decision", "c/slack/ts", "d", "d/vote/0/alice", "e/replay/1"}));
  EXPECT_TRUE(seen.visit.removed.empty());
  EXPECT_EQ(seen.visit.records, 4u);
  EXPECT_EQ(seen.visit.decided_records, 1u);
  // Asked for every key: every key (but the retired group's).
  seen = visit(true);
  EXPECT_TRUE(seen.visit.all);
  EXPECT_EQ(seen.keys.size(), 8u);
}

TEST_F(NatsAdapterTest, KvKeysOfEmptyBucketIsEmptyThenListsEveryKey) {
  auto kv = openBucket(*connection);
  auto none = kv->keys();
  ASSERT_TRUE(none.has_value()) << none.error().message;
  EXPECT_TRUE(none->empty());
  std::set<std::string> expected;
  for (int i = 0; i < 50; ++i) {
    std::string key = "k" + std::to_string(i);
    ASSERT_TRUE(kv->create(key, "v").has_value());
    expected.insert(key);
  }
  ASSERT_TRUE(kv->update("k7", "w", kv->get("k7")->revision).has_value());
  auto keys = kv->keys();
  ASSERT_TRUE(keys.has_value());
  EXPECT_EQ(std::set<std::string>(keys->begin(), keys->end()), expected);
  EXPECT_EQ(keys->size(), expected.size());
}

// The first keys() call waits for the watcher's one pass over the bucket (no second listing),
// which hands every key and value to onFirstPass once; later writes come as keys only. The pass
// runs on the watch connection given to open().
TEST_F(NatsAdapterTest, KvFirstPassHandsOverEveryValueOnceOnTheWatchConnection) {
  {
    auto writer = openBucket(*connection);
    for (int i = 0; i < 300; ++i) {
      ASSERT_TRUE(writer->create("r" + std::to_string(i), "value-" + std::to_string(i)).has_value());
    }
    ASSERT_TRUE(writer->create("r7/decision", "d").has_value());
    ASSERT_TRUE(writer->update("r8", "value-8b", writer->get("r8")->revision).has_value());
  }
  auto watch = connectTo(server->url());
  StoreConfig config;
  config.bucket = "approvals";
  auto opened = KvBucket::open(*connection, config, 1024, nullptr, watch.get());
  ASSERT_TRUE(opened.has_value()) << opened.error().message;
  auto kv = std::move(*opened);
  std::mutex mutex;
  std::map<std::string, std::vector<std::string>> seen;
  kv->onFirstPass([&](std::string_view key, std::string_view value) {
    const std::lock_guard lock(mutex);
    seen[std::string(key)].emplace_back(value);
  });
  auto keys = kv->keys();
  ASSERT_TRUE(keys.has_value()) << keys.error().message;
  EXPECT_TRUE(kv->indexLive());  // keys() answered from the watcher's pass, not a listing
  EXPECT_EQ(keys->size(), 301u);
  {
    const std::lock_guard lock(mutex);
    ASSERT_EQ(seen.size(), 301u);
    for (const auto& [key, values] : seen) EXPECT_EQ(values.size(), 1u) << key;
    EXPECT_EQ(seen["r0"], std::vector<std::string>{"value-0"});
    EXPECT_EQ(seen["r8"], std::vector<std::string>{"value-8b"});  // the key's last value
    EXPECT_EQ(seen["r7/decision"], std::vector<std::string>{"d"});
  }
  // Later writes, from another writer: indexed, not handed over.
  auto other_connection = connectTo(server->url());
  auto other = openBucket(*other_connection);
  ASSERT_TRUE(other->create("later", "v").has_value());
  EXPECT_TRUE(eventually([&] {
    auto now = kv->keys();
    return now && std::find(now->begin(), now->end(), "later") != now->end();
  }));
  const std::lock_guard lock(mutex);
  EXPECT_FALSE(seen.contains("later"));
  EXPECT_EQ(seen.size(), 301u);
}

// Writes keys w0 ... w<kKeys - 1> over and over into a bucket from a thread of its own until
// destroyed: bursts of core publishes to the keys' subjects (the bucket's stream stores them as
// puts; keeping one value per key, it holds at most kKeys messages however long this runs), so
// that watchers receive writes at any moment. written() counts the writes sent so far. Each
// burst of 20 is followed by `pause`: with none, it writes faster than a key watcher built with
// sanitizers reads.
class BucketWriter {
 public:
  BucketWriter(const std::string& url, const std::string& bucket, std::chrono::milliseconds pause = 2ms)
      : client_(url), bucket_(bucket), pause_(pause) {
    thread_ = std::thread([this] { run(); });
  }
  ~BucketWriter() {
    stop_ = true;
    thread_.join();
  }
  BucketWriter(const BucketWriter&) = delete;
  BucketWriter& operator=(const BucketWriter&) = delete;
  static constexpr int kKeys = 500;
  int written() const { return written_.load(); }
  // Until at least `more` further keys were sent (and reached the server).
  void waitFor(int more) {
    const int target = written_.load() + more;
    while (written_.load() < target) std::this_thread::sleep_for(5ms);
  }

 private:
  void run() {
    int next = 0;
    while (!stop_) {
      for (int i = 0; i < 20; ++i, ++next) {
        const std::string subject = "$KV." + bucket_ + ".w" + std::to_string(next % kKeys);
        if (natsConnection_PublishString(client_.raw(), subject.c_str(), "v") != NATS_OK) break;
      }
      if (natsConnection_FlushTimeout(client_.raw(), 5000) == NATS_OK) written_ = next;
      std::this_thread::sleep_for(pause_);
    }
  }
  Client client_;
  std::string bucket_;
  std::chrono::milliseconds pause_;
  std::atomic<bool> stop_{false};
  std::atomic<int> written_{0};
  std::thread thread_;
};

// The key watcher ends a subscription that the server is still sending to twice per bucket: its
// first pass (values) is replaced by a headers-only one, and stopWatching() ends that. Here both
// happen while another process writes to the bucket, round after round; each round's index holds
// every key written before it started. Under valgrind (scripts/valgrind-teardown.sh) this also
// shows that nothing of a freed subscription is touched: with natsSubscription_Destroy alone,
// cnats 3.4.1's reader thread may still be handing it a message.
TEST_F(NatsAdapterTest, KvWatcherEndsItsSubscriptionsSafelyWhileTheBucketIsWritten) {
  openBucket(*connection);  // creates it
  auto watch = connectTo(server->url());
  // Slow enough for each first pass to catch up with the writes even under sanitizers, so that
  // it ends with nothing left and every key in the index (the test below writes faster).
  BucketWriter writer(server->url(), "approvals", 10ms);
  StoreConfig config;
  config.bucket = "approvals";
  for (int round = 0; round < teardownRounds(8); ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    writer.waitFor(round == 0 ? BucketWriter::kKeys : 50);
    auto opened = KvBucket::open(*connection, config, 1024, nullptr, watch.get());
    ASSERT_TRUE(opened.has_value()) << opened.error().message;
    auto kv = std::move(*opened);
    std::atomic<int> first_pass{0};
    kv->onFirstPass([&](std::string_view, std::string_view) { ++first_pass; });
    auto keys = kv->keys();
    ASSERT_TRUE(keys.has_value()) << keys.error().message;
    EXPECT_GT(first_pass.load(), 0);
    // Every key was written before the bucket was opened.
    const std::set<std::string> listed(keys->begin(), keys->end());
    for (int i = 0; i < BucketWriter::kKeys; ++i) EXPECT_TRUE(listed.contains("w" + std::to_string(i))) << i;
    writer.waitFor(40);  // the headers-only subscription receives writes while it is ended
  }
}

// Keys rewritten faster than the key watcher's first pass reads them: the pass never finds
// nothing left to deliver at times (before, keys() waited for that, under sanitizers at times
// for good). keys() still answers once the pass is past the bucket's state at its
// start (and has chased the writes for a few seconds), with every key not written again since.
TEST_F(NatsAdapterTest, KvKeysAnswerWhileWritesOutpaceTheKeyWatcher) {
  auto setup = openBucket(*connection);
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(setup->create("still" + std::to_string(i), "v").has_value());
  auto watch = connectTo(server->url());
  BucketWriter writer(server->url(), "approvals", 0ms);
  StoreConfig config;
  config.bucket = "approvals";
  for (int round = 0; round < 6; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    writer.waitFor(BucketWriter::kKeys);
    auto opened = KvBucket::open(*connection, config, 1024, nullptr, watch.get());
    ASSERT_TRUE(opened.has_value()) << opened.error().message;
    auto kv = std::move(*opened);
    kv->onFirstPass([](std::string_view, std::string_view) {});
    const auto started = std::chrono::steady_clock::now();
    auto keys = kv->keys();
    const auto took = std::chrono::steady_clock::now() - started;
    ASSERT_TRUE(keys.has_value()) << keys.error().message;
    EXPECT_LT(took, 60s);
    const std::set<std::string> listed(keys->begin(), keys->end());
    for (int i = 0; i < 100; ++i) EXPECT_TRUE(listed.contains("still" + std::to_string(i))) << i;
    std::cout << "keys() took " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms; "
              << writer.written() << " writes so far\n";
  }
}

// A server that stops answering (SIGSTOP) while the key watcher runs: stopWatching() ends the
// watcher's ordered consumer, and unsubscribing it asks the server to delete the consumer. That
// request waits the watcher's JetStream context's 5 s (then at most 2 s for the round trip), not a
// full listing's two minutes, nor until the connection is found stale (about 15-20 s of missed
// pings).
TEST_F(NatsAdapterTest, KvStopWatchingIsBoundedWhenTheServerStopsAnswering) {
  auto kv = openBucket(*connection);
  ASSERT_TRUE(kv->create("k", "v").has_value());
  ASSERT_TRUE(kv->keys().has_value());
  ASSERT_TRUE(kv->indexLive());
  server->pause();
  const auto started = std::chrono::steady_clock::now();
  kv->stopWatching();
  const auto took = std::chrono::steady_clock::now() - started;
  server->resume();
  EXPECT_LT(took, 9s) << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms";
}

// The list index's watcher is ended while another process writes to the bucket, round after
// round: each start loads the bucket, each stop returns. Under valgrind
// (scripts/valgrind-teardown.sh) this also shows that nothing of the watcher's freed
// subscription is touched.
TEST_F(NatsAdapterTest, ListIndexEndsItsWatcherSafelyWhileTheBucketIsWritten) {
  openBucket(*connection);  // creates it
  BucketWriter writer(server->url(), "approvals");
  StoreConfig config;
  config.bucket = "approvals";
  for (int round = 0; round < teardownRounds(8); ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    writer.waitFor(50);
    natsio::RecordIndex index(*connection, config);
    index.start();
    ASSERT_TRUE(eventually([&] { return index.live(); }, 30s));
    writer.waitFor(40);  // the watcher receives writes while it is ended
    const auto stopping = std::chrono::steady_clock::now();
    index.stop();
    EXPECT_FALSE(index.live());
    EXPECT_LT(std::chrono::steady_clock::now() - stopping, 10s);
  }
}

TEST_F(NatsAdapterTest, KvCreateRaceHasExactlyOneWinner) {
  constexpr int kRacers = 8;
  constexpr int kRounds = 40;
  // Each racer on its own connection, as separate countersign replicas would be.
  std::vector<std::unique_ptr<Connection>> connections;
  std::vector<std::unique_ptr<KvBucket>> buckets;
  for (int r = 0; r < kRacers; ++r) {
    connections.push_back(connectTo(server->url()));
    buckets.push_back(openBucket(*connections.back()));
  }
  for (int round = 0; round < kRounds; ++round) {
    const std::string key = "race-" + std::to_string(round) + "/decision";
    std::atomic<int> wins{0};
    std::atomic<int> exists{0};
    std::atomic<int> other{0};
    std::barrier start(kRacers);
    std::vector<std::thread> threads;
    for (int r = 0; r < kRacers; ++r) {
      threads.emplace_back([&, r] {
        start.arrive_and_wait();
        auto created =
            buckets[static_cast<std::size_t>(r)]->create(key, "racer-" + std::to_string(r));
        if (created) {
          wins.fetch_add(1);
        } else if (created.error().code == Errc::exists) {
          exists.fetch_add(1);
        } else {
          other.fetch_add(1);
        }
      });
    }
    for (auto& t : threads) t.join();
    ASSERT_EQ(wins.load(), 1) << "round " << round;
    ASSERT_EQ(exists.load(), kRacers - 1) << "round " << round;
    ASSERT_EQ(other.load(), 0) << "round " << round;
  }
}

TEST_F(NatsAdapterTest, KvIsUnavailableWhileTheServerIsDown) {
  auto kv = openBucket(*connection);
  ASSERT_TRUE(kv->create("k", "v").has_value());
  server->stop();
  ASSERT_TRUE(eventually([&] { return !connection->connected(); }));
  const auto started = std::chrono::steady_clock::now();
  auto got = kv->get("k");
  ASSERT_FALSE(got.has_value());
  EXPECT_EQ(got.error().code, Errc::unavailable) << got.error().message;
  auto created = kv->create("k2", "v");
  ASSERT_FALSE(created.has_value());
  EXPECT_EQ(created.error().code, Errc::unavailable) << created.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - started, 3s);

  // Back again (same store): the data survived and calls work after the reconnect.
  server->restart();
  ASSERT_TRUE(eventually([&] { return connection->connected(); }));
  auto after = kv->get("k");
  ASSERT_TRUE(after.has_value()) << after.error().message;
  EXPECT_EQ(after->value, "v");
}

TEST_F(NatsAdapterTest, KvCreateAsyncHasCreateSemantics) {
  auto kv = openBucket(*connection);
  AsyncAnswers answers;
  kv->createAsync("job-1", "one", answers.collect("job-1"));
  ASSERT_TRUE(answers.waitFor(1, 5s));
  ASSERT_TRUE(answers.by_key["job-1"][0].has_value()) << answers.by_key["job-1"][0].error().message;
  const auto entry = kv->get("job-1");
  ASSERT_TRUE(entry.has_value());
  EXPECT_EQ(entry->value, "one");
  EXPECT_EQ(entry->revision, *answers.by_key["job-1"][0]);
  // Taken (by a sync or an async create): exists, and the value stays.
  kv->createAsync("job-1", "other", answers.collect("job-1"));
  ASSERT_TRUE(answers.waitFor(2, 5s));
  ASSERT_FALSE(answers.by_key["job-1"][1].has_value());
  EXPECT_EQ(answers.by_key["job-1"][1].error().code, Errc::exists);
  EXPECT_EQ(kv->get("job-1")->value, "one");
  ASSERT_TRUE(kv->create("sync", "s").has_value());
  kv->createAsync("sync", "a", answers.collect("sync"));
  ASSERT_TRUE(answers.waitFor(3, 5s));
  EXPECT_EQ(answers.by_key["sync"][0].error().code, Errc::exists);
  // Bad keys are refused before anything is sent, like create()'s.
  for (const std::string key : {"", "has space", "star*", "gt>", "two..dots"}) {
    kv->createAsync(key, "v", answers.collect("bad:" + key));
  }
  ASSERT_TRUE(answers.waitFor(8, 1s));
  for (const std::string key : {"", "has space", "star*", "gt>", "two..dots"}) {
    EXPECT_EQ(answers.by_key["bad:" + key][0].error().code, Errc::invalid_argument) << key;
  }
  EXPECT_TRUE(kv->waitForCreates(1s));
}

// waitForCreates is woken by the last answer (not by its own timeout) and returns only once
// every callback has run. A lost wake-up would show as the full 5 s wait.
TEST_F(NatsAdapterTest, KvWaitForCreatesIsWokenByTheLastAnswer) {
  auto kv = openBucket(*connection);
  for (int round = 0; round < 5; ++round) {
    AsyncAnswers answers;
    for (int i = 0; i < 200; ++i) {
      const std::string key = "w" + std::to_string(round) + "-" + std::to_string(i);
      kv->createAsync(key, "v", answers.collect(key));
    }
    const auto started = std::chrono::steady_clock::now();
    ASSERT_TRUE(kv->waitForCreates(5s));
    const auto waited = std::chrono::steady_clock::now() - started;
    {
      const std::lock_guard lock(answers.mutex);
      EXPECT_EQ(answers.count, 200u) << "returned before every answer ran";
    }
    EXPECT_LT(waited, 2s) << "round " << round << ": not woken by the answers";
  }
}

TEST_F(NatsAdapterTest, KvCreateAsyncRaceHasExactlyOneWinnerPerKey) {
  // 300 keys, each created 4 times at once from 4 threads: every call answers once, exactly one
  // per key wins, and the stored value is the winner's.
  auto kv = openBucket(*connection);
  AsyncAnswers answers;
  constexpr int kKeys = 300;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kKeys; ++i) {
        const std::string key = "k" + std::to_string(i);
        kv->createAsync(key, "writer-" + std::to_string(t), answers.collect(key));
      }
    });
  }
  for (auto& thread : threads) thread.join();
  ASSERT_TRUE(answers.waitFor(4 * kKeys, 20s)) << answers.count;
  EXPECT_TRUE(kv->waitForCreates(1s));
  for (int i = 0; i < kKeys; ++i) {
    const std::string key = "k" + std::to_string(i);
    const auto& results = answers.by_key[key];
    ASSERT_EQ(results.size(), 4u) << key;
    int wins = 0;
    for (const auto& result : results) {
      if (result) {
        ++wins;
      } else {
        EXPECT_EQ(result.error().code, Errc::exists) << key << ": " << result.error().message;
      }
    }
    EXPECT_EQ(wins, 1) << key;
  }
}

TEST_F(NatsAdapterTest, KvCreateAsyncTimesOutWhenTheServerDoesNotAnswer) {
  auto kv = openBucket(*connection);
  AsyncAnswers answers;
  server->pause();
  const auto started = std::chrono::steady_clock::now();
  kv->createAsync("late", "v", answers.collect("late"));
  EXPECT_FALSE(kv->waitForCreates(1s));
  ASSERT_TRUE(answers.waitFor(1, 10s));
  const auto waited = std::chrono::steady_clock::now() - started;
  server->resume();
  ASSERT_FALSE(answers.by_key["late"][0].has_value());
  EXPECT_EQ(answers.by_key["late"][0].error().code, Errc::timeout) << answers.by_key["late"][0].error().message;
  EXPECT_GE(waited, 4500ms);
  EXPECT_LT(waited, 8s);
  EXPECT_TRUE(kv->waitForCreates(1s));
  // The server took the publish once it ran again: the outcome of a timeout is unknown, and a
  // late PubAck is dropped without a second answer.
  ASSERT_TRUE(eventually([&] { return kv->get("late").has_value(); }));
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(answers.count, 1u);
  // And the bucket works as before.
  kv->createAsync("after", "v", answers.collect("after"));
  ASSERT_TRUE(answers.waitFor(2, 5s));
  EXPECT_TRUE(answers.by_key["after"][0].has_value());
}

TEST_F(NatsAdapterTest, KvCreateAsyncIsUnavailableAtOnceWhileTheServerIsDown) {
  auto kv = openBucket(*connection);
  server->stop();
  ASSERT_TRUE(eventually([&] { return !connection->connected(); }));
  AsyncAnswers answers;
  kv->createAsync("k", "v", answers.collect("k"));
  ASSERT_TRUE(answers.waitFor(1, 100ms));
  EXPECT_EQ(answers.by_key["k"][0].error().code, Errc::unavailable);
}

TEST_F(NatsAdapterTest, KvCreateAsyncWithoutItsStreamIsUnavailable) {
  auto kv = openBucket(*connection);
  ASSERT_EQ(js_DeleteStream(connection->js(), "KV_approvals", nullptr, nullptr), NATS_OK);
  AsyncAnswers answers;
  kv->createAsync("k", "v", answers.collect("k"));
  // The server's "no responders" comes at once, in place of a PubAck (no 5 s timeout).
  ASSERT_TRUE(answers.waitFor(1, 2s));
  ASSERT_FALSE(answers.by_key["k"][0].has_value());
  EXPECT_EQ(answers.by_key["k"][0].error().code, Errc::unavailable);
  EXPECT_NE(answers.by_key["k"][0].error().message.find("no stream stores the key"), std::string::npos)
      << answers.by_key["k"][0].error().message;
  EXPECT_TRUE(kv->waitForCreates(1s));
}

// The default bucket, at most `max_async_creates` creates in flight.
std::unique_ptr<KvBucket> openBucketWithCreateLimit(Connection& connection, int max_async_creates) {
  auto kv = KvBucket::open(connection, StoreConfig{}, max_async_creates);
  if (!kv) throw std::runtime_error("open bucket: " + kv.error().message);
  return std::move(*kv);
}

// max_async_creates in flight: the next call waits for an answer to make room.
TEST_F(NatsAdapterTest, KvCreateAsyncBeyondItsLimitWaitsForRoom) {
  auto opened = openBucketWithCreateLimit(*connection, 2);
  auto& kv = *opened;
  AsyncAnswers answers;
  // Answers make the room: 300 creates from one thread, at most 2 out at a time, all stored.
  for (int i = 0; i < 300; ++i) kv.createAsync("r" + std::to_string(i), "v", answers.collect("r"));
  ASSERT_TRUE(answers.waitFor(300, 20s)) << answers.count;
  EXPECT_TRUE(kv.waitForCreates(1s));
  for (const auto& result : answers.by_key["r"]) EXPECT_TRUE(result.has_value()) << result.error().message;
  // A server that does not answer: the third create waits until the first two time out, then
  // goes out, and is stored once the server runs again.
  server->pause();
  kv.createAsync("a", "v", answers.collect("a"));
  kv.createAsync("b", "v", answers.collect("b"));
  const auto started = std::chrono::steady_clock::now();
  kv.createAsync("c", "v", answers.collect("c"));
  const auto waited = std::chrono::steady_clock::now() - started;
  server->resume();
  EXPECT_GE(waited, 4500ms);
  ASSERT_TRUE(answers.waitFor(303, 10s)) << answers.count;
  EXPECT_EQ(answers.by_key["a"][0].error().code, Errc::timeout);
  EXPECT_EQ(answers.by_key["b"][0].error().code, Errc::timeout);
  ASSERT_TRUE(answers.by_key["c"][0].has_value()) << answers.by_key["c"][0].error().message;
  EXPECT_EQ(kv.get("c")->revision, *answers.by_key["c"][0]);
}

// A create that waited for room while the connection went is not sent into cnats' reconnect
// buffer (it would be stored long after its caller was told it failed): unavailable, at once.
TEST_F(NatsAdapterTest, KvCreateAsyncWaitingForRoomIsNotSentOnceTheConnectionIsLost) {
  auto opened = openBucketWithCreateLimit(*connection, 2);
  auto& kv = *opened;
  AsyncAnswers answers;
  server->pause();
  kv.createAsync("a", "v", answers.collect("a"));
  kv.createAsync("b", "v", answers.collect("b"));
  std::thread third([&] { kv.createAsync("c", "v", answers.collect("c")); });
  std::this_thread::sleep_for(300ms);
  server->kill9();
  ASSERT_TRUE(eventually([&] { return !connection->connected(); }));
  third.join();
  ASSERT_TRUE(answers.waitFor(3, 10s)) << answers.count;
  ASSERT_FALSE(answers.by_key["c"][0].has_value());
  EXPECT_EQ(answers.by_key["c"][0].error().code, Errc::unavailable) << answers.by_key["c"][0].error().message;
  EXPECT_EQ(answers.by_key["a"][0].error().code, Errc::timeout);
  // Nothing of it waits in cnats' buffer for the server to come back.
  server->restart();
  ASSERT_TRUE(eventually([&] { return connection->connected(); }, 10s));
  ASSERT_TRUE(connection->flush(2s).has_value());
  EXPECT_EQ(kv.get("c").error().code, Errc::not_found);
}

// cancelCreates returns only once no `done` runs any more, including one its PubAck started.
TEST_F(NatsAdapterTest, KvCancelCreatesWaitsForAnAnswerBeingGiven) {
  auto kv = openBucket(*connection);
  std::atomic<bool> entered{false};
  std::atomic<bool> finished{false};
  kv->createAsync("slow", "v", [&](Result<std::uint64_t> created) {
    EXPECT_TRUE(created.has_value());
    entered = true;
    std::this_thread::sleep_for(500ms);
    finished = true;
  });
  ASSERT_TRUE(eventually([&] { return entered.load(); }, 5s));
  kv->cancelCreates();
  EXPECT_TRUE(finished.load()) << "cancelCreates returned while the PubAck's answer still ran";
}

TEST(NatsKv, OpenWithoutJetStreamIsUnavailable) {
  NatsServerOptions options;
  options.jetstream = false;
  auto server = NatsServer::start(options);
  auto connection = connectTo(server->url());
  StoreConfig config;
  auto kv = KvBucket::open(*connection, config);
  ASSERT_FALSE(kv.has_value());
  EXPECT_EQ(kv.error().code, Errc::unavailable) << kv.error().message;
}

TEST_F(NatsAdapterTest, KvOpenRefusesAnInvalidBucketName) {
  StoreConfig config;
  config.bucket = "bad.name";
  auto kv = KvBucket::open(*connection, config);
  ASSERT_FALSE(kv.has_value());
  EXPECT_EQ(kv.error().code, Errc::invalid_argument) << kv.error().message;
}

// ---- NatsPublisher --------------------------------------------------------------------------

TEST_F(NatsAdapterTest, CorePublishDeliversPayloadHeadersAndReply) {
  Client client(server->url());
  Collector jobs(client, "jobs.>");
  NatsPublisher publisher(*connection);
  Headers headers{{"X-Trace", "t1"}, {"X-Multi", "a"}, {"X-Multi", "b"}};
  OutMessage out{"jobs.a", "_INBOX.reply.1", &headers, "payload-core"};
  auto ack = publisher.publish(out, Delivery::core, 2s);
  ASSERT_TRUE(ack.has_value()) << ack.error().message;
  EXPECT_EQ(ack->sequence, 0u);
  EXPECT_TRUE(ack->stream.empty());
  ASSERT_TRUE(connection->flush(2s).has_value());
  auto got = jobs.waitFor(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].subject, "jobs.a");
  EXPECT_EQ(got[0].reply, "_INBOX.reply.1");
  EXPECT_EQ(got[0].payload, "payload-core");
  EXPECT_EQ(valuesOf(got[0].headers, "X-Trace"), std::vector<std::string>{"t1"});
  EXPECT_EQ(valuesOf(got[0].headers, "X-Multi"), (std::vector<std::string>{"a", "b"}));
}

TEST_F(NatsAdapterTest, CoreFlushPublishHasReachedTheServerWhenItReturns) {
  Client client(server->url());
  Collector jobs(client, "jobs.>");
  NatsPublisher publisher(*connection);
  for (int i = 0; i < 20; ++i) {
    std::string payload = "m" + std::to_string(i);
    auto ack =
        publisher.publish(OutMessage{"jobs.flush", "", nullptr, payload}, Delivery::core_flush, 2s);
    ASSERT_TRUE(ack.has_value()) << ack.error().message;
  }
  auto got = jobs.waitFor(20);
  ASSERT_EQ(got.size(), 20u);
  for (int i = 0; i < 20; ++i)
    EXPECT_EQ(got[static_cast<std::size_t>(i)].payload, "m" + std::to_string(i));
}

TEST_F(NatsAdapterTest, JetStreamPublishReturnsPubAckAndDeduplicatesByMsgId) {
  Client client(server->url());
  client.addStream("JOBS", {"jobs.>"});
  NatsPublisher publisher(*connection);
  Headers headers{{"Nats-Msg-Id", "countersign:pay-1"}, {"Countersign-Approval", "granted"}};
  OutMessage out{"jobs.finance.payment.execute", "", &headers, R"({"amount":10})"};

  auto first = publisher.publish(out, Delivery::jetstream, 5s);
  ASSERT_TRUE(first.has_value()) << first.error().message;
  EXPECT_EQ(first->stream, "JOBS");
  EXPECT_EQ(first->sequence, 1u);
  EXPECT_FALSE(first->duplicate);

  auto again = publisher.publish(out, Delivery::jetstream, 5s);
  ASSERT_TRUE(again.has_value()) << again.error().message;
  EXPECT_TRUE(again->duplicate);
  EXPECT_EQ(again->sequence, 1u);
  EXPECT_EQ(client.streamMessageCount("JOBS"), 1u);

  Headers other{{"Nats-Msg-Id", "countersign:pay-2"}};
  auto second = publisher.publish(OutMessage{"jobs.x", "", &other, "p"}, Delivery::jetstream, 5s);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->sequence, 2u);
  EXPECT_FALSE(second->duplicate);
  EXPECT_EQ(client.streamMessageCount("JOBS"), 2u);
}

// Requests answered on the asking thread's own inbox: each reply reaches its request (a late
// answer to a request that timed out is not taken for the next one's), every thread has its own
// inbox, nobody listening is "no responders" at once, silence is a timeout, and a lost
// connection ends the wait before the timeout.
TEST_F(NatsAdapterTest, RequestsGetTheirOwnRepliesOnTheThreadsInbox) {
  auto responder = connectTo(server->url());
  std::atomic<int> delay_next{0};
  auto echo = Subscription::subscribe(
      *responder, "svc.echo", "",
      [&](Message&& m) {
        if (const int ms = delay_next.exchange(0); ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
        const std::string body = "echo:" + m.payload;  // outlives the message that views it
        OutMessage out{m.reply, "", nullptr, body};
        (void)NatsPublisher(*responder).publish(out, Delivery::core, 1s);
      },
      {}, "it-echo");
  ASSERT_TRUE(echo.has_value()) << echo.error().message;
  ASSERT_TRUE(responder->flush(5s).has_value());

  auto reply = connection->request(OutMessage{"svc.echo", "", nullptr, "a"}, 5s, "echo");
  ASSERT_TRUE(reply.has_value()) << reply.error().message;
  EXPECT_EQ(std::string(natsMsg_GetData(reply->get()), natsMsg_GetDataLength(reply->get())), "echo:a");

  // The answer to this one comes after its timeout; the next request must not take it.
  delay_next = 400;
  auto late = connection->request(OutMessage{"svc.echo", "", nullptr, "slow"}, 150ms, "echo");
  ASSERT_FALSE(late.has_value());
  EXPECT_EQ(late.error().code, Errc::timeout) << late.error().message;
  std::this_thread::sleep_for(400ms);
  auto next = connection->request(OutMessage{"svc.echo", "", nullptr, "b"}, 5s, "echo");
  ASSERT_TRUE(next.has_value()) << next.error().message;
  EXPECT_EQ(std::string(natsMsg_GetData(next->get()), natsMsg_GetDataLength(next->get())), "echo:b");

  // Threads at once, each with its own inbox, each getting its own answers.
  std::vector<std::thread> threads;
  std::atomic<int> right{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        const std::string body = std::to_string(t) + "-" + std::to_string(i);
        auto r = connection->request(OutMessage{"svc.echo", "", nullptr, body}, 5s, "echo");
        if (r && std::string(natsMsg_GetData(r->get()), natsMsg_GetDataLength(r->get())) == "echo:" + body) ++right;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(right.load(), 200);

  bool no_responders = false;
  const auto started = std::chrono::steady_clock::now();
  auto nobody = connection->request(OutMessage{"svc.nobody", "", nullptr, "x"}, 3s, "nobody", &no_responders);
  ASSERT_FALSE(nobody.has_value());
  EXPECT_TRUE(no_responders) << nobody.error().message;
  EXPECT_EQ(nobody.error().code, Errc::unavailable);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 1s);

  // The server goes away while a request waits: it fails well before its 10 s.
  delay_next = 5000;
  std::thread killer([&] {
    std::this_thread::sleep_for(200ms);
    server->stop();
  });
  const auto waiting = std::chrono::steady_clock::now();
  auto lost = connection->request(OutMessage{"svc.echo", "", nullptr, "c"}, 10s, "echo");
  killer.join();
  ASSERT_FALSE(lost.has_value());
  EXPECT_EQ(lost.error().code, Errc::unavailable) << lost.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - waiting, 3s);
}

// Several requests out on one thread (send, then awaitReply for each): every wait gets its own
// reply whatever order they come in (the responder answers the last first), a reply that came
// while another was awaited is kept, and a request whose wait timed out does not leave its late
// reply to the next.
TEST_F(NatsAdapterTest, RequestsSentTogetherGetTheirOwnRepliesInAnyOrder) {
  auto responder = connectTo(server->url());
  std::mutex mutex;
  std::vector<Message> held;  // answered in reverse once three have come
  auto reverse = Subscription::subscribe(
      *responder, "svc.reverse", "",
      [&](Message&& m) {
        const std::lock_guard lock(mutex);
        held.push_back(std::move(m));
        if (held.size() < 3) return;
        for (auto it = held.rbegin(); it != held.rend(); ++it) {
          const std::string body = "re:" + it->payload;
          OutMessage out{it->reply, "", nullptr, body};
          (void)NatsPublisher(*responder).publish(out, Delivery::core, 1s);
        }
        held.clear();
      },
      {}, "it-reverse");
  ASSERT_TRUE(reverse.has_value()) << reverse.error().message;
  ASSERT_TRUE(responder->flush(5s).has_value());
  const auto text = [](const natsio::OwnedNatsMsg& m) {
    return std::string(natsMsg_GetData(m.get()), static_cast<std::size_t>(natsMsg_GetDataLength(m.get())));
  };

  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(round);
    std::vector<std::uint64_t> numbers;
    for (const char* body : {"a", "b", "c"}) {
      auto sent = connection->send(OutMessage{"svc.reverse", "", nullptr, body}, "reverse");
      ASSERT_TRUE(sent.has_value()) << sent.error().message;
      numbers.push_back(*sent);
    }
    // In the order sent, though "c" is answered first; then in another order.
    const std::vector<std::size_t> order = round == 1 ? std::vector<std::size_t>{1, 2, 0}
                                                      : std::vector<std::size_t>{0, 1, 2};
    for (const std::size_t i : order) {
      auto reply = connection->awaitReply(numbers[i], 5s, "reverse");
      ASSERT_TRUE(reply.has_value()) << reply.error().message;
      EXPECT_EQ(text(*reply), std::string("re:") + "abc"[i]);
    }
  }

  // Two out, the first given up before its answer: the answers (both come once a third request
  // arrives) go to the second and to a plain request, not to the one given up.
  auto gone = connection->send(OutMessage{"svc.reverse", "", nullptr, "x"}, "reverse");
  auto kept = connection->send(OutMessage{"svc.reverse", "", nullptr, "y"}, "reverse");
  ASSERT_TRUE(gone.has_value() && kept.has_value());
  auto timed_out = connection->awaitReply(*gone, 100ms, "reverse");
  ASSERT_FALSE(timed_out.has_value());
  EXPECT_EQ(timed_out.error().code, Errc::timeout);
  std::atomic<bool> third_sent{false};
  std::thread third([&] {
    auto r = connection->request(OutMessage{"svc.reverse", "", nullptr, "z"}, 5s, "reverse");
    third_sent = r.has_value() && text(*r) == "re:z";
  });
  auto answer = connection->awaitReply(*kept, 5s, "reverse");
  third.join();
  ASSERT_TRUE(answer.has_value()) << answer.error().message;
  EXPECT_EQ(text(*answer), "re:y");
  EXPECT_TRUE(third_sent.load());
  auto plain = connection->send(OutMessage{"svc.reverse", "", nullptr, "p"}, "reverse");
  ASSERT_TRUE(plain.has_value());
  // Nothing else is out on this thread: "x"'s late answer was dropped, not kept for "p".
  auto more1 = connection->send(OutMessage{"svc.reverse", "", nullptr, "q"}, "reverse");
  auto more2 = connection->send(OutMessage{"svc.reverse", "", nullptr, "r"}, "reverse");
  ASSERT_TRUE(more1.has_value() && more2.has_value());
  auto p = connection->awaitReply(*plain, 5s, "reverse");
  ASSERT_TRUE(p.has_value()) << p.error().message;
  EXPECT_EQ(text(*p), "re:p");
  EXPECT_EQ(text(*connection->awaitReply(*more1, 5s, "reverse")), "re:q");
  EXPECT_EQ(text(*connection->awaitReply(*more2, 5s, "reverse")), "re:r");
}

// The store's writes read the stream's own PubAck: a lost create or update is told apart from
// other refusals, and a create over a deleted key's marker succeeds (as cnats' kvStore_Create).
TEST_F(NatsAdapterTest, JetStreamPublishAsRequestReadsTheStreamsAnswer) {
  Client client(server->url());
  client.addStream("JOBS", {"jobs.>"});
  const Headers expect_new{{"Nats-Expected-Last-Subject-Sequence", "0"}};
  auto first = natsio::jsPublish(*connection, OutMessage{"jobs.a", "", &expect_new, "1"}, 5s, "publish");
  ASSERT_TRUE(first.has_value()) << first.error().message;
  EXPECT_EQ(first->stream, "JOBS");
  EXPECT_EQ(first->sequence, 1u);
  auto again = natsio::jsPublish(*connection, OutMessage{"jobs.a", "", &expect_new, "2"}, 5s, "publish");
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code, Errc::wrong_revision) << again.error().message;
  EXPECT_NE(again.error().message.find("wrong last sequence"), std::string::npos) << again.error().message;
  auto none = natsio::jsPublish(*connection, OutMessage{"nostream.x", "", nullptr, "x"}, 3s, "publish");
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error().code, Errc::unavailable) << none.error().message;

  auto kv = openBucket(*connection);
  ASSERT_TRUE(kv->create("k", "v1").has_value());
  kvStore* raw = nullptr;
  ASSERT_EQ(js_KeyValue(&raw, connection->js(), "approvals"), NATS_OK);
  ASSERT_EQ(kvStore_Delete(raw, "k"), NATS_OK);
  kvStore_Destroy(raw);
  EXPECT_EQ(kv->get("k").error().code, Errc::not_found);
  auto recreated = kv->create("k", "v2");
  ASSERT_TRUE(recreated.has_value()) << recreated.error().message;
  auto read = kv->get("k");
  ASSERT_TRUE(read.has_value());
  EXPECT_EQ(read->value, "v2");
  EXPECT_EQ(read->revision, *recreated);
  EXPECT_EQ(kv->create("k", "v3").error().code, Errc::exists);
}

TEST_F(NatsAdapterTest, JetStreamPublishWithoutAStreamFailsQuickly) {
  NatsPublisher publisher(*connection);
  const auto started = std::chrono::steady_clock::now();
  auto ack =
      publisher.publish(OutMessage{"nostream.here", "", nullptr, "x"}, Delivery::jetstream, 3s);
  ASSERT_FALSE(ack.has_value());
  EXPECT_TRUE(ack.error().code == Errc::unavailable || ack.error().code == Errc::timeout)
      << ack.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - started, 3500ms);
}

TEST_F(NatsAdapterTest, TooLargeIsRefusedBeforeSendingAndTheConnectionSurvives) {
  Client client(server->url());
  Collector jobs(client, "jobs.>");
  NatsPublisher publisher(*connection);
  const std::size_t max = publisher.maxPayload();
  ASSERT_EQ(max, 1024u * 1024u);

  const std::string too_big(max + 1, 'x');
  for (Delivery delivery : {Delivery::core, Delivery::core_flush, Delivery::jetstream}) {
    auto ack = publisher.publish(OutMessage{"jobs.big", "", nullptr, too_big}, delivery, 2s);
    ASSERT_FALSE(ack.has_value());
    EXPECT_EQ(ack.error().code, Errc::too_large);
  }
  // Headers count: payload of exactly max bytes plus one header is too large.
  Headers headers{{"H", "v"}};
  const std::string exactly(max, 'y');
  auto with_headers =
      publisher.publish(OutMessage{"jobs.big", "", &headers, exactly}, Delivery::core, 2s);
  ASSERT_FALSE(with_headers.has_value());
  EXPECT_EQ(with_headers.error().code, Errc::too_large);

  // Exactly at the limit goes through (the server would cut the connection if we were wrong).
  auto fits =
      publisher.publish(OutMessage{"jobs.fits", "", nullptr, exactly}, Delivery::core_flush, 5s);
  ASSERT_TRUE(fits.has_value()) << fits.error().message;
  auto got = jobs.waitFor(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].subject, "jobs.fits");
  EXPECT_EQ(got[0].payload.size(), max);
  EXPECT_TRUE(connection->connected());
}

// The cnats of this platform (3.4) lets countersign free its own messages on the calling thread
// rather than through cnats' collector thread (one thread wake per message when it is idle).
// Fails when a cnats upgrade takes that away: the hot paths would then pay the wake again.
TEST(NatsMessages, OwnMessagesAreFreedOnTheCallingThread) {
  ASSERT_TRUE(natsio::openNatsLibrary());
  EXPECT_TRUE(natsio::freesNatsMsgDirectly()) << "cnats " << nats_GetVersion();
  const Headers headers{{"Nats-Msg-Id", "countersign:x"}, {"A", "1"}, {"A", "2"}, {"Empty", ""}};
  for (int i = 0; i < 10000; ++i) {
    auto msg = natsio::toNatsMsg(OutMessage{.subject = "jobs.x", .reply = i % 2 ? "_INBOX.r" : "",
                                            .headers = &headers, .payload = "payload"});
    ASSERT_TRUE(msg) << msg.error().message;
    const char* value = nullptr;
    ASSERT_EQ(natsMsgHeader_Get(msg->get(), "Nats-Msg-Id", &value), NATS_OK);  // headers built
    ASSERT_STREQ(value, "countersign:x");
  }  // each freed here, with its headers
  natsio::freeNatsMsg(nullptr);  // like natsMsg_Destroy: nothing to do
}

TEST(NatsPublisherLimits, HeaderBlockSizeMatchesTheServersCount) {
  // With a small max payload, a message whose computed wire size is exactly the limit must be
  // accepted by the server (an underestimate would make the server close the connection).
  NatsServerOptions options;
  options.extra_config = "max_payload: 1000";
  auto server = NatsServer::start(options);
  auto connection = connectTo(server->url());
  Client client(server->url());
  Collector jobs(client, "jobs.>");
  NatsPublisher publisher(*connection);
  Headers headers{{"Name-One", "value"}, {"Name-One", "second"}, {"Other", ""}};
  OutMessage probe{"jobs.limit", "", &headers, ""};
  const std::size_t header_bytes = natsio::wireSize(probe);
  EXPECT_EQ(
      header_bytes,
      std::string("NATS/1.0\r\nName-One: value\r\nName-One: second\r\nOther: \r\n\r\n").size());
  const std::string payload(1000 - header_bytes, 'p');
  OutMessage exact{"jobs.limit", "", &headers, payload};
  ASSERT_EQ(natsio::wireSize(exact), 1000u);
  auto ack = publisher.publish(exact, Delivery::core_flush, 5s);
  ASSERT_TRUE(ack.has_value()) << ack.error().message;
  ASSERT_EQ(jobs.waitFor(1).size(), 1u);
  const std::string one_more = payload + "p";
  auto over =
      publisher.publish(OutMessage{"jobs.limit", "", &headers, one_more}, Delivery::core_flush, 5s);
  ASSERT_FALSE(over.has_value());
  EXPECT_EQ(over.error().code, Errc::too_large);
  EXPECT_TRUE(connection->connected());

  // The same headers split over `headers` and `more_headers`: the same size, the same message.
  Headers first{{"Name-One", "value"}};
  Headers more{{"Name-One", "second"}, {"Other", ""}};
  OutMessage split{"jobs.limit", "", &first, payload, &more};
  EXPECT_EQ(natsio::wireSize(split), 1000u);
  OutMessage only_more{"jobs.limit", "", nullptr, "", &headers};
  EXPECT_EQ(natsio::wireSize(only_more), header_bytes);
  ASSERT_TRUE(publisher.publish(split, Delivery::core_flush, 5s).has_value());
  const auto got = jobs.waitFor(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(headerValues(got[1], "Name-One"), (std::vector<std::string>{"value", "second"}));
  EXPECT_EQ(headerValues(got[1], "Other"), std::vector<std::string>{""});
}

TEST_F(NatsAdapterTest, PublishRefusesBadSubjectsAndHeaders) {
  NatsPublisher publisher(*connection);
  Headers bad_name{{"Bad Name", "v"}};
  Headers colon_name{{"Bad:Name", "v"}};
  Headers crlf_value{{"X", "a\r\nInjected: yes"}};
  Headers empty_name{{"", "v"}};
  for (const Headers* headers : {&bad_name, &colon_name, &crlf_value, &empty_name}) {
    auto ack = publisher.publish(OutMessage{"jobs.x", "", headers, "p"}, Delivery::core, 1s);
    ASSERT_FALSE(ack.has_value());
    EXPECT_EQ(ack.error().code, Errc::invalid_argument);
  }
  for (const char* subject : {"", "has space", "tab\there"}) {
    auto ack = publisher.publish(OutMessage{subject, "", nullptr, "p"}, Delivery::core, 1s);
    ASSERT_FALSE(ack.has_value()) << subject;
    EXPECT_EQ(ack.error().code, Errc::invalid_argument);
  }
  EXPECT_TRUE(connection->connected());
}

TEST_F(NatsAdapterTest, PublishWhileTheServerIsDownIsNotConfirmed) {
  Client client(server->url());
  client.addStream("JOBS", {"jobs.>"});
  NatsPublisher publisher(*connection);
  server->stop();
  ASSERT_TRUE(eventually([&] { return !connection->connected(); }));
  const auto started = std::chrono::steady_clock::now();
  auto js = publisher.publish(OutMessage{"jobs.a", "", nullptr, "x"}, Delivery::jetstream, 1s);
  ASSERT_FALSE(js.has_value());
  EXPECT_TRUE(js.error().code == Errc::unavailable || js.error().code == Errc::timeout)
      << js.error().message;
  auto flushed =
      publisher.publish(OutMessage{"jobs.a", "", nullptr, "x"}, Delivery::core_flush, 500ms);
  ASSERT_FALSE(flushed.has_value());
  EXPECT_TRUE(flushed.error().code == Errc::unavailable || flushed.error().code == Errc::timeout)
      << flushed.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - started, 1s);
  // A core publish is buffered by cnats and reported as done: never proof of delivery.
  EXPECT_TRUE(
      publisher.publish(OutMessage{"jobs.a", "", nullptr, "x"}, Delivery::core, 1s).has_value());
}

TEST_F(NatsAdapterTest, CheckStreamReturnsTheDuplicateWindow) {
  Client client(server->url());
  client.addStream("JOBS", {"jobs.>"}, std::chrono::seconds(30));
  auto window = natsio::checkStream(*connection, "JOBS");
  ASSERT_TRUE(window.has_value()) << window.error().message;
  EXPECT_EQ(*window, std::chrono::seconds(30));

  auto missing = natsio::checkStream(*connection, "NOPE");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code, Errc::unavailable);
  EXPECT_NE(missing.error().message.find("NOPE"), std::string::npos);
}

// ---- Subscription ---------------------------------------------------------------------------

TEST_F(NatsAdapterTest, QueueGroupDeliversEachMessageOnceAcrossSubscribers) {
  auto second_connection = connectTo(server->url());
  Inbox a;
  Inbox b;
  auto sub_a = Subscription::subscribe(*connection, "agents.jobs.>", "countersign", a.handler());
  auto sub_b =
      Subscription::subscribe(*second_connection, "agents.jobs.>", "countersign", b.handler());
  ASSERT_TRUE(sub_a.has_value() && sub_b.has_value());
  ASSERT_TRUE(connection->flush(2s).has_value());
  ASSERT_TRUE(second_connection->flush(2s).has_value());

  Client client(server->url());
  constexpr int kCount = 400;
  for (int i = 0; i < kCount; ++i) client.publish("agents.jobs.t", std::to_string(i));
  client.flush();
  ASSERT_TRUE(eventually([&] { return a.size() + b.size() >= kCount; }));
  std::this_thread::sleep_for(200ms);  // a duplicate would show up by now
  std::multiset<std::string> seen;
  for (auto& m : a.copy()) seen.insert(m.payload);
  for (auto& m : b.copy()) seen.insert(m.payload);
  EXPECT_EQ(seen.size(), static_cast<std::size_t>(kCount));
  for (int i = 0; i < kCount; ++i) EXPECT_EQ(seen.count(std::to_string(i)), 1u) << i;
  EXPECT_GT(a.size(), 0u);
  EXPECT_GT(b.size(), 0u);
}

TEST_F(NatsAdapterTest, PlainSubscriptionsEachGetEveryMessageInOrderOffTheCallerThread) {
  Inbox a;
  Inbox b;
  auto sub_a = Subscription::subscribe(*connection, "events.>", "", a.handler());
  auto sub_b = Subscription::subscribe(*connection, "events.>", "", b.handler());
  ASSERT_TRUE(sub_a.has_value() && sub_b.has_value());
  ASSERT_TRUE(connection->flush(2s).has_value());
  Client client(server->url());
  for (int i = 0; i < 100; ++i) client.publish("events.e", std::to_string(i));
  client.flush();
  ASSERT_TRUE(eventually([&] { return a.size() == 100 && b.size() == 100; }));
  auto messages = a.copy();
  for (int i = 0; i < 100; ++i)
    EXPECT_EQ(messages[static_cast<std::size_t>(i)].payload, std::to_string(i));
  std::lock_guard lock(a.mutex);
  for (auto id : a.threads) EXPECT_NE(id, std::this_thread::get_id());
}

TEST_F(NatsAdapterTest, UnsubscribeStopsDelivery) {
  Inbox inbox;
  auto sub = Subscription::subscribe(*connection, "stop.>", "", inbox.handler());
  ASSERT_TRUE(sub.has_value());
  ASSERT_TRUE(connection->flush(2s).has_value());
  Client client(server->url());
  Collector witness(client, "stop.>");
  client.publish("stop.a", "before");
  client.flush();
  ASSERT_TRUE(eventually([&] { return inbox.size() == 1; }));
  (*sub)->unsubscribe();
  ASSERT_TRUE(connection->flush(2s).has_value());
  client.publish("stop.a", "after");
  client.flush();
  ASSERT_EQ(witness.waitFor(2).size(), 2u);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(inbox.size(), 1u);
}

TEST_F(NatsAdapterTest, DestructorWaitsForTheRunningHandler) {
  std::atomic<bool> started{false};
  std::atomic<bool> finished{false};
  auto sub = Subscription::subscribe(*connection, "wait.>", "", [&](Message&&) {
    started = true;
    std::this_thread::sleep_for(300ms);
    finished = true;
  });
  ASSERT_TRUE(sub.has_value());
  ASSERT_TRUE(connection->flush(2s).has_value());
  Client client(server->url());
  client.publish("wait.a", "x");
  client.flush();
  ASSERT_TRUE(eventually([&] { return started.load(); }));
  sub->reset();
  EXPECT_TRUE(finished.load());
}

TEST_F(NatsAdapterTest, HandlerMayDestroyItsOwnSubscription) {
  std::unique_ptr<Subscription> self;
  std::atomic<int> calls{0};
  std::mutex mutex;
  auto sub = Subscription::subscribe(*connection, "self.>", "", [&](Message&&) {
    calls.fetch_add(1);
    std::lock_guard lock(mutex);
    self.reset();  // must not deadlock
  });
  ASSERT_TRUE(sub.has_value());
  {
    std::lock_guard lock(mutex);
    self = std::move(*sub);
  }
  ASSERT_TRUE(connection->flush(2s).has_value());
  Client client(server->url());
  client.publish("self.a", "1");
  client.publish("self.a", "2");
  client.flush();
  ASSERT_TRUE(eventually([&] { return calls.load() >= 1; }));
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(calls.load(), 1);
  std::lock_guard lock(mutex);
  EXPECT_EQ(self, nullptr);
}

TEST_F(NatsAdapterTest, SubscriptionDrainFinishesReceivedMessages) {
  std::atomic<int> handled{0};
  auto sub = Subscription::subscribe(*connection, "drain.>", "", [&](Message&&) {
    std::this_thread::sleep_for(1ms);
    handled.fetch_add(1);
  });
  ASSERT_TRUE(sub.has_value());
  ASSERT_TRUE(connection->flush(2s).has_value());
  Client client(server->url());
  for (int i = 0; i < 200; ++i) client.publish("drain.a", "x");
  client.flush();
  ASSERT_TRUE(connection->flush(2s).has_value());
  auto drained = (*sub)->drain(10s);
  ASSERT_TRUE(drained.has_value()) << drained.error().message;
  EXPECT_EQ(handled.load(), 200);
  // Nothing more after the drain.
  client.publish("drain.a", "late");
  client.flush();
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(handled.load(), 200);
  // A second drain, unsubscribe and destruction after it are harmless.
  EXPECT_TRUE((*sub)->drain(1s).has_value());
  (*sub)->unsubscribe();
}

TEST_F(NatsAdapterTest, SubscriptionSurvivesItsConnectionClosingFirst) {
  Inbox inbox;
  auto sub = Subscription::subscribe(*connection, "x.>", "", inbox.handler());
  ASSERT_TRUE(sub.has_value());
  connection->drain(2s);
  (*sub)->unsubscribe();
  EXPECT_TRUE((*sub)->drain(1s).has_value());
  sub->reset();
  connection.reset();
}

// Subscriptions destroyed, round after round, while another process floods their subject: each
// is freed while cnats' reader thread may be handing it a message. Every round's subscription
// receives before it is destroyed, and the connection goes on serving the next one. Under
// valgrind (scripts/valgrind-teardown.sh) this also shows that nothing of a freed subscription is
// touched.
TEST_F(NatsAdapterTest, SubscriptionsEndSafelyWhileMessagesArrive) {
  std::atomic<bool> stop{false};
  std::thread flood([&, url = server->url()] {
    Client client(url);
    while (!stop.load()) {
      for (int i = 0; i < 50; ++i) client.publish("flood.a", std::string(200, 'x'));
      client.flush();
    }
  });
  for (int round = 0; round < teardownRounds(20); ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    std::atomic<int> received{0};
    auto sub = Subscription::subscribe(*connection, "flood.>", "", [&](Message&&) { received.fetch_add(1); });
    ASSERT_TRUE(sub.has_value()) << sub.error().message;
    EXPECT_TRUE(eventually([&] { return received.load() > 0; }));
    sub->reset();
  }
  stop = true;
  flood.join();
  EXPECT_TRUE(connection->flush(2s).has_value());
}

TEST_F(NatsAdapterTest, MalformedHeadersGoToTheBadMessageHandlerOrAreCounted) {
  std::mutex mutex;
  std::vector<std::pair<Message, Error>> bad;
  Inbox good;
  auto with_handler = Subscription::subscribe(*connection, "raw.>", "", good.handler(),
                                              [&](Message&& m, const Error& e) {
                                                std::lock_guard lock(mutex);
                                                bad.emplace_back(std::move(m), e);
                                              });
  Inbox good_only;
  auto without = Subscription::subscribe(*connection, "raw.>", "", good_only.handler());
  ASSERT_TRUE(with_handler.has_value() && without.has_value());
  ASSERT_TRUE(connection->flush(2s).has_value());

  rawHeaderPublish(server->port(), "raw.bad", "NATS/1.0\r\nno-colon-here\r\n\r\n", "payload-1");
  rawHeaderPublish(server->port(), "raw.ok", "NATS/1.0\r\nA: 1\r\nA: 2\r\n\r\n", "payload-2");
  ASSERT_TRUE(eventually([&] { return good.size() == 1 && good_only.size() == 1; }));
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(mutex);
    return bad.size() == 1;
  }));
  {
    std::lock_guard lock(mutex);
    EXPECT_EQ(bad[0].first.subject, "raw.bad");
    EXPECT_EQ(bad[0].first.payload, "payload-1");
    EXPECT_TRUE(bad[0].first.headers.empty());
    EXPECT_EQ(bad[0].second.code, Errc::invalid_argument);
  }
  EXPECT_TRUE(eventually([&] { return (*without)->badMessages() == 1; }));
  EXPECT_EQ((*with_handler)->badMessages(), 0u);
  auto ok = good.copy();
  EXPECT_EQ(ok[0].subject, "raw.ok");
  EXPECT_EQ(valuesOf(ok[0].headers, "A"), (std::vector<std::string>{"1", "2"}));
}

TEST_F(NatsAdapterTest, EmptyAndBlankHeaderValuesArriveIntact) {
  // cnats 3.4.1's own parser would take the next line as the value of an empty one, and fail
  // on a trailing one (nats.c PR #873): the adapter parses the raw block itself.
  Inbox inbox;
  auto sub = Subscription::subscribe(*connection, "hdr.>", "", inbox.handler());
  ASSERT_TRUE(sub.has_value());
  ASSERT_TRUE(connection->flush(2s).has_value());
  rawHeaderPublish(server->port(), "hdr.a",
                   "NATS/1.0\r\nEmpty:\r\nNext: n\r\nBlank:   \r\nMulti: 1\r\nMulti:2\r\n"
                   "Spaced:  v  w \r\nLast: \r\n\r\n",
                   "p");
  ASSERT_TRUE(eventually([&] { return inbox.size() == 1; }));
  Message got = inbox.copy()[0];
  EXPECT_EQ(got.headers, (Headers{{"Empty", ""},
                                  {"Next", "n"},
                                  {"Blank", ""},
                                  {"Multi", "1"},
                                  {"Multi", "2"},
                                  {"Spaced", "v  w"},
                                  {"Last", ""}}));
  EXPECT_EQ(got.payload, "p");
  EXPECT_EQ((*sub)->badMessages(), 0u);
}

TEST(HeaderBlock, ParsesStatusFoldingAndRefusesMalformedBlocks) {
  auto status = natsio::parseHeaderBlock("NATS/1.0 503 No Responders\r\n\r\n");
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(*status, (Headers{{"Status", "503"}, {"Description", "No Responders"}}));
  auto code_only = natsio::parseHeaderBlock("NATS/1.0 404\r\nA: b\r\n\r\n");
  ASSERT_TRUE(code_only.has_value());
  EXPECT_EQ(*code_only, (Headers{{"Status", "404"}, {"A", "b"}}));
  auto folded = natsio::parseHeaderBlock("NATS/1.0\r\nA: one\r\n  two\r\n\tthree\r\n\r\n");
  ASSERT_TRUE(folded.has_value());
  EXPECT_EQ(*folded, (Headers{{"A", "one two three"}}));
  auto none = natsio::parseHeaderBlock("NATS/1.0\r\n\r\n");
  ASSERT_TRUE(none.has_value());
  EXPECT_TRUE(none->empty());
  auto colon_in_value = natsio::parseHeaderBlock("NATS/1.0\r\nUrl: http://x:1/a\r\n\r\n");
  ASSERT_TRUE(colon_in_value.has_value());
  EXPECT_EQ(*colon_in_value, (Headers{{"Url", "http://x:1/a"}}));

  for (std::string_view bad : {
           std::string_view("GARBAGE\r\n\r\n"),
           std::string_view("NATS/1.0\r\nno-colon\r\n\r\n"),
           std::string_view("NATS/1.0\r\n: empty-name\r\n\r\n"),
           std::string_view("NATS/1.0\r\nBad Name: v\r\n\r\n"),
           std::string_view("NATS/1.0\r\n continuation-first\r\n\r\n"),
           std::string_view("NATS/1.0\r\nA: bare\rCR\r\n\r\n"),
           std::string_view("NATS/1.0\r\nA: bare\nLF\r\n\r\n"),
           std::string_view("NATS/1.0 503\nX: injected\r\n\r\n"),  // LF in the status line
           std::string_view("NATS/1.0\x0c\nA:\rB: 2\r\n\r\n"),
           std::string_view("NATS/1.0 No Responders\r\n\r\n"),  // status not three digits
           std::string_view("NATS/1.0 5034\r\n\r\n"),
           std::string_view("NATS/1.0\r\nA: 1\r\n"),
           std::string_view("NATS/1.0\r\nA: 1\r\n\r\nB: 2\r\n\r\n"),
           std::string_view("NATS/1.0"),
           std::string_view("NATS/1.0\r\nA: nul\0inside\r\n\r\n", 27),
       }) {
    auto parsed = natsio::parseHeaderBlock(bad);
    ASSERT_FALSE(parsed.has_value()) << ::testing::PrintToString(std::string(bad));
    EXPECT_EQ(parsed.error().code, Errc::invalid_argument);
  }
}

TEST_F(NatsAdapterTest, AThrowingHandlerIsCountedAndDeliveryGoesOn) {
  std::atomic<int> calls{0};
  auto sub = Subscription::subscribe(*connection, "throw.>", "", [&](Message&& m) {
    calls.fetch_add(1);
    if (m.payload == "boom") throw std::runtime_error("boom");
  });
  ASSERT_TRUE(sub.has_value());
  ASSERT_TRUE(connection->flush(2s).has_value());
  Client client(server->url());
  client.publish("throw.a", "boom");
  client.publish("throw.a", "fine");
  client.flush();
  ASSERT_TRUE(eventually([&] { return calls.load() == 2; }));
  EXPECT_EQ((*sub)->badMessages(), 1u);
}

TEST_F(NatsAdapterTest, SubscribeRefusesBadInput) {
  auto no_handler = Subscription::subscribe(*connection, "a.b", "", {});
  ASSERT_FALSE(no_handler.has_value());
  EXPECT_EQ(no_handler.error().code, Errc::invalid_argument);
  auto bad_subject = Subscription::subscribe(*connection, "", "", [](Message&&) {});
  ASSERT_FALSE(bad_subject.has_value());
  EXPECT_EQ(bad_subject.error().code, Errc::invalid_argument);
  auto bad_queue = Subscription::subscribe(*connection, "a.b", "bad queue", [](Message&&) {});
  ASSERT_FALSE(bad_queue.has_value());
  EXPECT_EQ(bad_queue.error().code, Errc::invalid_argument);
}

// ---- message conversion ---------------------------------------------------------------------

TEST_F(NatsAdapterTest, RoundTripKeepsMultiValuedHeadersInOrderAndBinaryPayload) {
  Inbox inbox;
  auto sub = Subscription::subscribe(*connection, "rt.>", "", inbox.handler());
  ASSERT_TRUE(sub.has_value());
  ASSERT_TRUE(connection->flush(2s).has_value());
  NatsPublisher publisher(*connection);
  Headers headers{{"X-Multi", "first"}, {"x-multi", "lower"}, {"X-Multi", "second"},
                  {"Empty", ""},        {"X-Multi", "third"}, {"Unicode", "caf\xc3\xa9"}};
  const std::string payload("\x00\x01binary\xff\x00", 10);
  auto ack = publisher.publish(OutMessage{"rt.one", "_INBOX.r", &headers, payload},
                               Delivery::core_flush, 2s);
  ASSERT_TRUE(ack.has_value()) << ack.error().message;
  ASSERT_TRUE(eventually([&] { return inbox.size() == 1; }));
  Message got = inbox.copy()[0];
  EXPECT_EQ(got.subject, "rt.one");
  EXPECT_EQ(got.reply, "_INBOX.r");
  EXPECT_EQ(got.payload, payload);
  EXPECT_EQ(valuesOf(got.headers, "X-Multi"),
            (std::vector<std::string>{"first", "second", "third"}));
  EXPECT_EQ(valuesOf(got.headers, "x-multi"), std::vector<std::string>{"lower"});
  EXPECT_EQ(valuesOf(got.headers, "Empty"), std::vector<std::string>{""});
  EXPECT_EQ(valuesOf(got.headers, "Unicode"), std::vector<std::string>{"caf\xc3\xa9"});
  EXPECT_EQ(got.headers.size(), headers.size());
}

TEST(MessageConvert, LocalRoundTripWithoutAServer) {
  Headers headers{{"A", "1"}, {"B", "x"}, {"A", "2"}};
  auto msg = natsio::toNatsMsg(OutMessage{"s.t", "r.t", &headers, "body"});
  ASSERT_TRUE(msg.has_value());
  auto back = natsio::fromNatsMsg(msg->get());
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->subject, "s.t");
  EXPECT_EQ(back->reply, "r.t");
  EXPECT_EQ(back->payload, "body");
  EXPECT_EQ(valuesOf(back->headers, "A"), (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(valuesOf(back->headers, "B"), std::vector<std::string>{"x"});

  auto bare = natsio::toNatsMsg(OutMessage{"s", "", nullptr, ""});
  ASSERT_TRUE(bare.has_value());
  auto bare_back = natsio::fromNatsMsg(bare->get());
  ASSERT_TRUE(bare_back.has_value());
  EXPECT_TRUE(bare_back->headers.empty());
  EXPECT_TRUE(bare_back->reply.empty());
  EXPECT_TRUE(bare_back->payload.empty());
  EXPECT_EQ(natsio::wireSize(OutMessage{"s", "", nullptr, "12345"}), 5u);
  Headers none;
  EXPECT_EQ(natsio::wireSize(OutMessage{"s", "", &none, "12345"}), 5u);
}

// ---- EmbeddedServer -------------------------------------------------------------------------

TEST(EmbeddedServerTest, StartsOnAFreePortWithJetStreamAndStops) {
  TempDir dir;
  const fs::path data = dir.path() / "nested" / "data";
  const int port = freePort();
  std::vector<std::string> lines;
  auto server = EmbeddedServer::start(NATS_SERVER_BIN, "127.0.0.1", port, data.string(),
                                      [&](std::string_view line) { lines.emplace_back(line); });
  ASSERT_TRUE(server.has_value()) << server.error().message;
  EXPECT_TRUE((*server)->running());
  EXPECT_EQ((*server)->port(), port);
  EXPECT_EQ((*server)->url(), "nats://127.0.0.1:" + std::to_string(port));
  EXPECT_TRUE(fs::exists(data / "nats-server.log"));
  {
    auto connection = connectTo((*server)->url());
    auto kv = openBucket(*connection);
    EXPECT_TRUE(kv->create("k", "v").has_value());
  }
  EXPECT_TRUE(fs::exists(data / "jetstream"));
  const pid_t pid = (*server)->pid();
  (*server)->stop();
  EXPECT_FALSE((*server)->running());
  EXPECT_FALSE(natsio::tcpConnects("127.0.0.1", port));
  EXPECT_NE(::kill(pid, 0), 0);  // reaped, not a zombie
  EXPECT_FALSE(lines.empty());

  // Started again on the same data: the KV data is still there.
  auto again = EmbeddedServer::start(NATS_SERVER_BIN, "127.0.0.1", port, data.string(), {});
  ASSERT_TRUE(again.has_value()) << again.error().message;
  auto connection = connectTo((*again)->url());
  auto kv = openBucket(*connection);
  auto entry = kv->get("k");
  ASSERT_TRUE(entry.has_value()) << entry.error().message;
  EXPECT_EQ(entry->value, "v");
}

// One line that names the address and says the port is taken (not the server's log).
TEST(EmbeddedServerTest, RefusesAPortInUseQuicklyNamingTheAddress) {
  TempDir dir;
  Listener busy;
  const auto started = std::chrono::steady_clock::now();
  auto server =
      EmbeddedServer::start(NATS_SERVER_BIN, "127.0.0.1", busy.port, dir.path().string(), {});
  ASSERT_FALSE(server.has_value());
  EXPECT_EQ(server.error().code, Errc::unavailable);
  EXPECT_NE(server.error().message.find("127.0.0.1:" + std::to_string(busy.port)), std::string::npos)
      << server.error().message;
  EXPECT_NE(server.error().message.find("port is taken"), std::string::npos) << server.error().message;
  EXPECT_EQ(server.error().message.find('\n'), std::string::npos) << server.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
}

TEST(EmbeddedServerTest, PicksAPortWhenGivenNone) {
  TempDir dir;
  auto server = EmbeddedServer::start(NATS_SERVER_BIN, "127.0.0.1", -1, dir.path().string(), {});
  ASSERT_TRUE(server.has_value()) << server.error().message;
  EXPECT_GT((*server)->port(), 0);
  auto connection = connectTo((*server)->url());
  EXPECT_TRUE(connection->connected());
}

TEST(EmbeddedServerTest, FailsClearlyForAMissingBinaryOrUnusableDataDir) {
  TempDir dir;
  auto missing =
      EmbeddedServer::start("/nonexistent/nats-server", "127.0.0.1", -1, dir.path().string(), {});
  ASSERT_FALSE(missing.has_value());
  EXPECT_NE(missing.error().message.find("/nonexistent/nats-server"), std::string::npos);

  auto not_on_path =
      EmbeddedServer::start("no-such-nats-server-binary", "127.0.0.1", -1, dir.path().string(), {});
  ASSERT_FALSE(not_on_path.has_value());

  const fs::path file = dir.write("a-file", "x");
  auto bad_dir =
      EmbeddedServer::start(NATS_SERVER_BIN, "127.0.0.1", -1, (file / "sub").string(), {});
  ASSERT_FALSE(bad_dir.has_value());
  EXPECT_EQ(bad_dir.error().code, Errc::io);
}

TEST(EmbeddedServerTest, ServerExitingAtStartIsReportedWithItsLog) {
  TempDir dir;
  // An address nats-server cannot bind: it exits at once.
  auto server =
      EmbeddedServer::start(NATS_SERVER_BIN, "192.0.2.1", freePort(), dir.path().string(), {});
  ASSERT_FALSE(server.has_value());
  EXPECT_NE(server.error().message.find("exited"), std::string::npos) << server.error().message;
}

// ---- child processes ------------------------------------------------------------------------

TEST(ChildProcess, ReportsExitCodesSignalsAndOutput) {
  TempDir dir;
  natsio::SpawnOptions spawn;
  spawn.argv = {"sh", "-c", "echo out; echo err >&2; echo $CS_TEST_VAR; exit 7"};
  spawn.env = std::vector<std::string>{"CS_TEST_VAR=hello", "PATH=/usr/bin:/bin"};
  spawn.stdout_path = (dir.path() / "out").string();
  spawn.stderr_path = (dir.path() / "err").string();
  auto pid = natsio::spawnProcess(spawn);
  ASSERT_TRUE(pid.has_value()) << pid.error().message;
  EXPECT_EQ(natsio::waitProcess(*pid, 5s), 7);
  EXPECT_EQ(natsio::tailFile(dir.path() / "out", 10), "out\nhello\n");
  EXPECT_EQ(natsio::tailFile(dir.path() / "err", 10), "err\n");

  natsio::SpawnOptions sleeper;
  sleeper.argv = {"sleep", "30"};
  auto sleeping = natsio::spawnProcess(sleeper);
  ASSERT_TRUE(sleeping.has_value());
  EXPECT_EQ(natsio::waitProcess(*sleeping, 50ms), std::nullopt);
  EXPECT_EQ(natsio::stopProcess(*sleeping, 5s), 128 + SIGTERM);
}

TEST(ChildProcess, ChildDoesNotInheritBlockedSignalsOrDescriptors) {
  // countersign blocks SIGTERM for sigtimedwait: its nats-server child must still stop on it.
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigset_t old;
  pthread_sigmask(SIG_BLOCK, &block, &old);
  int made[2];
  ASSERT_EQ(::pipe(made), 0);
  // Not close-on-exec on purpose, and numbered far from what the child opens itself.
  int pipe_fds[2] = {::fcntl(made[0], F_DUPFD, 200), ::fcntl(made[1], F_DUPFD, 200)};
  ::close(made[0]);
  ::close(made[1]);
  ASSERT_GE(pipe_fds[0], 200);
  ASSERT_GE(pipe_fds[1], 200);
  TempDir dir;
  natsio::SpawnOptions spawn;
  spawn.argv = {"sh", "-c", "ls /proc/self/fd; exec sleep 30"};
  spawn.stdout_path = (dir.path() / "fds").string();
  auto pid = natsio::spawnProcess(spawn);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ASSERT_TRUE(pid.has_value());
  ASSERT_TRUE(eventually([&] { return fs::file_size(dir.path() / "fds") > 0; }));
  EXPECT_EQ(natsio::stopProcess(*pid, 5s), 128 + SIGTERM);
  std::string fds = natsio::tailFile(dir.path() / "fds", 100);
  EXPECT_EQ(fds.find(std::to_string(pipe_fds[0]) + "\n"), std::string::npos) << fds;
  EXPECT_EQ(fds.find(std::to_string(pipe_fds[1]) + "\n"), std::string::npos) << fds;
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
}

TEST(ChildProcess, WorksWhenTheParentHasNoStdin) {
  // A daemon may run with fd 0 closed: then the files spawnProcess opens land on 0..2.
  const int saved = ::dup(STDIN_FILENO);
  ASSERT_GE(saved, 0);
  ::close(STDIN_FILENO);
  TempDir dir;
  natsio::SpawnOptions spawn;
  spawn.argv = {"sh", "-c", "test -r /dev/stdin && echo in-ok; echo out-ok; echo err-ok >&2"};
  spawn.stdout_path = (dir.path() / "out").string();
  spawn.stderr_path = (dir.path() / "err").string();
  auto pid = natsio::spawnProcess(spawn);
  ::dup2(saved, STDIN_FILENO);
  ::close(saved);
  ASSERT_TRUE(pid.has_value()) << pid.error().message;
  EXPECT_EQ(natsio::waitProcess(*pid, 5s), 0);
  EXPECT_EQ(natsio::tailFile(dir.path() / "out", 10), "in-ok\nout-ok\n");
  EXPECT_EQ(natsio::tailFile(dir.path() / "err", 10), "err-ok\n");
}

// ---- the harness itself ---------------------------------------------------------------------

TEST(Harness, NatsServerRestartKeepsPortAndStore) {
  auto server = NatsServer::start();
  const int port = server->port();
  ASSERT_GT(port, 0);
  EXPECT_EQ(server->url(), "nats://127.0.0.1:" + std::to_string(port));
  Client client(server->url());
  client.kvPut("harness", "k", "v1");
  server->restart();
  EXPECT_EQ(server->port(), port);
  EXPECT_TRUE(server->running());
  ASSERT_TRUE(eventually(
      [&] { return natsConnection_Status(client.raw()) == NATS_CONN_STATUS_CONNECTED; }));
  EXPECT_EQ(client.kvGet("harness", "k"), std::optional<std::string>("v1"));
  EXPECT_EQ(client.kvGet("harness", "missing"), std::nullopt);
  EXPECT_EQ(client.kvGet("no_such_bucket", "k"), std::nullopt);
  EXPECT_TRUE(fs::exists(server->storeDir() / "jetstream"));

  server->kill9();
  EXPECT_FALSE(server->running());
  EXPECT_FALSE(natsio::tcpConnects("127.0.0.1", port));
  server->restart();
  EXPECT_EQ(server->port(), port);
  EXPECT_TRUE(natsio::tcpConnects("127.0.0.1", port));
}

TEST(Harness, TwoServersGetDifferentPortsAndExtraConfigApplies) {
  NatsServerOptions options;
  options.extra_config = "max_payload: 2048";
  auto a = NatsServer::start(options);
  auto b = NatsServer::start();
  EXPECT_NE(a->port(), b->port());
  EXPECT_EQ(connectTo(a->url())->maxPayload(), 2048u);
}

TEST(Harness, BrokenServerConfigThrowsWithTheLog) {
  NatsServerOptions options;
  options.extra_config = "this is { not valid";
  try {
    auto server = NatsServer::start(options);
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("exited"), std::string::npos) << e.what();
  }
}

TEST(Harness, ClientRequestCollectorResponderAndStreams) {
  auto server = NatsServer::start();
  Client client(server->url());
  EXPECT_EQ(client.request("nobody.home", "x", {}, 500ms), std::nullopt);

  Responder worker(client, "work.>", "done");
  Collector all(client, "work.>");
  auto reply = client.request("work.a", "job", {{"H", "1"}, {"H", "2"}}, 2s);
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->payload, "done");
  auto received = worker.received();
  ASSERT_EQ(received.size(), 1u);
  EXPECT_EQ(received[0].payload, "job");
  EXPECT_EQ(valuesOf(received[0].headers, "H"), (std::vector<std::string>{"1", "2"}));
  EXPECT_FALSE(received[0].reply.empty());

  client.publish("work.b", "p", {{"K", "v"}}, "reply.here");
  client.flush();
  auto got = all.waitFor(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1].subject, "work.b");
  EXPECT_EQ(got[1].reply, "reply.here");
  EXPECT_EQ(all.count(), 2u);
  EXPECT_EQ(all.messages().size(), 2u);
  // waitFor returns what it has when the timeout passes.
  EXPECT_EQ(all.waitFor(5, 100ms).size(), 2u);

  client.addStream("S", {"s.>"}, std::chrono::seconds(10));
  EXPECT_EQ(client.streamMessageCount("S"), 0u);
  client.publish("s.x", "1");
  client.flush();
  EXPECT_TRUE(eventually([&] { return client.streamMessageCount("S") == 1u; }));
  EXPECT_THROW(client.streamMessageCount("NOPE"), std::runtime_error);
}

TEST(Harness, ClientCannotConnectThrows) {
  EXPECT_THROW(Client("nats://127.0.0.1:" + std::to_string(freePort())), std::runtime_error);
}

TEST(Harness, TempDirWritesAndIsRemoved) {
  fs::path where;
  {
    TempDir dir;
    where = dir.path();
    auto file = dir.write("a.txt", "hello");
    EXPECT_EQ(natsio::tailFile(file, 5), "hello\n");
    EXPECT_TRUE(fs::is_directory(where));
  }
  if (std::getenv("KEEP_TEST_DIRS") == nullptr) {
    EXPECT_FALSE(fs::exists(where));
  }
}

TEST(Harness, JsonFieldsFlattensOneLevel) {
  auto fields = jsonFields(R"({"status":"approval_required","code":202,"ok":true,"n":null,)"
                           R"("obj":{"a":[1,2]},"s":"with \"quote\""})");
  EXPECT_EQ(fields["status"], "approval_required");
  EXPECT_EQ(fields["code"], "202");
  EXPECT_EQ(fields["ok"], "true");
  EXPECT_EQ(fields["n"], "null");
  EXPECT_EQ(fields["obj"], R"({"a":[1,2]})");
  EXPECT_EQ(fields["s"], "with \"quote\"");
}

TEST(Harness, JsonFieldsFailsTheTestOnInvalidJson) {
  // The failure is expected: check it is reported, then keep this test green.
  ::testing::TestPartResultArray failures;
  {
    ::testing::ScopedFakeTestPartResultReporter reporter(
        ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &failures);
    EXPECT_TRUE(jsonFields("not json").empty());
    EXPECT_TRUE(jsonFields("[1,2]").empty());
  }
  EXPECT_EQ(failures.size(), 2);
}

TEST(Harness, BasicConfigAndSeedPolicy) {
  std::string config = basicConfig("nats://127.0.0.1:1234", "release:\n  lease: 1s");
  EXPECT_NE(config.find("nats://127.0.0.1:1234"), std::string::npos);
  EXPECT_NE(config.find("agents.jobs.>"), std::string::npos);
  EXPECT_NE(config.find("file: policy.yaml"), std::string::npos);
  EXPECT_NE(config.find("embedded: false"), std::string::npos);
  EXPECT_TRUE(config.ends_with("\nrelease:\n  lease: 1s\n")) << config;
  EXPECT_TRUE(basicConfig("nats://x:1").ends_with("listen: \"\"\n"));
  EXPECT_NE(seedPolicy().find("require-approval-prod-finance"), std::string::npos);
}

TEST(Harness, RunCountersignHelp) {
  if (!fs::exists(COUNTERSIGN_BIN)) GTEST_SKIP() << "countersign binary not built yet";
  CommandResult result = runCountersign({"--help"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("run"), std::string::npos) << result.out;
  CommandResult bad = runCountersign({"no-such-subcommand"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_FALSE(bad.err.empty() && bad.out.empty());
}

TEST(Harness, RunCountersignPassesEnvironmentAndKillsOnTimeout) {
  if (!fs::exists(COUNTERSIGN_BIN)) GTEST_SKIP() << "countersign binary not built yet";
  // `run` against a server that does not exist exits with an error naming the URL from the
  // environment override, which shows that `env` reached the child.
  TempDir dir;
  auto config = dir.write("c.yaml", basicConfig("nats://127.0.0.1:1"));
  dir.write("policy.yaml", seedPolicy());
  const std::string url = "nats://127.0.0.1:" + std::to_string(freePort());
  CommandResult result =
      runCountersign({"run", "--config", config.string()}, {{"COUNTERSIGN_NATS_URL", url}}, 20s);
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE((result.out + result.err).find(url), std::string::npos) << result.out << result.err;
}

}  // namespace
}  // namespace countersign::testing
