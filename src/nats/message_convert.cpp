#include "nats/message_convert.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <string>

#include "nats/connection.hpp"

namespace countersign::natsio {
namespace {

constexpr std::string_view kHeaderLine = "NATS/1.0\r\n";

// Arrays cnats allocates for us but whose strings it keeps.
struct ArrayFree {
  void operator()(const char** array) const { std::free(static_cast<void*>(array)); }
};
using CStringArray = std::unique_ptr<const char*, ArrayFree>;

// A set of bytes looked up in one step per byte (find_first_of compares each byte with every
// member, and this runs over every header of every forwarded message).
struct ByteSet {
  std::array<bool, 256> member{};
  constexpr explicit ByteSet(std::string_view bytes) {
    for (const char c : bytes) member[static_cast<unsigned char>(c)] = true;
  }
};

using namespace std::string_view_literals;
constexpr ByteSet kLineBreaks("\r\n\0"sv);
constexpr ByteSet kSubjectBlanks(" \t\r\n\0"sv);
constexpr ByteSet kHeaderNameBad(": \t\r\n\0"sv);

bool hasAny(std::string_view text, const ByteSet& forbidden) {
  for (const char c : text) {
    if (forbidden.member[static_cast<unsigned char>(c)]) return true;
  }
  return false;
}

std::string_view trimBlanks(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

// The received header block, read from cnats' buffer: a received natsMsg keeps
// "<subject>\0[<reply>\0]<header block>\0<payload>\0" after its fields, and the block stays
// untouched until a natsMsgHeader_* call parses it in place (which writes NULs into it).
// nullopt when the message has no such block (no headers, or built locally) or the layout is
// not the expected one: then cnats' accessors are used.
std::optional<std::string_view> rawHeaderBlock(natsMsg* msg) {
  const char* subject = natsMsg_GetSubject(msg);
  const char* data = natsMsg_GetData(msg);
  if (subject == nullptr || data == nullptr) return std::nullopt;
  const char* start = subject + std::strlen(subject) + 1;
  if (const char* reply = natsMsg_GetReply(msg)) {
    if (reply != start) return std::nullopt;
    start = reply + std::strlen(reply) + 1;
  }
  if (data <= start || data[-1] != '\0') return std::nullopt;
  std::string_view block(start, static_cast<std::size_t>(data - 1 - start));
  if (!block.starts_with(kHeaderLine.substr(0, 8)) || block.find('\0') != std::string_view::npos) {
    return std::nullopt;
  }
  return block;
}

// `text` with a NUL after it: in `buffer` when it fits, else in `spill`.
const char* terminated(std::string_view text, std::array<char, 256>& buffer, std::string& spill) {
  if (text.size() < buffer.size()) {
    std::copy(text.begin(), text.end(), buffer.begin());
    buffer[text.size()] = '\0';
    return buffer.data();
  }
  spill.assign(text);
  return spill.c_str();
}

}  // namespace

Result<Headers> parseHeaderBlock(std::string_view block) {
  using namespace std::string_view_literals;
  constexpr std::string_view kPrefix = "NATS/1.0";
  constexpr std::string_view kCrlf = "\r\n";
  auto bad = [](std::string what) {
    return fail(Errc::invalid_argument, "message headers: " + std::move(what));
  };
  if (!block.starts_with(kPrefix)) return bad("header block does not start with NATS/1.0");
  std::size_t eol = block.find(kCrlf);
  if (eol == std::string_view::npos) return bad("unterminated status line");

  Headers headers;
  const std::string_view status_line = block.substr(kPrefix.size(), eol - kPrefix.size());
  if (hasAny(status_line, kLineBreaks)) return bad("bare CR, LF or NUL in the status line");
  std::string_view status = trimBlanks(status_line);
  if (!status.empty()) {
    // "503 No Responders": three digits of status, then an optional description.
    const bool digits = status.size() >= 3 && std::all_of(status.begin(), status.begin() + 3, [](char c) {
      return c >= '0' && c <= '9';
    });
    if (!digits || (status.size() > 3 && status[3] != ' ' && status[3] != '\t')) {
      return bad("status line is not three digits and an optional description");
    }
    headers.emplace_back("Status", std::string(status.substr(0, 3)));
    std::string_view description = status.size() > 3 ? trimBlanks(status.substr(3)) : ""sv;
    if (!description.empty()) headers.emplace_back("Description", std::string(description));
  }

  std::size_t pos = eol + kCrlf.size();
  bool have_previous = false;
  for (;;) {
    eol = block.find(kCrlf, pos);
    if (eol == std::string_view::npos) return bad("header block not terminated by an empty line");
    std::string_view line = block.substr(pos, eol - pos);
    pos = eol + kCrlf.size();
    if (line.empty()) {
      if (pos != block.size()) return bad("data after the empty line that ends the headers");
      return headers;
    }
    if (hasAny(line, kLineBreaks)) return bad("bare CR, LF or NUL in a header line");
    if (line.front() == ' ' || line.front() == '\t') {
      // A folded line continues the previous value.
      if (!have_previous) return bad("first header line starts with a blank");
      std::string_view more = trimBlanks(line);
      if (!more.empty()) {
        std::string& value = headers.back().second;
        if (!value.empty()) value += ' ';
        value += more;
      }
      continue;
    }
    std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) return bad("no ':' in header line");
    std::string_view name = line.substr(0, colon);
    if (name.empty()) return bad("empty header name");
    for (unsigned char c : name) {
      if (c <= 0x20 || c == 0x7f) return bad("blank or control byte in a header name");
    }
    headers.emplace_back(std::string(name), std::string(trimBlanks(line.substr(colon + 1))));
    have_previous = true;
  }
}

Status checkReceivedLayout(natsMsg* received, const Headers& expected) {
  const std::string version = nats_GetVersion() != nullptr ? nats_GetVersion() : "?";
  auto broken = [&](const std::string& what) {
    return fail(Errc::internal, "cnats " + version + ": " + what +
                                    "; countersign reads received headers from cnats' message "
                                    "buffer and cannot do so with this cnats build");
  };
  const auto block = rawHeaderBlock(received);
  if (!block) return broken("the raw header block of a received message is not where expected");
  auto headers = parseHeaderBlock(*block);
  if (!headers) return broken("the raw header block does not parse: " + headers.error().message);
  // cnats encodes different names in its own order; each name's values keep theirs.
  auto byName = [](Headers list) {
    std::stable_sort(list.begin(), list.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    return list;
  };
  if (byName(*headers) != byName(expected)) {
    return broken("the raw header block holds other headers than were sent");
  }
  return {};
}

Status checkReceivedLayout(natsConnection* connection, std::chrono::milliseconds timeout,
                           std::string_view inbox_prefix) {
  const Headers expected{{"Countersign-Check", "layout"}, {"X-Empty", ""}, {"X-Two", "1"}, {"X-Two", "2"}};
  natsInbox* raw_inbox = nullptr;
  if (natsInbox_Create(&raw_inbox) != NATS_OK) return fail(Errc::internal, "cannot create an inbox");
  std::unique_ptr<natsInbox, void (*)(natsInbox*)> inbox(raw_inbox, natsInbox_Destroy);
  // "_INBOX.<nuid>", moved under the connection's own prefix when it has one: that is where its
  // user may subscribe, and "_INBOX.>" may be bridged to other accounts.
  std::string subject = raw_inbox;
  if (!inbox_prefix.empty()) subject = std::string(inbox_prefix) + subject.substr(subject.find('.'));
  raw_inbox = subject.data();
  natsSubscription* raw_sub = nullptr;
  natsStatus s = natsConnection_SubscribeSync(&raw_sub, connection, raw_inbox);
  if (s != NATS_OK) return std::unexpected(natsError(Errc::unavailable, s, "header layout check: subscribe"));
  std::unique_ptr<natsSubscription, void (*)(natsSubscription*)> sub(raw_sub, natsSubscription_Destroy);
  auto out = toNatsMsg(OutMessage{.subject = raw_inbox, .reply = {}, .headers = &expected, .payload = "x"});
  if (!out) return std::unexpected(out.error());
  s = natsConnection_PublishMsg(connection, out->get());
  if (s == NATS_OK) s = natsConnection_Flush(connection);
  if (s != NATS_OK) return std::unexpected(natsError(Errc::unavailable, s, "header layout check: publish"));
  natsMsg* received = nullptr;
  s = natsSubscription_NextMsg(&received, raw_sub, static_cast<std::int64_t>(timeout.count()));
  if (s != NATS_OK) return std::unexpected(natsError(Errc::unavailable, s, "header layout check: receive"));
  NatsMsgPtr owned(received);
  return checkReceivedLayout(received, expected);
}

Result<Message> fromNatsMsg(natsMsg* msg) {
  Message out;
  if (const char* subject = natsMsg_GetSubject(msg)) out.subject = subject;
  if (const char* reply = natsMsg_GetReply(msg)) out.reply = reply;
  const char* data = natsMsg_GetData(msg);
  int length = natsMsg_GetDataLength(msg);
  if (data != nullptr && length > 0) out.payload.assign(data, static_cast<std::size_t>(length));

  if (auto block = rawHeaderBlock(msg)) {
    auto headers = parseHeaderBlock(*block);
    if (!headers) return std::unexpected(headers.error());
    out.headers = std::move(*headers);
    return out;
  }

  const char** raw_keys = nullptr;
  int key_count = 0;
  natsStatus s = natsMsgHeader_Keys(msg, &raw_keys, &key_count);
  CStringArray keys(raw_keys);
  if (s == NATS_NOT_FOUND) return out;  // no headers
  if (s != NATS_OK) {
    return std::unexpected(natsError(Errc::invalid_argument, s, "message headers"));
  }
  for (int k = 0; k < key_count; ++k) {
    const char** raw_values = nullptr;
    int value_count = 0;
    s = natsMsgHeader_Values(msg, keys.get()[k], &raw_values, &value_count);
    CStringArray values(raw_values);
    if (s != NATS_OK) {
      return std::unexpected(natsError(Errc::invalid_argument, s, "message headers"));
    }
    for (int v = 0; v < value_count; ++v) {
      const char* value = values.get()[v];
      out.headers.emplace_back(keys.get()[k], value != nullptr ? value : "");
    }
  }
  return out;
}

Result<OwnedNatsMsg> toNatsMsg(const OutMessage& message) {
  using namespace std::string_view_literals;
  if (auto ok = openNatsLibrary(); !ok) return std::unexpected(ok.error());
  if (message.subject.empty()) return fail(Errc::invalid_argument, "message: empty subject");
  if (hasAny(message.subject, kSubjectBlanks) || hasAny(message.reply, kSubjectBlanks)) {
    return fail(Errc::invalid_argument, "message: subject or reply with whitespace or NUL");
  }
  if (message.payload.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    return fail(Errc::too_large, "message: payload too large");
  }
  // NUL-terminated copies for cnats, on the stack when they fit (no allocation per message).
  std::array<char, 256> subject_buffer;
  std::array<char, 256> reply_buffer;
  std::string subject_long;
  std::string reply_long;
  const char* subject = terminated(message.subject, subject_buffer, subject_long);
  const char* reply = message.reply.empty() ? nullptr : terminated(message.reply, reply_buffer, reply_long);
  natsMsg* raw = nullptr;
  natsStatus s = natsMsg_Create(&raw, subject, reply, message.payload.data(), static_cast<int>(message.payload.size()));
  if (s != NATS_OK) return std::unexpected(natsError(s, "create message"));
  OwnedNatsMsg msg(raw);
  for (const Headers* list : {message.headers, message.more_headers}) {
    if (list == nullptr) continue;
    for (const auto& [header_name, header_value] : *list) {
      if (header_name.empty() || hasAny(header_name, kHeaderNameBad)) {
        return fail(Errc::invalid_argument, "message: invalid header name \"" + header_name + "\"");
      }
      if (hasAny(header_value, kLineBreaks)) {
        return fail(Errc::invalid_argument,
                    "message: header " + header_name + " has a value with CR, LF or NUL");
      }
      s = natsMsgHeader_Add(msg.get(), header_name.c_str(), header_value.c_str());
      if (s != NATS_OK) return std::unexpected(natsError(s, "message header " + header_name));
    }
  }
  return msg;
}

namespace {

using MsgFreeFunction = void (*)(void*);

MsgFreeFunction directMsgFree() {
  static const MsgFreeFunction function = []() -> MsgFreeFunction {
    // Checked on 3.4.1 (Debian bookworm): natsMsg_Destroy returns early for messages cnats
    // keeps, otherwise queues the message for the collector, which calls natsMsg_free. Other
    // versions are not assumed to do the same.
    const int version = nats_GetVersionNumber();
    if (version < 0x030400 || version >= 0x030500) return nullptr;
    void* symbol = dlsym(RTLD_DEFAULT, "natsMsg_free");
    MsgFreeFunction found = nullptr;
    static_assert(sizeof(found) == sizeof(symbol));
    std::memcpy(&found, &symbol, sizeof(found));  // POSIX: a data pointer holding a function
    return found;
  }();
  return function;
}

}  // namespace

void freeNatsMsg(natsMsg* msg) {
  if (msg == nullptr) return;
  if (const auto free_now = directMsgFree()) {
    free_now(msg);
  } else {
    natsMsg_Destroy(msg);
  }
}

bool freesNatsMsgDirectly() { return directMsgFree() != nullptr; }

std::size_t wireSize(const OutMessage& message) {
  static const Headers kNone;
  return countersign::wireSize(message.headers != nullptr ? *message.headers : kNone,
                               message.more_headers != nullptr ? *message.more_headers : kNone,
                               message.payload.size());
}

}  // namespace countersign::natsio
