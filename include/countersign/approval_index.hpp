// The approvals as a list answers them: one summary per record, kept from the store's writes
// (record, <id>/decision, <id>/released), so that a list page costs what it shows, not a read
// of every record in the bucket.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "countersign/record.hpp"

namespace countersign {

// What a list item shows of one approval.
struct ApprovalSummary {
  std::string id;
  std::string job_id;
  std::string topic;
  std::string rule;
  std::string created_at;
  std::string expires_at;
  std::string requester;
  ApprovalState record_state = ApprovalState::pending;  // the record's view
  int votes = 0;
  int quorum = 1;  // votes needed
  std::vector<std::string> approvers;
  // The decisive keys: <id>/decision (with its outcome when readable) and <id>/released.
  bool decided = false;
  std::optional<FinalDecision> decision;
  bool released = false;

  // As the keys say: released, else the decision's outcome (release_unknown stays), else the
  // record's view.
  ApprovalState state() const;
};

// The summary of a stored record (the fields a list shows); nullopt when `json` is not a
// record. Reads only those fields: a large payload is skipped, not decoded.
std::optional<ApprovalSummary> summarizeRecord(std::string_view json);

struct ApprovalQuery {
  std::optional<ApprovalState> state;
  std::string topic;  // a NATS subject pattern (`*`, `>`); empty: every topic
  std::string after;  // the cursor: ids after this one
  int limit = 100;
};

struct ApprovalPage {
  std::vector<ApprovalSummary> items;  // in id order
  std::string next_after;              // set when more items follow
};

// Answers list pages without reading the store.
class ApprovalIndex {
 public:
  virtual ~ApprovalIndex() = default;
  // nullopt when the index cannot answer now (not loaded yet, or its feed is down): the caller
  // reads the store instead.
  virtual std::optional<ApprovalPage> page(const ApprovalQuery& query) = 0;
};

// The index's data: fed with the bucket's writes in any order of keys (a key's older revision
// after a newer one is ignored), answers pages. Thread-safe.
//
// Memory follows the open approvals, not the bucket's history: every approval with work left
// (pending, approved but not released yet, release_unknown) is kept, and of the finished ones
// (released, rejected, expired) only the `finished_kept` that finished last. Once one was let
// go, a page that may show finished approvals (no state filter, or a finished state) is not
// answered here (page() gives nullopt): the caller reads the store for it.
class ApprovalTable {
 public:
  using Clock = std::chrono::system_clock;
  static constexpr std::size_t kFinishedKept = 10000;
  // Records written longer than `max_age` ago have aged out of the bucket and are not listed
  // (0: records never age out).
  explicit ApprovalTable(std::chrono::seconds max_age = std::chrono::seconds(0),
                         std::size_t finished_kept = kFinishedKept);
  ~ApprovalTable();
  ApprovalTable(const ApprovalTable&) = delete;
  ApprovalTable& operator=(const ApprovalTable&) = delete;
  // A write of `key` at stream sequence `revision`, stored at `written`; keys other than a
  // record's, its decision and its release are ignored.
  void put(std::string_view key, std::string_view value, std::uint64_t revision,
           Clock::time_point written = Clock::now());
  // nullopt when the page may hold finished approvals this table has let go.
  std::optional<ApprovalPage> page(const ApprovalQuery& query, Clock::time_point now = Clock::now()) const;
  std::size_t size() const;  // approvals with a record held
  // Whether a finished approval was let go (pages that may show finished ones go to the store).
  bool forgotFinished() const;
  // Memory the table holds, roughly (for tests and benchmarks).
  std::size_t bytes() const;

 private:
  // A million pending approvals may be held: the entries are compact (see approval_index.cpp).
  struct Data;
  std::unique_ptr<Data> d_;
  mutable std::mutex mutex_;
};

}  // namespace countersign
