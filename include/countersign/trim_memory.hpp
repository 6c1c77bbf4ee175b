#pragma once

#include <malloc.h>

#include <atomic>
#include <cstdint>

namespace countersign {

// How often trimMemory() was called in this process (tests: a path that frees a large structure
// hands the memory back).
inline std::atomic<std::uint64_t>& trimMemoryCalls() {
  static std::atomic<std::uint64_t> calls{0};
  return calls;
}

// Hands memory that large, short-lived structures freed back to the system (glibc's
// malloc_trim), so that the process's size follows what it holds. What is freed stays with
// the allocator until then, in the middle of its arenas (one per thread that allocated it), also
// long after: call it after the last large free, not before. Nothing under AddressSanitizer or
// ThreadSanitizer: their allocators own the heap, and glibc's trim then walks arenas it never
// set up (it crashed there under ASan).
inline void trimMemory() {
  trimMemoryCalls().fetch_add(1, std::memory_order_relaxed);
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
  return;
#else
  malloc_trim(0);
#endif
#else
  malloc_trim(0);
#endif
}

}  // namespace countersign
