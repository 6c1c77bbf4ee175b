// The reviewer console's static files (src/http/ui/), compiled into the binary at build time.
#pragma once

#include <span>
#include <string_view>

namespace countersign::http {

struct UiFile {
  std::string_view name;  // "index.html", "app.js", ...
  std::string_view bytes;
};

// Every embedded file (defined in the generated ui_assets.cpp).
std::span<const UiFile> uiFiles();

}  // namespace countersign::http
