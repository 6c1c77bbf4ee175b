// Fuzz target for the Slack interactivity decoder (form body, block_actions and view_submission
// JSON): any input gives a click or a clean error, never a crash; a decoded click always names a
// job with its hash and snapshot, its button value encodes and decodes to itself, only a dialog's
// submission carries a reason, of at most kMaxReasonChars characters, and only the Approve with
// note button asks for the note dialog.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "bridge/core/interaction.hpp"

namespace {

namespace bridge = countersign::bridge;

void check(bool condition) {
  if (!condition) std::abort();
}

void checkClick(const countersign::Result<bridge::Click>& click) {
  if (!click) {
    check(!click.error().message.empty());
    return;
  }
  check(!click->user_id.empty());
  check(!click->value.id.empty() && !click->value.job_hash.empty() && !click->value.policy_snapshot.empty());
  auto again = bridge::decodeButtonValue(bridge::encodeButtonValue(click->value));
  check(again.has_value() && again->id == click->value.id && again->job_hash == click->value.job_hash &&
        again->policy_snapshot == click->value.policy_snapshot);
  check(click->from_dialog || click->reason.empty());
  // "Approve with note…" asks for its dialog and is an approve; a submission is never that ask.
  check(!click->with_note || (click->action == bridge::ClickAction::approve && !click->from_dialog));
  check(click->reason.size() <= 4 * bridge::kMaxReasonChars);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  checkClick(bridge::decodeInteractionForm(text));
  checkClick(bridge::decodeInteractionPayload(text));
  (void)bridge::formField(text, "payload");
  return 0;
}
