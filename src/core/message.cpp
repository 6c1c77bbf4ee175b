#include "countersign/message.hpp"

#include <algorithm>

namespace countersign {
namespace {

char asciiLower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

}  // namespace

bool startsWithIgnoreCase(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() && equalsIgnoreCase(text.substr(0, prefix.size()), prefix);
}

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return asciiLower(x) == asciiLower(y);
         });
}

const std::string* findHeader(const Headers& headers, std::string_view name) {
  for (const auto& [header_name, value] : headers) {
    if (header_name == name) return &value;
  }
  return nullptr;
}

void setHeader(Headers& headers, std::string_view name, std::string value) {
  std::erase_if(headers,
                [name](const auto& header) { return equalsIgnoreCase(header.first, name); });
  headers.emplace_back(std::string(name), std::move(value));
}

std::size_t wireSize(const Headers& headers, std::size_t payload_size) {
  return wireSize(headers, Headers{}, payload_size);
}

std::size_t wireSize(const Headers& headers, const Headers& more, std::size_t payload_size) {
  if (headers.empty() && more.empty()) return payload_size;
  std::size_t size = std::string_view("NATS/1.0\r\n").size() + 2;
  for (const Headers* list : {&headers, &more}) {
    for (const auto& [name, value] : *list) size += name.size() + 2 + value.size() + 2;
  }
  return size + payload_size;
}

}  // namespace countersign
