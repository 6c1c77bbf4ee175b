# Writes a C++ source with the console's static files as byte arrays (run at build time with
# cmake -P; no network, no tools beyond CMake). Inputs: OUT (the .cpp to write), DIR (the
# directory of the files), FILES (their names, ','-separated).
string(REPLACE "," ";" FILES "${FILES}")
set(body "// Generated from src/http/ui by embed.cmake: do not edit.\n#include \"http/ui_assets.hpp\"\n\nnamespace countersign::http {\nnamespace {\n")
set(table "")
set(index 0)
foreach(name ${FILES})
  file(READ "${DIR}/${name}" hex HEX)
  string(LENGTH "${hex}" hex_length)
  math(EXPR size "${hex_length} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," bytes "${hex}")
  string(APPEND body "const char kFile${index}[] = {${bytes} 0};\n")
  string(APPEND table "    {\"${name}\", std::string_view(kFile${index}, ${size})},\n")
  math(EXPR index "${index} + 1")
endforeach()
string(APPEND body "}  // namespace\n\nstd::span<const UiFile> uiFiles() {\n  static const UiFile files[] = {\n${table}  };\n  return files;\n}\n\n}  // namespace countersign::http\n")
file(WRITE "${OUT}.tmp" "${body}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
