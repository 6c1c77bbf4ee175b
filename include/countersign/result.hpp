// Errors as values: every fallible function in the core returns Result<T> (std::expected).
#pragma once

#include <expected>
#include <string>
#include <string_view>
#include <utility>

namespace countersign {

enum class Errc {
  invalid_argument,  // bad input from outside (config, policy, request, payload)
  parse_error,       // malformed JSON / YAML
  not_found,         // no such key / record
  exists,            // create-only write found the key already there
  wrong_revision,    // compare-and-swap lost: the key moved on
  too_large,         // message or record exceeds the server's max payload
  timeout,           // the environment did not answer in time
  unavailable,       // the environment is not reachable (NATS down, stream missing)
  io,                // file system
  internal,          // broken invariant reached at runtime
};

std::string_view toString(Errc code);

struct Error {
  Errc code = Errc::internal;
  std::string message;
};

template <class T>
using Result = std::expected<T, Error>;
using Status = std::expected<void, Error>;

inline std::unexpected<Error> fail(Errc code, std::string message) {
  return std::unexpected(Error{code, std::move(message)});
}

}  // namespace countersign
