// How the CLI prints: aligned tables, a suggestion for a mistyped word, and the next step after
// a refusal.
#pragma once

#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace countersign::cli {

// Columns as wide as their widest cell (header included), two spaces apart; the last column is
// not padded. Long values widen their column instead of pushing the next ones out of line.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void row(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }
  void print(std::ostream& out) const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

// The closest of `names` to `word` (edit distance at most 2, or `word` a prefix of exactly one
// name), or "" when none is close.
std::string closestName(std::string_view word, const std::vector<std::string>& names);

// What to do after a refusal from countersign (status and reason of its answer), in words; ""
// when there is nothing to add.
std::string nextStep(std::string_view status, std::string_view reason, std::string_view id);

}  // namespace countersign::cli
