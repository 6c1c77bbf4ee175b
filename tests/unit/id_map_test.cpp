// IdMap (the compact id -> value map kept per pending approval) and KeyGroups (a bucket's keys
// by approval) against the standard containers, and what they hold per key.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "countersign/id_map.hpp"
#include "countersign/key_groups.hpp"

namespace countersign {
namespace {

struct Stamp {
  std::int64_t at = 0;
  std::uint32_t seen = 0;
  friend bool operator==(const Stamp&, const Stamp&) = default;
};

std::string idOf(std::size_t i) {
  char buffer[40];
  std::snprintf(buffer, sizeof buffer, "%032zx", i * 2654435761u);
  return buffer;
}

TEST(IdMapTest, InsertGetSetEraseAndKeysOfEveryLength) {
  IdMap<Stamp> map;
  const std::vector<std::string> keys{"", "a", std::string(63, 'b'), std::string(64, 'c'), std::string(200, 'd'),
                                      std::string(70000, 'e')};  // one larger than a chunk
  for (std::size_t i = 0; i < keys.size(); ++i) EXPECT_TRUE(map.insert(keys[i], Stamp{static_cast<std::int64_t>(i), 1}));
  EXPECT_EQ(map.size(), keys.size());
  for (std::size_t i = 0; i < keys.size(); ++i) {
    ASSERT_TRUE(map.get(keys[i])) << keys[i].size();
    EXPECT_EQ(map.get(keys[i])->at, static_cast<std::int64_t>(i));
  }
  EXPECT_FALSE(map.insert("a", Stamp{99, 9})) << "insert keeps what is there";
  EXPECT_EQ(map.get("a")->at, 1);
  EXPECT_FALSE(map.set("a", Stamp{99, 9})) << "set overwrites";
  EXPECT_EQ(map.get("a")->at, 99);
  EXPECT_TRUE(map.modify(std::string(200, 'd'), [](Stamp& s) { s.seen = 7; }));
  EXPECT_EQ(map.get(std::string(200, 'd'))->seen, 7u);
  EXPECT_FALSE(map.modify("absent", [](Stamp&) { FAIL(); }));
  EXPECT_TRUE(map.erase(std::string(70000, 'e')));
  EXPECT_FALSE(map.erase(std::string(70000, 'e')));
  EXPECT_FALSE(map.contains(std::string(70000, 'e')));
  EXPECT_FALSE(map.contains("b"));
  EXPECT_FALSE(map.contains(std::string(63, 'c')));
  std::vector<std::string> seen;
  map.forEach([&](std::string_view key, const Stamp&) { seen.emplace_back(key); });
  EXPECT_EQ(seen, std::vector<std::string>(keys.begin(), keys.end() - 1)) << "insertion order, live keys only";
}

// Random inserts, overwrites and erases (with the buffer compacted on the way) agree with
// std::unordered_map at every step.
TEST(IdMapTest, AgreesWithUnorderedMapUnderRandomOperations) {
  IdMap<Stamp> map;
  std::unordered_map<std::string, Stamp> expected;
  std::mt19937 random(7);
  for (int step = 0; step < 200000; ++step) {
    const std::string key = idOf(random() % 5000).substr(0, 1 + random() % 32);
    const Stamp value{static_cast<std::int64_t>(random()), static_cast<std::uint32_t>(step)};
    switch (random() % 4) {
      case 0:
        EXPECT_EQ(map.insert(key, value), expected.try_emplace(key, value).second);
        break;
      case 1:
        EXPECT_EQ(map.set(key, value), !expected.contains(key));
        expected[key] = value;
        break;
      default:
        EXPECT_EQ(map.erase(key), expected.erase(key) == 1);
    }
    ASSERT_EQ(map.size(), expected.size());
    if (step % 20000 == 0) {
      map.keepIf([&](std::string_view k, Stamp& s) {
        if (s.seen % 3 == 0) {
          expected.erase(std::string(k));
          return false;
        }
        s.at = -s.at;
        expected[std::string(k)].at = s.at;
        return true;
      });
    }
  }
  std::size_t visited = 0;
  map.forEach([&](std::string_view key, const Stamp& value) {
    ++visited;
    const auto it = expected.find(std::string(key));
    ASSERT_NE(it, expected.end()) << key;
    EXPECT_EQ(it->second, value);
  });
  EXPECT_EQ(visited, expected.size());
}

// A pending approval's deadline: a 32-character id and 12 bytes cost about 60 bytes, not the
// 120-170 of a std::unordered_map node with its string; memory goes once the keys go.
TEST(IdMapTest, HoldsAKeyAndItsValueInAboutTheirOwnSizeAndLetsGoOfErasedOnes) {
#pragma pack(push, 4)
  struct Packed {
    std::int64_t at;
    std::uint32_t seen;
  };
#pragma pack(pop)
  static_assert(sizeof(Packed) == 12);
  IdMap<Packed> map;
  constexpr std::size_t kCount = 200000;
  for (std::size_t i = 0; i < kCount; ++i) map.insert(idOf(i), Packed{1, 1});
  const double per_key = static_cast<double>(map.bytes()) / kCount;
  EXPECT_LT(per_key, 64) << per_key;
  EXPECT_GT(per_key, 32 + 12) << per_key;
  map.keepIf([](std::string_view key, Packed&) { return key.back() == '0'; });  // about 1 in 16 stays
  EXPECT_LT(map.bytes(), kCount * 64 / 8) << "the buffer and the table shrink with the keys";
  std::size_t left = 0;
  for (std::size_t i = 0; i < kCount; ++i) left += map.contains(idOf(i)) ? 1 : 0;
  EXPECT_EQ(left, map.size());
  for (std::size_t i = 0; i < kCount; ++i) map.erase(idOf(i));
  EXPECT_TRUE(map.empty());
  EXPECT_EQ(map.bytes(), 0u);
}

TEST(IdMapTest, AMovedFromMapIsEmptyAndUsable) {
  IdMap<> set;
  set.insert("x");
  set.insert("y");
  IdMap<> taken = std::move(set);
  EXPECT_EQ(taken.size(), 2u);
  EXPECT_TRUE(taken.contains("y"));
  EXPECT_EQ(set.size(), 0u);  // NOLINT(bugprone-use-after-move): what a move leaves is the point
  EXPECT_FALSE(set.contains("x"));
  set.insert("z");
  EXPECT_TRUE(set.contains("z"));
}

TEST(KeyGroupsTest, KeepsEveryKeyOfAGroupAndForgetsTheGroupWhole) {
  KeyGroups groups;
  const std::vector<std::string> keys{"a", "a/decision", "a/released", "a/replay/1", "a/vote/alice", "b", "c/vote/bob"};
  for (const auto& key : keys) {
    const auto [group, rest] = KeyGroups::split(key);
    groups.add(group, rest);
    groups.add(group, rest);  // twice: still one key
  }
  auto listed = groups.keys();
  std::sort(listed.begin(), listed.end());
  EXPECT_EQ(listed, keys);
  EXPECT_EQ(groups.groups(), 3u);
  EXPECT_TRUE(groups.contains("a", "replay/1"));
  EXPECT_TRUE(groups.contains("a", "decision"));
  EXPECT_FALSE(groups.contains("b", "decision"));
  groups.erase("a", "decision");
  groups.erase("a", "vote/alice");
  groups.erase("b", "");
  listed = groups.keys();
  std::sort(listed.begin(), listed.end());
  EXPECT_EQ(listed, (std::vector<std::string>{"a", "a/released", "a/replay/1", "c/vote/bob"}));
  groups.eraseGroup("a");
  EXPECT_EQ(groups.keys(), std::vector<std::string>{"c/vote/bob"});
  std::vector<std::pair<std::string, std::string>> visited;
  groups.forEach([&](std::string_view group, std::string_view rest) { visited.emplace_back(group, rest); });
  EXPECT_EQ(visited, (std::vector<std::pair<std::string, std::string>>{{"c", "vote/bob"}}));
}

TEST(KeyGroupsTest, GroupKeysAreTheKeysOfThatGroupOnly) {
  KeyGroups groups;
  for (const std::string_view key : {"a", "a/decision", "a/vote/1/alice", "a/vote/2/bob", "a/replay/1", "ab",
                                     "ab/vote/1/carol", "b/vote/1/dave"}) {
    const auto [group, rest] = KeyGroups::split(key);
    groups.add(group, rest);
  }
  auto a = groups.groupKeys("a");
  std::sort(a.begin(), a.end());
  EXPECT_EQ(a, (std::vector<std::string>{"a", "a/decision", "a/replay/1", "a/vote/1/alice", "a/vote/2/bob"}));
  EXPECT_EQ(groups.groupKeys("b"), std::vector<std::string>{"b/vote/1/dave"});  // other keys only, no record
  EXPECT_TRUE(groups.groupKeys("c").empty());
  EXPECT_TRUE(groups.groupKeys("").empty());
  groups.erase("a", "vote/1/alice");
  groups.erase("a", "");
  a = groups.groupKeys("a");
  std::sort(a.begin(), a.end());
  EXPECT_EQ(a, (std::vector<std::string>{"a/decision", "a/replay/1", "a/vote/2/bob"}));
  groups.eraseGroup("a");
  EXPECT_TRUE(groups.groupKeys("a").empty());
  EXPECT_EQ(groups.groupKeys("ab").size(), 2u);
}

// What an incremental scan is given: the busy groups' keys, the records added and removed since
// the last call, and the counts of records and decided records.
TEST(KeyGroupsTest, ChangesAreTheBusyGroupsAndTheRecordsThatCameAndWent) {
  KeyGroups groups;
  auto add = [&](std::string_view key) {
    const auto [group, rest] = KeyGroups::split(key);
    groups.add(group, rest);
  };
  auto erase = [&](std::string_view key) {
    const auto [group, rest] = KeyGroups::split(key);
    groups.erase(group, rest);
  };
  struct Seen {
    bool known = false;
    std::vector<std::string> keys;
    std::vector<std::string> removed;
  };
  auto changes = [&] {
    Seen seen;
    seen.known = groups.visitChanges(
        [&](std::string_view group, std::string_view rest) {
          seen.keys.push_back(std::string(group) + (rest.empty() ? "" : "/" + std::string(rest)));
        },
        [&](std::string_view group) { seen.removed.emplace_back(group); });
    std::sort(seen.keys.begin(), seen.keys.end());
    std::sort(seen.removed.begin(), seen.removed.end());
    return seen;
  };
  for (const std::string_view key : {"a", "b", "b/decision", "c", "c/slack/1", "c/escalated/0/0", "d",
                                     "d/vote/0/alice", "e/replay/1", "f", "f/released"}) {
    add(key);
  }
  EXPECT_EQ(groups.records(), 5u);
  EXPECT_EQ(groups.decidedRecords(), 1u);
  EXPECT_EQ(groups.busyGroups(), 4u);  // b, d, e, f: not c (Slack and escalation keys)
  EXPECT_FALSE(changes().known) << "the first call: changes not collected before it";
  const std::vector<std::string> busy{"b", "b/decision", "d", "d/vote/0/alice", "e/replay/1", "f", "f/released"};
  auto seen = changes();
  EXPECT_TRUE(seen.known);
  EXPECT_EQ(seen.keys, busy);
  EXPECT_TRUE(seen.removed.empty());
  // A record comes, one goes, one comes and goes, one goes and comes back; a decision.
  add("g");
  erase("a");
  add("h");
  erase("h");
  erase("c");
  add("c");
  add("c/decision");
  seen = changes();
  EXPECT_EQ(seen.keys, (std::vector<std::string>{"b", "b/decision", "c", "c/decision", "c/escalated/0/0", "c/slack/1",
                                                 "d", "d/vote/0/alice", "e/replay/1", "f", "f/released", "g"}));
  EXPECT_EQ(seen.removed, (std::vector<std::string>{"a", "h"}));
  EXPECT_EQ(groups.records(), 5u);  // b c d f g
  EXPECT_EQ(groups.decidedRecords(), 2u);
  // A group leaves the busy ones with its last busy key; a retired group is no removal.
  erase("d/vote/0/alice");
  groups.eraseGroup("b");
  add("i");
  groups.eraseGroup("i");
  seen = changes();
  EXPECT_EQ(seen.keys, (std::vector<std::string>{"c", "c/decision", "c/escalated/0/0", "c/slack/1", "e/replay/1", "f",
                                                 "f/released"}));
  EXPECT_TRUE(seen.removed.empty());
  EXPECT_EQ(groups.records(), 4u);  // c d f g
  EXPECT_EQ(groups.decidedRecords(), 1u);
  erase("c/decision");
  EXPECT_EQ(groups.decidedRecords(), 0u);
  // Not known after stopChanges() (the owner missed writes), nor after too many changes.
  groups.stopChanges();
  EXPECT_FALSE(changes().known);
  EXPECT_TRUE(changes().known);
  for (std::size_t i = 0; i <= KeyGroups::kMaxChanges; ++i) add("n-" + std::to_string(i));
  EXPECT_FALSE(changes().known);
  seen = changes();
  EXPECT_TRUE(seen.known);
  EXPECT_EQ(seen.keys, (std::vector<std::string>{"e/replay/1", "f", "f/released"}));
  groups.clear();
  EXPECT_EQ(groups.records(), 0u);
  EXPECT_EQ(groups.busyGroups(), 0u);
  EXPECT_FALSE(changes().known);
}

TEST(KeyGroupsTest, APendingApprovalCostsAboutItsIdsSize) {
  KeyGroups groups;
  constexpr std::size_t kCount = 200000;
  for (std::size_t i = 0; i < kCount; ++i) groups.add(idOf(i), "");
  const double per_record = static_cast<double>(groups.bytes()) / kCount;
  EXPECT_LT(per_record, 52) << per_record;  // 32 bytes of id, 2 of header and bits, the table
  for (std::size_t i = 0; i < kCount; ++i) groups.eraseGroup(idOf(i));
  EXPECT_EQ(groups.groups(), 0u);
  EXPECT_EQ(groups.bytes(), 0u);
}

}  // namespace
}  // namespace countersign
