// A NATS message as the core sees it: no cnats types.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace countersign {

// Header name/value pairs. Values of one name keep their wire order; the order between
// different names carries no meaning (NATS headers are a multimap).
using Headers = std::vector<std::pair<std::string, std::string>>;

struct Message {
  std::string subject;
  std::string reply;  // empty when the sender expects no answer
  Headers headers;
  std::string payload;
};

// The bytes NATS counts against max_payload for a message: the header block ("NATS/1.0\r\n",
// one "Name: value\r\n" per value, a closing "\r\n"; none without headers) plus the payload.
std::size_t wireSize(const Headers& headers, std::size_t payload_size);
// The same for a message that carries `more` after `headers` (one header block).
std::size_t wireSize(const Headers& headers, const Headers& more, std::size_t payload_size);

// ASCII case-insensitive prefix test used for the untrusted-header rules.
bool startsWithIgnoreCase(std::string_view text, std::string_view prefix);
bool equalsIgnoreCase(std::string_view a, std::string_view b);

// First value of the header with this byte-exact name, or nullptr.
const std::string* findHeader(const Headers& headers, std::string_view name);

// Replaces every header with this name (byte-exact, any case of it: ASCII case-insensitive)
// by one value.
void setHeader(Headers& headers, std::string_view name, std::string value);

}  // namespace countersign
