#include "countersign/approvers.hpp"

#include <algorithm>

namespace countersign {
namespace {

constexpr std::string_view kGroupPrefix = "group:";

bool contains(const std::vector<std::string>& list, std::string_view item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

}  // namespace

bool isApproverName(std::string_view name) {
  if (name.empty() || name.size() > kMaxApproverName) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '=' || c == '.';
  });
}

const Person* ApproverRegistry::person(std::string_view name) const {
  for (const auto& p : people) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

const Channel* ApproverRegistry::channel(std::string_view name) const {
  for (const auto& c : channels) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

const Person* ApproverRegistry::personWithKey(std::string_view key) const {
  for (const auto& p : people) {
    if (contains(p.keys, key)) return &p;
  }
  return nullptr;
}

const Channel* ApproverRegistry::channelWithKey(std::string_view key) const {
  for (const auto& c : channels) {
    if (contains(c.keys, key)) return &c;
  }
  return nullptr;
}

bool ApproverRegistry::covers(std::string_view entry, const Person& who) {
  if (entry == "*") return true;
  if (entry.starts_with(kGroupPrefix)) return contains(who.groups, entry.substr(kGroupPrefix.size()));
  return entry == who.name;
}

std::vector<std::string> ApproverRegistry::resolve(const std::vector<std::string>& entries) const {
  std::vector<std::string> names;
  for (const auto& p : people) {
    const bool named = std::any_of(entries.begin(), entries.end(),
                                   [&](const std::string& entry) { return covers(entry, p); });
    if (named) names.push_back(p.name);
  }
  return names;
}

}  // namespace countersign
