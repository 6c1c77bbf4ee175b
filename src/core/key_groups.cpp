#include "countersign/key_groups.hpp"

#include <algorithm>

namespace countersign {

namespace {

std::string joinKey(std::string_view group, std::string_view rest) {
  std::string key(group);
  if (!rest.empty()) {
    key += '/';
    key += rest;
  }
  return key;
}

}  // namespace

std::pair<std::string_view, std::string_view> KeyGroups::split(std::string_view key) {
  const auto slash = key.find('/');
  if (slash == std::string_view::npos) return {key, {}};
  return {key.substr(0, slash), key.substr(slash + 1)};
}

std::uint8_t KeyGroups::bitOf(std::string_view rest) {
  if (rest.empty()) return kRecord;
  if (rest == "decision") return kDecision;
  if (rest == "released") return kReleased;
  return 0;
}

void KeyGroups::add(std::string_view group, std::string_view rest) {
  if (const std::uint8_t bit = bitOf(rest); bit != 0) {
    const auto bits = common_.get(group).value_or(0);
    if ((bits & bit) == 0) common_.set(group, static_cast<std::uint8_t>(bits | bit));
    return;
  }
  auto it = others_.find(group);
  if (it == others_.end()) it = others_.emplace(std::string(group), std::vector<std::string>{}).first;
  if (std::find(it->second.begin(), it->second.end(), rest) == it->second.end()) it->second.emplace_back(rest);
}

void KeyGroups::erase(std::string_view group, std::string_view rest) {
  if (const std::uint8_t bit = bitOf(rest); bit != 0) {
    const auto bits = common_.get(group);
    if (!bits || (*bits & bit) == 0) return;
    const auto left = static_cast<std::uint8_t>(*bits & ~bit);
    if (left == 0) {
      common_.erase(group);
    } else {
      common_.set(group, left);
    }
    return;
  }
  const auto it = others_.find(group);
  if (it == others_.end()) return;
  std::erase(it->second, rest);
  if (it->second.empty()) others_.erase(it);
}

void KeyGroups::eraseGroup(std::string_view group) {
  common_.erase(group);
  if (const auto it = others_.find(group); it != others_.end()) others_.erase(it);
}

bool KeyGroups::contains(std::string_view group, std::string_view rest) const {
  if (const std::uint8_t bit = bitOf(rest); bit != 0) return (common_.get(group).value_or(0) & bit) != 0;
  const auto it = others_.find(group);
  return it != others_.end() && std::find(it->second.begin(), it->second.end(), rest) != it->second.end();
}

std::vector<std::string> KeyGroups::keys() const {
  std::vector<std::string> out;
  out.reserve(common_.size() + others_.size());
  forEach([&](std::string_view group, std::string_view rest) { out.push_back(joinKey(group, rest)); });
  return out;
}

std::vector<std::string> KeyGroups::groupKeys(std::string_view group) const {
  std::vector<std::string> out;
  const auto whole = [&](std::string_view rest) { out.push_back(joinKey(group, rest)); };
  const auto bits = common_.get(group).value_or(0);
  if ((bits & kRecord) != 0) whole({});
  if ((bits & kDecision) != 0) whole("decision");
  if ((bits & kReleased) != 0) whole("released");
  if (const auto it = others_.find(group); it != others_.end()) {
    for (const auto& rest : it->second) whole(rest);
  }
  return out;
}

std::size_t KeyGroups::groups() const {
  std::size_t count = common_.size();
  for (const auto& [group, rests] : others_) count += common_.contains(group) ? 0 : 1;
  return count;
}

std::size_t KeyGroups::bytes() const {
  std::size_t total = common_.bytes();
  for (const auto& [group, rests] : others_) {
    total += 64 + group.capacity() + rests.capacity() * sizeof(std::string);
    for (const auto& rest : rests) total += rest.capacity();
  }
  return total;
}

void KeyGroups::clear() {
  common_.clear();
  others_.clear();
}

}  // namespace countersign
