// The words clients read: every reply status and event kind, byte for byte as docs/protocol.md
// lists them. A renamed enum value must not change what goes on the wire.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "countersign/wire_names.hpp"

namespace countersign {
namespace {

TEST(WireNamesTest, EveryStatusHasItsDocumentedWord) {
  const std::vector<std::pair<Outcome, std::string>> expected{
      {Outcome::ok, "ok"},
      {Outcome::allowed, "allowed"},
      {Outcome::denied, "denied"},
      {Outcome::throttled, "throttled"},
      {Outcome::approval_required, "approval_required"},
      {Outcome::queued, "queued"},
      {Outcome::conflict, "conflict"},
      {Outcome::too_large, "too_large"},
      {Outcome::unavailable, "unavailable"},
      {Outcome::unroutable, "unroutable"},
      {Outcome::bad_request, "bad_request"},
      {Outcome::malformed, "malformed"},
      {Outcome::not_found, "not_found"},
      {Outcome::expired, "expired"},
      {Outcome::released, "released"},
      {Outcome::already_released, "already_released"},
      {Outcome::approved, "approved"},
      {Outcome::already_approved, "already_approved"},
      {Outcome::rejected, "rejected"},
      {Outcome::already_rejected, "already_rejected"},
      {Outcome::vote_recorded, "vote_recorded"},
      {Outcome::already_voted, "already_voted"},
      {Outcome::unauthenticated, "unauthenticated"},
      {Outcome::forbidden, "forbidden"},
  };
  std::set<std::string> seen;
  for (const auto& [outcome, word] : expected) {
    EXPECT_EQ(wireName(outcome), word);
    EXPECT_TRUE(seen.insert(word).second) << word << " twice";
  }
  EXPECT_EQ(expected.size(), static_cast<std::size_t>(Outcome::forbidden) + 1) << "a status without a test row";
}

TEST(WireNamesTest, EveryEventKindHasItsDocumentedWord) {
  const std::vector<std::pair<EventKind, std::string>> expected{
      {EventKind::allowed, "allowed"},   {EventKind::denied, "denied"},
      {EventKind::throttled, "throttled"}, {EventKind::held, "held"},
      {EventKind::approved, "approved"}, {EventKind::rejected, "rejected"},
      {EventKind::vote, "vote"},         {EventKind::escalated, "escalated"},
      {EventKind::expired, "expired"},   {EventKind::released, "released"},
      {EventKind::replayed, "replayed"}, {EventKind::conflict, "conflict"},
      {EventKind::release_unknown, "release_unknown"}, {EventKind::release_refused, "release_refused"},
  };
  for (const auto& [kind, word] : expected) EXPECT_EQ(wireName(kind), word);
  EXPECT_EQ(expected.size(), static_cast<std::size_t>(EventKind::release_refused) + 1)
      << "an event kind without a test row";
}

}  // namespace
}  // namespace countersign
