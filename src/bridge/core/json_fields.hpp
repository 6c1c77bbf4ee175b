// Internal: lenient reads of optional fields from JSON objects that came from outside (Slack,
// the gateway): a missing or mistyped field reads as empty.
#pragma once

#include <rapidjson/document.h>

#include <string>
#include <string_view>

namespace countersign::bridge::detail {

inline const rapidjson::Value* member(const rapidjson::Value& object, std::string_view name) {
  if (!object.IsObject()) return nullptr;
  const auto it = object.FindMember(rapidjson::StringRef(name.data(), name.size()));
  return it == object.MemberEnd() ? nullptr : &it->value;
}

// The string at object.name, or empty when absent or not a string.
inline std::string stringAt(const rapidjson::Value& object, std::string_view name) {
  const auto* value = member(object, name);
  if (value == nullptr || !value->IsString()) return {};
  return std::string(value->GetString(), value->GetStringLength());
}

}  // namespace countersign::bridge::detail
