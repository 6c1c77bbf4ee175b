// The approvals index (ApprovalIndex) of a KV bucket: a watcher on the bucket (values
// included) feeds an ApprovalTable, so `list` answers a page from memory instead of reading
// every record. Started by the first page() call: a process that never lists pays nothing.
//
// Correct across restarts and replicas: the watcher first delivers the bucket's current state
// (the table is rebuilt from it on every start), then every write, whoever made it. A page
// waits (at most kSyncWait) until the table has seen the bucket's last write as of the request,
// so a decision confirmed before a list is in that list, on any replica.
#pragma once

#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "countersign/approval_index.hpp"
#include "countersign/config.hpp"
#include "nats/connection.hpp"

namespace countersign::natsio {

class RecordIndex : public ApprovalIndex {
 public:
  // The Connection must outlive the index. Nothing is started here.
  RecordIndex(Connection& connection, const StoreConfig& store);
  ~RecordIndex() override;  // stop()
  RecordIndex(const RecordIndex&) = delete;
  RecordIndex& operator=(const RecordIndex&) = delete;

  // nullopt while disconnected, or when the bucket's state has not loaded (the first call
  // starts loading it) and its load stalls for kSyncWait or takes longer than kLoadWait: the
  // caller falls back to reading the records.
  std::optional<ApprovalPage> page(const ApprovalQuery& query) override;
  // Starts loading without answering (tests, warm-up).
  void start();
  // Whether the bucket's state is loaded and the watcher runs.
  bool live() const;
  // Stops the watcher; page() answers nullopt from then on. Call before draining the connection.
  void stop();

  static constexpr std::chrono::milliseconds kSyncWait{2000};
  static constexpr std::chrono::milliseconds kLoadWait{30000};

 private:
  void run();
  // The bucket stream's last sequence (a stream info request); 0 when it cannot be read.
  std::uint64_t lastSequence();

  Connection& connection_;
  const std::string bucket_;
  ApprovalTable table_;
  kvStore* kv_ = nullptr;  // our own handle (guarded by mutex_ until the thread owns it)

  mutable std::mutex mutex_;
  std::condition_variable changed_;  // a write was applied, or someone waits for one
  std::uint64_t seen_ = 0;           // highest sequence applied
  std::uint64_t unreachable_ = 0;    // a last sequence waited for in vain (aged out, deleted)
  int waiting_ = 0;                  // page() calls waiting for the watcher
  bool live_ = false;
  bool started_ = false;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace countersign::natsio
