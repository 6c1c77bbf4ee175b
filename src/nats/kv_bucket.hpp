// KvStore on a JetStream KV bucket (cnats kvStore). Thread-safe: cnats' kvStore is.
#pragma once

#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>

#include "countersign/config.hpp"
#include "countersign/store.hpp"
#include "countersign/work_pool.hpp"
#include "nats/connection.hpp"

namespace countersign::natsio {

class KvBucket : public KvStore {
 public:
  // Binds to config.bucket, or creates it (file storage, history 1, config.replicas replicas,
  // config.max_age as the age limit; 0 = none) when it does not exist. An existing bucket is
  // used as it is (its replicas are not changed: an operator may scale it), but its age limit
  // must be config.max_age (Errc::invalid_argument otherwise: records would age out at another
  // time than the config says). Errc::unavailable when JetStream does not answer, with a
  // message that says so when the server has JetStream off. The Connection must outlive the
  // bucket.
  //
  // Every call fails at once with Errc::unavailable while the connection is down (instead of
  // being buffered by cnats and sent, maybe after the caller gave up, once it reconnects), from
  // the moment cnats reports the loss (Connection::connected); a call made in the moment before
  // waits for its answer like any other.
  // Errc::timeout (no answer within the JetStream context's 5 s) leaves the outcome unknown.
  // `max_async_creates`: createAsync calls in flight before the next one waits for room.
  // `timers`: the executor whose timer answers creates without a PubAck (its lane "kv-sweep");
  // the sweeps end with the bucket or the executor. Null: a thread of the bucket's own
  // (cs-kv-sweep).
  // `watch_connection`: where the passes over the whole bucket go (the key watcher, full
  // listings): on a large bucket they stream every key, and the server answers a consumer
  // request on the connection's own read loop, so on a connection of their own they do not
  // hold up this connection's requests and answers (nor its heartbeats). Null: `connection`.
  // It must outlive the bucket; the watcher's connection should not be send_asap (see
  // Connection::connect).
  static Result<std::unique_ptr<KvBucket>> open(Connection& connection, const StoreConfig& config,
                                                int max_async_creates = 1024, WorkPool* timers = nullptr,
                                                Connection* watch_connection = nullptr);
  ~KvBucket() override;
  KvBucket(const KvBucket&) = delete;
  KvBucket& operator=(const KvBucket&) = delete;

  // Keys may use A-Z a-z 0-9 _ - / = \ and non-leading, non-trailing, non-repeated '.';
  // anything else is Errc::invalid_argument.
  //
  // Errc::exists when the key has a value. Note (docs/exactly-once.md): on a key that was
  // deleted or purged, cnats turns the create into an update, which is not a safe lock on
  // replicated buckets before nats-server 2.9.21; countersign never deletes keys.
  Result<std::uint64_t> create(std::string_view key, std::string_view value) override;
  // Errc::not_found for a key never written, deleted or purged. A bucket with one replica is
  // read with direct gets; a replicated one through the stream leader (a lagging replica may
  // answer a direct get without the latest writes).
  Result<KvEntry> get(std::string_view key) override;
  // The keys' direct gets sent at once on one reply inbox, the answers awaited together (each
  // as get() would give it; Errc::timeout for one without an answer within 5 s). A replicated
  // bucket is read one key after the other, through the stream leader as get() does.
  std::vector<Result<KvEntry>> getMany(std::span<const std::string> keys) override;
  // The writes' JetStream publishes sent at once on this thread's reply inbox and their PubAcks
  // awaited together (each answered as create() or update() would answer it).
  std::vector<Result<std::uint64_t>> writeMany(std::span<const Write> writes) override;
  // Errc::wrong_revision when the key's last revision is not `expected_revision` (including a
  // key without value). expected_revision 0 is Errc::invalid_argument: cnats would turn it into
  // an unconditional put; use create().
  Result<std::uint64_t> update(std::string_view key, std::string_view value,
                               std::uint64_t expected_revision) override;
  // Keys that currently have a value, but those of retired groups; an empty bucket gives an
  // empty list. Served from an index that a watcher (started by the first call) keeps current,
  // plus this process's own creates, so that periodic scans do not read the whole bucket again.
  // The watcher's first pass over the bucket is the only one: until it has delivered the
  // bucket's state, keys() waits for it (Errc::unavailable at once while disconnected,
  // Errc::timeout when the pass delivers nothing for 120 s). After a lost subscription the
  // watcher resumes after the last write it saw. With an age limit (store.max_age) the index is
  // checked against a full listing every 30 s (aged-out keys get no delete). A key created by
  // another process may show up up to about a second late (the watcher catches up in a pass
  // every second; in a cluster, and while callers wait for revisions, it follows the bucket and
  // is a few milliseconds behind).
  Result<std::vector<std::string>> keys() override;
  // keys() without copying each key: the index's keys, visited under its lock (the visit must
  // be quick).
  Status visitKeys(const KeyVisitor& visit) override;
  // From the index, under its lock: the busy groups' keys and the records added since the last
  // call (KeyGroups::visitChanges), with the index's counts. Every key (as visitKeys) on the
  // first call, when asked, when the watcher was not live at some time since the last call,
  // after more than KeyGroups::kMaxChanges changes, and when the age limit's full listing is due.
  Result<BusyVisit> visitBusyKeys(const KeyVisitor& visit, bool all) override;
  // Called, on the watcher's thread, with every key and value its first pass over the bucket
  // delivers (that pass then carries values; later writes come as keys only). Set it before
  // the first keys() call. The replayer learns the deadlines of the records from it, instead of
  // reading each record again.
  using FirstPassValue = std::function<void(std::string_view key, std::string_view value)>;
  void onFirstPass(FirstPassValue each);
  // Forgets the group's keys (`group` and `group/...`) in the index; writes to it in the next
  // 30 s or more are not indexed either, so memory follows the open groups. A full listing
  // (the watcher restarting, or an age limit's check) may bring it back once.
  void retire(std::string_view group) override;
  // The group's keys from the index while it is live (this process's creates at once, other
  // processes' writes late, as for keys()); from a full listing while it is
  // not, for a retired group, or when the age limit's check is due. With `through_revision`,
  // the index answers once the watcher has taken every write up to it (it then follows the
  // bucket, taking writes as they come, until 5 s after the last such wait), or after 200 ms
  // without (only late writes of other processes can be missing).
  Result<std::vector<std::string>> groupKeys(std::string_view group, std::uint64_t through_revision = 0) override;
  // The full listing (kvStore_Keys), bypassing the index.
  Result<std::vector<std::string>> listKeys() override;
  // Whether the watcher has delivered the bucket's state and is running (for tests).
  bool indexLive() const;
  // Full listings (listKeys) made so far (for tests).
  std::uint64_t listings() const { return listings_; }
  // Stops the watcher (keys() lists the bucket from then on). Call it before draining the
  // connection: a watcher's subscription does not drain while it runs.
  void stopWatching();
  // An asynchronous JetStream publish to the key's subject with "expected last subject
  // sequence 0" (what kvStore_Create sends, without its retry over a delete marker: countersign
  // never deletes keys). `done` runs on the delivery thread of the bucket's PubAck
  // subscription (cs-kv-puback); Errc::timeout when no PubAck came within 5 s (the outcome is
  // then unknown, as for create()). With `max_async_creates` in flight the call waits for one
  // of them to be answered, at most 5 s (then Errc::unavailable: nothing was sent).
  void createAsync(std::string_view key, std::string_view value, CreateDone done) override;
  // Waits until every createAsync has called its `done` (true), or `timeout` passed (false).
  bool waitForCreates(std::chrono::milliseconds timeout);
  // Answers every createAsync still waiting for its PubAck with Errc::unavailable now, on this
  // thread (a PubAck that comes later is dropped), and waits (at most 5 s) for the answers other
  // threads are giving. For the owner of what the `done` callbacks capture, before it goes:
  // afterwards no `done` of an earlier create runs.
  void cancelCreates();

