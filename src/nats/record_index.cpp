#include "nats/record_index.hpp"

#include <pthread.h>

#include <algorithm>
#include <optional>
#include <string_view>

#include "countersign/trim_memory.hpp"

namespace countersign::natsio {

namespace {

// Between batches of writes the watcher thread sleeps this long (unless a page waits): a thread
// woken for every KV write costs a context switch per write.
constexpr std::chrono::milliseconds kBatchEvery{100};
constexpr std::chrono::milliseconds kRetryEvery{1000};

}  // namespace

RecordIndex::RecordIndex(Connection& connection, const StoreConfig& store)
    : connection_(connection), bucket_(store.bucket), table_(store.max_age) {}

RecordIndex::~RecordIndex() {
  stop();
  if (kv_ != nullptr) kvStore_Destroy(kv_);
}

void RecordIndex::start() {
  const std::lock_guard lock(mutex_);
  if (started_ || stopping_) return;
  started_ = true;
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "cs-list-index");
    lowerThreadPriority();
    run();
  });
}

bool RecordIndex::live() const {
  const std::lock_guard lock(mutex_);
  return live_;
}

void RecordIndex::stop() {
  {
    // The thread ends its watcher itself (Connection::retire) within one wait for a write (at
    // most kBatchEvery): a kvWatcher_Stop from here would unsubscribe it, and the thread's
    // kvWatcher_Destroy free it, without the round trip in between.
    const std::lock_guard lock(mutex_);
    stopping_ = true;
    live_ = false;
  }
  changed_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::uint64_t RecordIndex::lastSequence() {
  const std::string stream = "KV_" + bucket_;
  jsStreamInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  std::uint64_t last = 0;
  if (js_GetStreamInfo(&info, connection_.js(), stream.c_str(), nullptr, &code) == NATS_OK && info != nullptr) {
    last = info->State.LastSeq;
  }
  jsStreamInfo_Destroy(info);
  return last;
}

std::optional<ApprovalPage> RecordIndex::page(const ApprovalQuery& query) {
  start();
  if (!connection_.connected()) return std::nullopt;
  {
    // Loading (the first list after a start): wait for it rather than read every record at the
    // same time, while it makes progress. A page read from the store lists every key of the
    // bucket: over a million records that took as long as the load, held hundreds of MiB while
    // it ran (each caller its own), and slowed the load it raced with threefold.
    std::unique_lock lock(mutex_);
    const auto until = std::chrono::steady_clock::now() + kLoadWait;
    std::uint64_t progress = seen_;
    for (bool first = true;; first = false) {
      if (changed_.wait_for(lock, kSyncWait, [&] { return live_ || stopping_.load(); })) break;
      // Not in yet: the first wait covers the watcher's start; after it, a load that delivered
      // nothing for kSyncWait, or that takes longer than kLoadWait, is read directly meanwhile.
      if ((!first && seen_ == progress) || std::chrono::steady_clock::now() >= until) return std::nullopt;
      progress = seen_;
    }
    if (stopping_) return std::nullopt;
  }
  const std::uint64_t last = lastSequence();
  {
    std::unique_lock lock(mutex_);
    ++waiting_;
    changed_.notify_all();  // the watcher stops batching while someone waits
    const bool caught_up = changed_.wait_for(lock, kSyncWait, [&] {
      return seen_ >= last || last <= unreachable_ || !live_ || stopping_;
    });
    --waiting_;
    if (!live_ || stopping_) return std::nullopt;
    // A last write the watcher never delivers (aged out, or removed): not waited for again.
    if (!caught_up) unreachable_ = std::max(unreachable_, last);
  }
  return table_.page(query);
}

void RecordIndex::run() {
  auto pause = [&](std::chrono::milliseconds delay) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, delay, [&] { return stopping_.load(); });
  };
  while (!stopping_) {
    if (!connection_.connected()) {
      pause(std::chrono::milliseconds(200));
      continue;
    }
    if (kv_ == nullptr && js_KeyValue(&kv_, connection_.js(), bucket_.c_str()) != NATS_OK) {
      kv_ = nullptr;
      pause(kRetryEvery);
      continue;
    }
    kvWatchOptions options;
    kvWatchOptions_Init(&options);
    // Every message the stream keeps, in order, rather than the last per key: the same messages
    // in a bucket that keeps one value per key (older revisions of a record are ignored
    // otherwise), and a consumer that nats-server 2.9 creates at once, where a last-per-key
    // consumer over a million keys takes it tens of seconds on the connection's read loop.
    options.IncludeHistory = true;
    kvWatcher* watcher = nullptr;
    if (kvStore_WatchAll(&watcher, kv_, &options) != NATS_OK) {
      pause(kRetryEvery);
      continue;
    }
    while (!stopping_) {
      bool hurry = false;
      {
        const std::lock_guard lock(mutex_);
        hurry = waiting_ > 0 || !live_;
      }
      kvEntry* entry = nullptr;
      const natsStatus s = kvWatcher_Next(&entry, watcher, hurry ? 50 : 1);
      if (s == NATS_TIMEOUT) {
        if (!hurry) {
          std::unique_lock lock(mutex_);
          changed_.wait_for(lock, kBatchEvery, [&] { return waiting_ > 0 || stopping_.load(); });
        }
        continue;
      }
      if (s != NATS_OK) break;  // stopped, or the subscription failed: a new watcher reloads
      if (entry == nullptr) {  // the bucket's state is in
        {
          const std::lock_guard lock(mutex_);
          live_ = true;
        }
        changed_.notify_all();
        // Loading a large bucket buffered and parsed every record: hand the freed memory back,
        // so that the process's size follows what the table holds.
        trimMemory();
        continue;
      }
      const std::uint64_t revision = kvEntry_Revision(entry);
      if (kvEntry_Operation(entry) == kvOp_Put) {
        const char* key = kvEntry_Key(entry);
        const void* value = kvEntry_Value(entry);
        const int length = kvEntry_ValueLen(entry);
        table_.put(key != nullptr ? std::string_view(key) : std::string_view(),
                   value != nullptr && length > 0
                       ? std::string_view(static_cast<const char*>(value), static_cast<std::size_t>(length))
                       : std::string_view(),
                   revision, ApprovalTable::Clock::time_point(std::chrono::nanoseconds(kvEntry_Created(entry))));
      }
      kvEntry_Destroy(entry);
      bool notify = false;
      {
        const std::lock_guard lock(mutex_);
        seen_ = std::max(seen_, revision);
        notify = waiting_ > 0;
      }
      if (notify) changed_.notify_all();
    }
    {
      const std::lock_guard lock(mutex_);
      live_ = false;
    }
    changed_.notify_all();
    // The server may still be sending to its subscription (see Connection::retire).
    connection_.retire(watcher);
  }
}

}  // namespace countersign::natsio
