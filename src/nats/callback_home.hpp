// State that a C library's callbacks use after the object that started them may be gone (a
// connection's closed callback, a subscription's completion, a late PubAck). The owner and the
// library each hold a reference; the state goes with the last one. The one mechanism for every
// cnats callback in countersign: no "orphaned" flags, no state freed under a running callback.
#pragma once

#include <memory>

namespace countersign::natsio {

template <class State>
struct CallbackHome {
  // The closure to give the library: a reference of its own to `state`.
  static void* share(const std::shared_ptr<State>& state) { return new std::shared_ptr<State>(state); }
  // The state behind a closure, in a callback.
  static State& of(void* closure) { return **static_cast<std::shared_ptr<State>*>(closure); }
  // The library will not call with this closure again (its last callback ran, or it never took
  // the closure): drops its reference. Call it last in that callback: the state may go with it.
  static void release(void* closure) { delete static_cast<std::shared_ptr<State>*>(closure); }
};

}  // namespace countersign::natsio
