// The keys of a KV bucket of approvals, by group (the part of a key before its first '/'): an
// approval's record is the key `<id>`, its decision `<id>/decision`, its release
// `<id>/released`; claims, votes and escalations are further `<id>/...` keys. Kept for the scans
// of a large bucket, so memory per key matters: a group's record, decision and release keys are
// bits beside its id in an IdMap (about 40 bytes for a pending approval with a 32-character id),
// its other keys (few: an approval being decided or released) in a map of their own.
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
  std::vector<std::string> keys() const;
  // The keys of one group (`group` and every `group/...`), whole.
  std::vector<std::string> groupKeys(std::string_view group) const;
  std::size_t groups() const;  // groups with at least one key
  std::size_t bytes() const;   // memory held, roughly (the other keys' nodes counted by their strings)
  void clear();

 private:
  static constexpr std::uint8_t kRecord = 1, kDecision = 2, kReleased = 4;
  static std::uint8_t bitOf(std::string_view rest);

  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view key) const { return std::hash<std::string_view>{}(key); }
  };
  IdMap<std::uint8_t> common_;  // group -> its record, decision and release keys (bits)
  std::unordered_map<std::string, std::vector<std::string>, Hash, std::equal_to<>> others_;
};

}  // namespace countersign
