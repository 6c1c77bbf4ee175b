#include "nats/audit_stream.hpp"

#include "countersign/subject.hpp"

namespace countersign::natsio {

Status ensureAuditStream(Connection& connection, const AuditConfig& audit, const std::string& prefix) {
  const std::string subject = prefix + ".events.>";
  jsStreamInfo* info = nullptr;
  jsErrCode code = static_cast<jsErrCode>(0);
  natsStatus status = js_GetStreamInfo(&info, connection.js(), audit.stream.c_str(), nullptr, &code);
  if (status == NATS_OK) {
    bool covered = false;
    for (int i = 0; info->Config != nullptr && i < info->Config->SubjectsLen; ++i) {
      covered = covered || subject::matches(info->Config->Subjects[i], prefix + ".events.held.x");
    }
    jsStreamInfo_Destroy(info);
    if (!covered) {
      return fail(Errc::invalid_argument, "audit stream " + audit.stream + " exists but does not capture " + subject);
    }
    return {};
  }
  if (status != NATS_NOT_FOUND) return std::unexpected(natsError(status, "audit stream " + audit.stream));

  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = audit.stream.c_str();
  const char* subjects[] = {subject.c_str()};
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Storage = js_FileStorage;
  cfg.Replicas = audit.replicas;
  cfg.MaxAge = static_cast<int64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(audit.max_age).count());
  cfg.Duplicates = static_cast<int64_t>(std::chrono::nanoseconds(std::chrono::minutes(2)).count());
  cfg.DenyDelete = true;
  cfg.DenyPurge = true;
  status = js_AddStream(&info, connection.js(), &cfg, nullptr, &code);
  if (status != NATS_OK) {
    // Another replica may have created it at the same moment.
    jsStreamInfo* again = nullptr;
    if (js_GetStreamInfo(&again, connection.js(), audit.stream.c_str(), nullptr, &code) == NATS_OK) {
      jsStreamInfo_Destroy(again);
      return {};
    }
    return std::unexpected(natsError(status, "cannot create audit stream " + audit.stream));
  }
  jsStreamInfo_Destroy(info);
  return {};
}

}  // namespace countersign::natsio
