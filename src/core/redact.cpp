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

std::string maskUrlCredentials(std::string_view urls) {
  std::string out;
  out.reserve(urls.size());
  while (true) {
    const auto comma = urls.find(',');
    const std::string_view url = urls.substr(0, comma);
    const auto scheme = url.find("://");
    const std::size_t start = scheme == std::string_view::npos ? 0 : scheme + 3;
    // The authority ends at the first '/', '?' or '#' after the scheme; its last '@' ends the
    // credentials (a password may contain '@').
    const auto end = url.find_first_of("/?#", start);
    const std::string_view authority = url.substr(start, end == std::string_view::npos ? url.npos : end - start);
    const auto at = authority.rfind('@');
    if (at == std::string_view::npos) {
      out += url;
    } else {
      const std::string_view userinfo = authority.substr(0, at);
      const auto colon = userinfo.find(':');
      out += url.substr(0, start);
      if (colon != std::string_view::npos) {
        out += userinfo.substr(0, colon);
        out += ":***";
      } else {
        out += "***";
      }
      out += url.substr(start + at);
    }
    if (comma == std::string_view::npos) break;
    out += ',';
    urls.remove_prefix(comma + 1);
  }
  return out;
}

}  // namespace countersign
