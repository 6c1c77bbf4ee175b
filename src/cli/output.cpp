#include "output.hpp"

#include <algorithm>

namespace countersign::cli {

void Table::print(std::ostream& out) const {
  std::vector<std::size_t> width;
  for (const auto& row : rows_) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : rows_) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      const std::string& cell = row[i].empty() ? std::string("-") : row[i];
      line += cell;
      if (i + 1 < row.size()) line.append(width[i] - cell.size() + 2, ' ');
    }
    out << line << '\n';
  }
}

namespace {

std::size_t editDistance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> previous(b.size() + 1);
  std::vector<std::size_t> current(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) previous[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    current[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t substitute = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      current[j] = std::min({previous[j] + 1, current[j - 1] + 1, substitute});
    }
    std::swap(previous, current);
  }
  return previous[b.size()];
}

}  // namespace

std::string closestName(std::string_view word, const std::vector<std::string>& names) {
  std::string best;
  std::size_t best_distance = 3;
  std::size_t prefixed = 0;
  std::string prefix_match;
  for (const auto& name : names) {
    const std::size_t d = editDistance(word, name);
    if (d < best_distance) {
      best_distance = d;
      best = name;
    }
    if (!word.empty() && name.starts_with(word)) {
      ++prefixed;
      prefix_match = name;
    }
  }
  if (best.empty() && prefixed == 1) return prefix_match;
  return best;
}

std::string nextStep(std::string_view status, std::string_view reason, std::string_view id) {
  const std::string show = "countersign show " + std::string(id);
  if (reason == "snapshot_changed") {
    return "the policy changed since this job was held, so this approval was not applied. The job "
           "is now bound to the policy in force (or rejected, if that policy denies it) and waits "
           "for a new review: look at it again with `" + show + "`, then approve or reject it again.";
  }
  if (reason == "job_changed") {
    return "the job is not the one that was reviewed (its hash differs): do not approve it; "
           "compare with `" + show + "`.";
  }
  if (reason == "already_rejected" || reason == "already_approved") {
    return "it was decided before; `" + show + "` says by whom and when.";
  }
  if (reason == "lock_busy") return "another decision on this job is being written: try again.";
  if (status == "not_found") return "no approval with this id; `countersign pending --state all` lists them.";
  if (status == "expired") return "it passed its deadline and was not released.";
  if (status == "unavailable") return "countersign cannot reach its store right now: try again.";
  return {};
}

}  // namespace countersign::cli