  const std::string& bucket() const { return bucket_; }

 private:
  // A KV write as a JetStream publish with Nats-Expected-Last-Subject-Sequence: `expected`
  // (Connection::request: no hand-over to cnats' inbox thread and collector). Errc::wrong_revision
  // when the key is no longer at `expected`.
  Result<std::uint64_t> write(const std::string& key, std::string_view value, std::uint64_t expected,
                              std::string_view what);
  // What create() and update() make of their write's outcome (create: over a delete marker, an
  // answer lost on a replicated bucket; update: the message of a lost compare-and-swap).
  Result<std::uint64_t> created(const std::string& key, std::string_view value, Result<std::uint64_t> written);
  Result<std::uint64_t> updated(const std::string& key, std::uint64_t expected_revision,
                                Result<std::uint64_t> written);
  struct AsyncCreates;
  struct KeyIndex;
  KvBucket(Connection& connection, kvStore* kv, std::string bucket);
  Status checkConnected(std::string_view what) const;
  Status startAsync(int max_pending, WorkPool* timers);
  void watchKeys();
  // With the index's lock held: starts the watcher on the first call, then waits for its first
  // pass (see keys()).
  Status waitForIndex(std::unique_lock<std::mutex>& lock);
  void startWatcher();
  Connection& watchConnection() const { return watch_connection_ != nullptr ? *watch_connection_ : connection_; }
  // The bucket stream's last sequence (0 when empty; nullopt when it cannot be read).
  std::optional<std::uint64_t> lastSequence();
  Connection& connection_;
  Connection* watch_connection_ = nullptr;  // null: connection_
  kvStore* kv_;
  // The same bucket on the watch connection, on a JetStream context that waits longer for the
  // server (kListingWait): a full listing creates a consumer over every key, which a server
  // holding a million records answers in more than the 5 s the other calls wait. Null: kv_.
  jsCtx* listing_js_ = nullptr;
  kvStore* listing_kv_ = nullptr;
  // The key watcher's JetStream context on the watch connection, with the usual 5 s wait: its
  // ordered consumers are deleted through it when their subscription ends, and a server that
  // stops answering must not hold that up (or stopWatching()) for a listing's two minutes.
  // Null: the watch connection's own context.
  jsCtx* watch_js_ = nullptr;
  std::string bucket_;
  std::shared_ptr<AsyncCreates> async_;  // shared with the sweeps' timer (weakly)
  std::unique_ptr<KeyIndex> index_;
  bool direct_gets_ = false;  // one replica and allow_direct: reads are direct gets
  bool one_value_per_key_ = false;  // history 1: the stream holds only each key's last message
  bool clustered_ = false;  // the server is part of a cluster (see watchKeys)
  std::atomic<std::uint64_t> listings_{0};
};

}  // namespace countersign::natsio
