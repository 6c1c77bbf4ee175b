// The keys of a KV bucket of approvals, by group (the part of a key before its first '/'): an
// approval's record is the key `<id>`, its decision `<id>/decision`, its release
// `<id>/released`; claims, votes and escalations are further `<id>/...` keys. Kept for the scans
// of a large bucket, so memory per key matters: a group's record, decision and release keys are
// bits beside its id in an IdMap (about 40 bytes for a pending approval with a 32-character id),
// its other keys (few: an approval being decided or released) in a map of their own.
//
// For scans that look only at the approvals at work, it also keeps the "busy" groups (those with
// a decision, release, replay claim or vote key: few; not the escalation or Slack keys, which
// many pending approvals have), the count of records and of decided records, and, once asked
// (visitChanges), the record keys added and removed since the last time it was asked.
//
// Not thread-safe (the owner locks).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "countersign/id_map.hpp"

namespace countersign {

class KeyGroups {
 public:
  // A key as its group and the rest after the first '/' ("" for the key that is the group).
  static std::pair<std::string_view, std::string_view> split(std::string_view key);

  void add(std::string_view group, std::string_view rest);
  void erase(std::string_view group, std::string_view rest);
  void eraseGroup(std::string_view group);
  bool contains(std::string_view group, std::string_view rest) const;
  // visit(group, rest) for every key; the views are valid during the call.
  template <typename F>
  void forEach(F&& visit) const {
    common_.forEach([&](std::string_view group, std::uint8_t bits) {
      if ((bits & kRecord) != 0) visit(group, std::string_view());
      if ((bits & kDecision) != 0) visit(group, std::string_view("decision"));
      if ((bits & kReleased) != 0) visit(group, std::string_view("released"));
    });
    for (const auto& [group, rests] : others_) {
      for (const auto& rest : rests) visit(std::string_view(group), std::string_view(rest));
    }
  }
  // Record keys (`<id>`), and those of them whose group has a `<id>/decision` key.
  std::size_t records() const { return records_; }
  std::size_t decidedRecords() const { return decided_records_; }
  std::size_t busyGroups() const { return busy_.size(); }

  // For an incremental scan: visit(group, rest) for every key of the busy groups, then for the
  // record key of each other group whose record key was added since the last call; removed(group)
  // for each record key removed since the last call (erase(), not eraseGroup(): a retired group's
  // work is finished) and not added again. False, with nothing visited, when the changes since
  // the last call are not known (the first call, after stopChanges(), or more than kMaxChanges
  // piled up): the caller must then look at every key (forEach). Either way the changes are
  // collected from this call on. The views are valid during the calls only.
  template <typename V, typename R>
  bool visitChanges(V&& visit, R&& removed) {
    const bool known = tracking_ && !overflowed_;
    if (known) {
      busy_.forEach([&](std::string_view group, IdMapNoValue) { visitGroup(group, visit); });
      added_.forEach([&](std::string_view group, IdMapNoValue) {
        if (!busy_.contains(group)) visit(group, std::string_view());
      });
      removed_.forEach([&](std::string_view group, IdMapNoValue) { removed(group); });
    }
    restartChanges();
    return known;
  }
  // Changes are collected from now on, as after visitChanges(), with none so far (for a caller
  // that has just looked at every key).
  void restartChanges();
  // The changes are not known any more (the next visitChanges() answers false): for an owner
  // whose keys may have changed without add() or erase() calls.
  void stopChanges();
  static constexpr std::size_t kMaxChanges = 65536;

  std::vector<std::string> keys() const;
  // The keys of one group (`group` and every `group/...`), whole.
  std::vector<std::string> groupKeys(std::string_view group) const;
  std::size_t groups() const;  // groups with at least one key
  std::size_t bytes() const;   // memory held, roughly (the other keys' nodes counted by their strings)
  void clear();

 private:
  static constexpr std::uint8_t kRecord = 1, kDecision = 2, kReleased = 4;
  static std::uint8_t bitOf(std::string_view rest);
  // A key that makes its group busy: a decision, release, replay claim or vote.
  static bool busyRest(std::string_view rest);
  // The group's keys, as forEach visits them.
  template <typename F>
  void visitGroup(std::string_view group, F&& visit) const {
    const std::uint8_t bits = common_.get(group).value_or(0);
    if ((bits & kRecord) != 0) visit(group, std::string_view());
    if ((bits & kDecision) != 0) visit(group, std::string_view("decision"));
    if ((bits & kReleased) != 0) visit(group, std::string_view("released"));
    if (const auto it = others_.find(group); it != others_.end()) {
      for (const auto& rest : it->second) visit(group, std::string_view(rest));
    }
  }
  // The group's bits moved from `before` to `after`: the counts follow (and the changes).
  void counted(std::string_view group, std::uint8_t before, std::uint8_t after, bool report_removal);
  void refreshBusy(std::string_view group);
  void changed(IdMap<>& into, IdMap<>& out_of, std::string_view group);

  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view key) const { return std::hash<std::string_view>{}(key); }
  };
  IdMap<std::uint8_t> common_;  // group -> its record, decision and release keys (bits)
  std::unordered_map<std::string, std::vector<std::string>, Hash, std::equal_to<>> others_;
  IdMap<> busy_;
  std::size_t records_ = 0;
  std::size_t decided_records_ = 0;
  bool tracking_ = false;    // changes are collected (since the last visitChanges/restartChanges)
  bool overflowed_ = false;  // more than kMaxChanges: no longer collected until restarted
  IdMap<> added_;            // record keys added
  IdMap<> removed_;          // record keys removed
};

}  // namespace countersign
