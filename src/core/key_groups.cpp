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

bool KeyGroups::busyRest(std::string_view rest) {
  return rest == "decision" || rest == "released" || rest.starts_with("replay/") || rest.starts_with("vote/");
}

void KeyGroups::changed(IdMap<>& into, IdMap<>& out_of, std::string_view group) {
  if (!tracking_ || overflowed_) return;
  out_of.erase(group);
  into.insert(group);
  if (added_.size() + removed_.size() > kMaxChanges) {
    overflowed_ = true;
    added_.clear();
    removed_.clear();
  }
}

void KeyGroups::counted(std::string_view group, std::uint8_t before, std::uint8_t after, bool report_removal) {
  const bool had_record = (before & kRecord) != 0;
  const bool has_record = (after & kRecord) != 0;
  const bool was_decided = had_record && (before & kDecision) != 0;
  const bool is_decided = has_record && (after & kDecision) != 0;
  records_ = records_ + (has_record ? 1 : 0) - (had_record ? 1 : 0);
  decided_records_ = decided_records_ + (is_decided ? 1 : 0) - (was_decided ? 1 : 0);
  if (has_record && !had_record) changed(added_, removed_, group);
  if (had_record && !has_record) {
    if (report_removal) {
      changed(removed_, added_, group);
    } else {
      added_.erase(group);
    }
  }
}

void KeyGroups::refreshBusy(std::string_view group) {
  bool busy = (common_.get(group).value_or(0) & (kDecision | kReleased)) != 0;
  if (const auto it = others_.find(group); !busy && it != others_.end()) {
    busy = std::any_of(it->second.begin(), it->second.end(), [](const std::string& rest) { return busyRest(rest); });
  }
  if (busy) {
    busy_.insert(group);
  } else {
    busy_.erase(group);
  }
}

void KeyGroups::add(std::string_view group, std::string_view rest) {
  if (const std::uint8_t bit = bitOf(rest); bit != 0) {
    const auto bits = common_.get(group).value_or(0);
    if ((bits & bit) != 0) return;
    const auto now = static_cast<std::uint8_t>(bits | bit);
    common_.set(group, now);
    counted(group, bits, now, false);
  } else {
    auto it = others_.find(group);
    if (it == others_.end()) it = others_.emplace(std::string(group), std::vector<std::string>{}).first;
    if (std::find(it->second.begin(), it->second.end(), rest) != it->second.end()) return;
    it->second.emplace_back(rest);
  }
  if (busyRest(rest)) busy_.insert(group);
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
    counted(group, *bits, left, true);
  } else {
    const auto it = others_.find(group);
    if (it == others_.end()) return;
    std::erase(it->second, rest);
    if (it->second.empty()) others_.erase(it);
  }
  if (busyRest(rest)) refreshBusy(group);
}

void KeyGroups::eraseGroup(std::string_view group) {
  if (const auto bits = common_.get(group)) {
    common_.erase(group);
    counted(group, *bits, 0, false);
  }
  if (const auto it = others_.find(group); it != others_.end()) others_.erase(it);
  busy_.erase(group);
}

void KeyGroups::restartChanges() {
  tracking_ = true;
  overflowed_ = false;
  added_.clear();
  removed_.clear();
}

void KeyGroups::stopChanges() {
  tracking_ = false;
  added_.clear();
  removed_.clear();
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
  visitGroup(group, [&](std::string_view, std::string_view rest) { out.push_back(joinKey(group, rest)); });
  return out;
}

std::size_t KeyGroups::groups() const {
  std::size_t count = common_.size();
  for (const auto& [group, rests] : others_) count += common_.contains(group) ? 0 : 1;
  return count;
}

std::size_t KeyGroups::bytes() const {
  std::size_t total = common_.bytes() + busy_.bytes() + added_.bytes() + removed_.bytes();
  for (const auto& [group, rests] : others_) {
    total += 64 + group.capacity() + rests.capacity() * sizeof(std::string);
    for (const auto& rest : rests) total += rest.capacity();
  }
  return total;
}

void KeyGroups::clear() {
  common_.clear();
  others_.clear();
  busy_.clear();
  records_ = 0;
  decided_records_ = 0;
  stopChanges();
}

}  // namespace countersign
