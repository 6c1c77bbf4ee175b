// Fuzz target for the Slack interactivity decoder (form body and block_actions JSON): any input
// gives a click or a clean error, never a crash; a decoded click always names the job of its
// block, and its button value encodes and decodes to itself.
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
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  checkClick(bridge::decodeInteractionForm(text));
  checkClick(bridge::decodeInteractionPayload(text));
  (void)bridge::formField(text, "payload");
  return 0;
}
