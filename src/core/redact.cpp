#include "countersign/redact.hpp"

#include "countersign/json.hpp"

namespace countersign {
namespace {

rapidjson::Value* child(rapidjson::Value* node, std::string_view segment) {
  if (node->IsObject()) {
    // A Value, not a StringRef: a StringRef would convert to `const char*` and be read to its NUL.
    const rapidjson::Value key(rapidjson::StringRef(segment.data(), segment.size()));
    const auto it = node->FindMember(key);
    return it == node->MemberEnd() ? nullptr : &it->value;
  }
  if (node->IsArray() && !segment.empty() &&
      segment.find_first_not_of("0123456789") == std::string_view::npos && segment.size() < 10) {
    const auto index = static_cast<rapidjson::SizeType>(std::stoul(std::string(segment)));
    return index < node->Size() ? &(*node)[index] : nullptr;
  }
  return nullptr;
}

}  // namespace

std::string redactPayload(std::string_view payload, const std::vector<std::string>& paths) {
  if (paths.empty()) return std::string(payload);
  auto parsed = json::parseStrict(payload);
  if (!parsed) return std::string(kRedacted);
  rapidjson::Document& doc = *parsed;
  for (const auto& path : paths) {
    rapidjson::Value* node = &doc;
    std::string_view rest = path;
    while (node != nullptr && !rest.empty()) {
      const auto dot = rest.find('.');
      node = child(node, rest.substr(0, dot));
      rest = dot == std::string_view::npos ? std::string_view() : rest.substr(dot + 1);
    }
    if (node != nullptr && node != &doc) {
      node->SetString(kRedacted.data(), static_cast<rapidjson::SizeType>(kRedacted.size()),
                      doc.GetAllocator());
    }
  }
  return json::toString(doc);
}

}  // namespace countersign
