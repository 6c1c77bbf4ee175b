// The replayer (docs/exactly-once.md) and the expiry sweep: finishes approvals whose release was
// interrupted, and expires held jobs past their deadline. Reads the decisive keys, never the
// record's state view.
//
// A scan costs what the open work costs, not what the bucket holds: it looks at the approvals
// at work (KvStore::visitBusyKeys: decided, released, claimed or voted on) and the records that
// came since the last scan, takes the records whose deadline or escalation step is due from a
// short time-ordered list of the earliest deadlines (the full map of deadlines is walked only
// when that list runs out), and drops the deadlines of records the store reports removed. A full
// scan, which looks at every key, runs at start, when the store cannot tell what changed, when
// a scan's limit of record reads left records unread, and every kFullScanEvery; a record whose
// read failed is read again by the next scans. One Replayer per process, driven by one thread
// (scan() is not reentrant); any number of processes may scan the same bucket at once: every
// step that acts is the create of a never-used key (<id>/replay/<n>, <id>/decision).
#pragma once

#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "countersign/id_map.hpp"
#include "countersign/releaser.hpp"
#include "countersign/services.hpp"

namespace countersign {

struct ReplayerOptions {
  std::chrono::milliseconds lease{5000};  // wait this long after first seeing an unfinished release
  // New undecided records whose deadline is read per scan: spreads the first scan of a large
  // backlog over several intervals instead of stalling one.
  int max_record_reads_per_scan = 2000;
  // Duplicate window of each to_stream, by stream name (from the stream's config at start).
  std::map<std::string, std::chrono::nanoseconds, std::less<>> duplicate_windows;
};

struct ScanResult {
  int pending = 0;          // held, undecided
  int unreleased = 0;       // approved, release not recorded
  int replayed = 0;         // released by this scan
  int release_unknown = 0;  // marked release_unknown by this scan
  int expired = 0;          // expired by this scan
};

class Replayer {
 public:
  Replayer(Services services, Releaser& releaser, ReplayerOptions options);
  Result<ScanResult> scan();
  // A hold this process stored, with its deadline (nullopt: none): the next scan need not read
  // the record to learn it. Thread-safe (intake calls it while scan() runs).
  void noteHeld(std::string_view id, std::optional<std::chrono::system_clock::time_point> deadline);
  // A key and value of the store as found at start (KvBucket::onFirstPass): a record's deadline
  // is noted as for noteHeld, so the scans need not read the record again. Other keys and
  // values that are not records are ignored. Thread-safe.
  void noteRecord(std::string_view key, std::string_view value);
  // A record this process changed so that it needs this replayer at another time (re-bound to a
  // new policy: new escalation steps): `at` (nullopt: never) replaces what the replayer knew,
  // where noteHeld's deadline only fills in what it did not know. Thread-safe.
  void reschedule(std::string_view id, std::optional<std::chrono::system_clock::time_point> at);

