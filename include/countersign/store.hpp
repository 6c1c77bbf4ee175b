// The key-value store the approval state lives in (a JetStream KV bucket in production, an
// in-memory map in unit tests). All calls are thread-safe and synchronous, except createAsync.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "countersign/key_groups.hpp"
#include "countersign/result.hpp"

namespace countersign {

struct KvEntry {
  std::string value;
  std::uint64_t revision = 0;
};

class KvStore {
 public:
  virtual ~KvStore() = default;

  // Create-only write. Errc::exists when the key already has a value (the lock:
  // countersign only ever creates keys that were never used before; docs/exactly-once.md).
  virtual Result<std::uint64_t> create(std::string_view key, std::string_view value) = 0;

  // Errc::not_found when the key has no value (never written, deleted or purged).
  virtual Result<KvEntry> get(std::string_view key) = 0;
  // get() of each key, answered in the order of `keys`: for each key what get() would return.
  // A store that can sends the reads at once and waits for the answers together (one round
  // trip's wait instead of one per key); this default reads them one after the other.
  virtual std::vector<Result<KvEntry>> getMany(std::span<const std::string> keys) {
    std::vector<Result<KvEntry>> out;
    out.reserve(keys.size());
    for (const auto& key : keys) out.push_back(get(key));
    return out;
  }

  // Compare-and-swap on the key's last revision. Errc::wrong_revision when it moved on.
  // Only for the record's own fields, never as the lock (see docs/exactly-once.md).
  virtual Result<std::uint64_t> update(std::string_view key, std::string_view value,
                                       std::uint64_t expected_revision) = 0;

  // One write of writeMany(): a create (expected_revision 0) or an update on the key's last
  // revision.
  struct Write {
    std::string_view key;
    std::string_view value;
    std::uint64_t expected_revision = 0;
  };
  // Each write as create() or update() would do it, answered in the order of `writes`. A store
  // that can sends them at once and waits for the answers together; the writes must not depend
  // on each other (they may be applied in any order). This default makes them one after the
  // other.
  virtual std::vector<Result<std::uint64_t>> writeMany(std::span<const Write> writes) {
    std::vector<Result<std::uint64_t>> out;
    out.reserve(writes.size());
    for (const auto& w : writes) {
      out.push_back(w.expected_revision == 0 ? create(w.key, w.value) : update(w.key, w.value, w.expected_revision));
    }
    return out;
  }

  // Keys that currently have a value, in any order. May come from an index that learns of
  // other processes' writes with a delay (KvBucket): fine for periodic scans. Such an index may
  // leave out the keys of groups given to retire().
  virtual Result<std::vector<std::string>> keys() = 0;
  // The caller needs no key of `group` (the key `group` and every `group/...`) from keys() any
  // more: its work on them is finished for good. An index may forget them (and ignore writes to
  // them for a while); a store without one lists them as before.
  virtual void retire(std::string_view group) { (void)group; }
  // What keys() gives, handed over one by one as its group (the part before the first '/') and
  // the rest after it ("" for the key that is the group itself); the views are valid only during
  // the call, which must be quick and must not call the store. For scans of large buckets: no
  // copy of each key. The default lists keys().
  using KeyVisitor = std::function<void(std::string_view group, std::string_view rest)>;
  virtual Status visitKeys(const KeyVisitor& visit) {
    auto all = keys();
    if (!all) return std::unexpected(all.error());
    for (const std::string_view key : *all) {
      const auto slash = key.find('/');
      visit(key.substr(0, slash), slash == std::string_view::npos ? std::string_view() : key.substr(slash + 1));
    }
    return {};
  }
  // What visitBusyKeys did.
  struct BusyVisit {
    bool all = true;  // every key was visited, as visitKeys visits them (the rest is then unset)
    std::size_t records = 0;          // record keys (keys without '/') the store has
    std::size_t decided_records = 0;  // of those, the ones whose group has a `decision` key
    std::vector<std::string> removed;  // record keys removed since the last call
  };
  // For the periodic scans of one caller (the replayer) that need only the approvals at work:
  // visits, as visitKeys does, every key of the groups with a `decision`, `released`,
  // `replay/...` or `vote/...` key, and the record key of every other group whose record key
  // came since the last call; lists in `removed` the record keys that went since the last call
  // (deleted, purged, aged out). When it cannot tell what changed (the first call, an index
  // that was not live, too many changes) or `all` is set, it visits every key instead and
  // answers `all`. "Since the last call" is the store's: one caller per store. The default
  // visits every key (visitKeys).
  virtual Result<BusyVisit> visitBusyKeys(const KeyVisitor& visit, bool all) {
    (void)all;
    if (auto ok = visitKeys(visit); !ok) return std::unexpected(ok.error());
    return BusyVisit{};
  }
  // The same, read from the bucket now: includes every write confirmed before the call (for
  // answers to people: `list`, and operator decisions).
  virtual Result<std::vector<std::string>> listKeys() { return keys(); }
  // The keys of one group (the key `group` and every `group/...`) that currently have a value,
  // in any order; for counting an approval's votes or claims without listing the bucket. A store
  // with an index answers from it (KvBucket: this process's own creates are in at once, other
  // processes' writes may show up a little late); this default filters listKeys().
  // `through_revision` (0: none): the answer includes every write to the bucket up to that
  // revision (the caller's own write's, so that of two writers at once the later sees the
  // earlier); an index waits until it has them (briefly, then lists). A listing has them
  // anyway.
  virtual Result<std::vector<std::string>> groupKeys(std::string_view group, std::uint64_t through_revision = 0) {
    (void)through_revision;
    auto all = listKeys();
    if (!all) return all;
    std::erase_if(*all, [&](const std::string& key) { return KeyGroups::split(key).first != group; });
    return all;
  }

  // create() without waiting for the answer: `done` gets exactly what create() would return,
  // exactly once, on any thread (possibly before this call returns). It must not block: it may
  // run on the client library's delivery thread. The default runs create() in the caller.
  using CreateDone = std::function<void(Result<std::uint64_t>)>;
  virtual void createAsync(std::string_view key, std::string_view value, CreateDone done) {
    done(create(key, value));
  }
};

// KvStore::visitBusyKeys from an index of the store's keys (the caller holds its lock): when the
// changes since the last call are not known (or `all`), every key of `groups` is visited. The
// changes are collected from this call on.
inline KvStore::BusyVisit visitBusyGroups(KeyGroups& groups, const KvStore::KeyVisitor& visit, bool all) {
  KvStore::BusyVisit out;
  if (all) {
    groups.restartChanges();
  } else {
    out.all = !groups.visitChanges(visit, [&](std::string_view group) { out.removed.emplace_back(group); });
  }
  if (out.all) {
    groups.forEach(visit);
  } else {
    out.records = groups.records();
    out.decided_records = groups.decidedRecords();
  }
  return out;
}

}  // namespace countersign
