// The approver registry (`approvers:` in the config): the people who may decide held jobs, the
// nkey public keys that prove who they are, and the channels (programs such as a chat bridge or
// a web backend) that act for them. Immutable once loaded; read from any thread.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace countersign {

struct Person {
  std::string name;                 // appears in records, events and release headers
  std::vector<std::string> groups;  // referenced by policies as group:<name>
  std::vector<std::string> keys;    // nkey user public keys ("U..."), each unique in the registry
  std::string slack;                // Slack user id (for the Slack bridge)
  std::string email;
};

struct Channel {
  std::string name;
  std::vector<std::string> keys;
  // Whom the channel may act for: person names, group:<g>, or "*" (everyone in `people`).
  std::vector<std::string> may_act_for;
};

struct ApproverRegistry {
  // true: approve/reject on the control subjects must carry a valid signature.
  bool require_signature = false;
  std::vector<Person> people;
  std::vector<Channel> channels;

  const Person* person(std::string_view name) const;
  const Channel* channel(std::string_view name) const;
  // The person or channel one of whose keys is `key` (at most one of them; config validation
  // refuses a key listed twice).
  const Person* personWithKey(std::string_view key) const;
  const Channel* channelWithKey(std::string_view key) const;
  // True when `who` matches `entry`: the same name, group:<g> with `who` in g, or "*".
  static bool covers(std::string_view entry, const Person& who);
  // The names a list of entries (names, group:<g>, "*") stands for, in registry order.
  std::vector<std::string> resolve(const std::vector<std::string>& entries) const;
};

// Names of people, channels and groups: the approval-id characters, at most 64 (they become
// parts of KV keys such as <id>/vote/<binding>/<name>).
bool isApproverName(std::string_view name);
inline constexpr std::size_t kMaxApproverName = 64;

}  // namespace countersign