 private:
  struct Sighting {
    std::chrono::steady_clock::time_point since;
    int claims = 0;  // replay claims seen when the lease started
  };
  // Moves what noteHeld/noteRecord/reschedule gave into deadlines_ (seen by this scan).
  void takeNoted();
  // A scan's steps, in order: the visit of the keys (every key, or the approvals at work and
  // what changed), the releases and quorums to finish, the records new to this replayer, the
  // deadlines due, and forgetting what is finished.
  struct KeysAtWork;
  Result<KvStore::BusyVisit> visitKeys(bool want_all, KeysAtWork& keys);
  void finishDecided(const KeysAtWork& keys, ScanResult& result);
  void readNewRecords(const KeysAtWork& keys, const std::vector<std::string>& retry, bool full, ScanResult& result,
                      std::unordered_set<std::string_view>& settled_records);
  std::vector<std::string> expireDue(const KeysAtWork& keys, bool full, std::int64_t now_ns, ScanResult& result,
                                     std::unordered_set<std::string_view>& settled_records);
  void forget(const KeysAtWork& keys, bool full, const std::vector<std::string>& due,
              const std::unordered_set<std::string_view>& settled_records);
  // The ids whose deadline (in deadlines_) is at or before `now_ns`, maybe twice.
  std::vector<std::string> dueIds(std::int64_t now_ns);
  void finishRelease(const std::string& id, int claims, ScanResult& result);
  // Whether a record whose deadline was not known could be read (`known`: its deadline is
  // known now, or it needed no read).
  enum class Read { known, over_limit, failed };
  Read expireIfDue(std::string_view id, ScanResult& result);
  void finishQuorum(const std::string& id, ScanResult& result);
  void escalate(const ApprovalRecord& record, int step);
  // Lets the maps below be searched with a string_view (no copy of the key per lookup).
  struct KeyHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view key) const { return std::hash<std::string_view>{}(key); }
  };
  std::chrono::nanoseconds duplicateWindow(const ApprovalRecord& record) const;

  Services s_;
  Releaser& releaser_;
  ReplayerOptions options_;
  std::unordered_map<std::string, Sighting> sightings_;
  // Records with votes and no decision: since when this process has seen their vote keys as
  // `votes` (the lease restarts whenever they change).
  struct VoteSighting {
    std::chrono::steady_clock::time_point since;
    VoteStamp votes;
  };
  std::unordered_map<std::string, VoteSighting> vote_sightings_;
  int record_reads_ = 0;  // in the current scan
  // When an undecided record next needs this replayer (kNever: never), read once per id;
  // `seen`: the last scan that found the record (the others are dropped at the end of a scan).
  // One per pending approval, so packed (12 bytes beside the id in an IdMap).
#pragma pack(push, 4)
  struct Deadline {
    std::int64_t at_ns = kNever;  // system_clock, since the epoch
    std::uint32_t seen = 0;
  };
#pragma pack(pop)
  static constexpr std::int64_t kNever = std::numeric_limits<std::int64_t>::max();
  static std::int64_t atNs(std::optional<std::chrono::system_clock::time_point> at);
  IdMap<Deadline> deadlines_;
  // Sets the id's deadline, and keeps `soon_` whole.
  void setDeadline(std::string_view id, Deadline deadline);
  void noteSoon(std::string_view id, std::int64_t at_ns);
  // The earliest deadlines, by time: every entry of deadlines_ whose at_ns is before `horizon_`
  // is here (with others that have moved on or gone since: looked up before use). At most
  // kSoonMax entries; when now passes `horizon_` deadlines_ is walked to take the next kSoon.
  std::set<std::pair<std::int64_t, std::string>, std::less<>> soon_;
  std::int64_t horizon_ = std::numeric_limits<std::int64_t>::min();  // nothing known yet
  static constexpr std::size_t kSoon = 2048;
  static constexpr std::size_t kSoonMax = 2 * kSoon;
  // Full scans: they find records no change told of (and every record noted at start whose
  // deadline was not read), and drop the deadlines of records gone without a report. Every
  // minute: at a million pending records one costs about a quarter of a second of a core, so
  // this is under 0.5% of a core, and a record missed by the incremental scans (which should
  // not happen) waits at most a minute longer than its deadline.
  static constexpr std::chrono::seconds kFullScanEvery{60};
  std::chrono::steady_clock::time_point last_full_{};
  bool full_next_ = true;  // the next scan is a full one
  // Records whose read failed in the last scan (the store did not answer, or a key whose record
  // is gone): the next scan reads them again rather than running a full scan, which would meet
  // the same failure and make every scan a full one. At most kRetryMax (the periodic full scan
  // finds the others).
  std::vector<std::string> retry_;
  static constexpr std::size_t kRetryMax = 256;
  std::uint32_t scans_ = 0;
  // Decided without a release for good (rejected, expired): their decision is read once, not
  // every scan.
  std::unordered_set<std::string, KeyHash, std::equal_to<>> settled_;
  std::mutex noted_mutex_;
  IdMap<Deadline> noted_;  // from noteHeld and noteRecord, not in deadlines_ yet
  IdMap<Deadline> rescheduled_;  // from reschedule(), not in deadlines_ yet
};

}  // namespace countersign
