#pragma once

#include <malloc.h>

namespace countersign {

// Hands memory that large, short-lived structures freed back to the system (glibc's
// malloc_trim), so that the process's size follows what it holds. Nothing under AddressSanitizer
// or ThreadSanitizer: their allocators own the heap, and glibc's trim then walks arenas it never
// set up (it crashed there under ASan).
inline void trimMemory() {
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
