// Internal: reads the `slack:` and `notify:` sections (include/countersign/bridge_config.hpp)
// for the configuration loader, with the same path-aware errors as the rest of the file.
#pragma once

#include <string>
#include <string_view>

#include "countersign/bridge_config.hpp"
#include "yaml_reader.hpp"

namespace countersign {

using ProblemCheck = std::string (*)(std::string_view);

// `listen_problem` checks a host:port the way admin.listen is checked.
void readSlackSection(const yaml::Value& value, SlackConfig& slack, const std::string& base_dir,
                      ProblemCheck listen_problem);
void readNotifySection(const yaml::Value& value, NotifyConfig& notify);

}  // namespace countersign
