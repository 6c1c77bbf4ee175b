// The audit trail's stream: JetStream over <prefix>.events.>, created at start when missing.
#pragma once

#include <string>

#include "countersign/config.hpp"
#include "countersign/result.hpp"
#include "nats/connection.hpp"

namespace countersign::natsio {

// Creates the stream (file storage, deny delete and purge, 2-minute duplicate window) or checks
// that the existing one captures `<prefix>.events.>`. Never edits an existing stream.
Status ensureAuditStream(Connection& connection, const AuditConfig& audit, const std::string& prefix);

}  // namespace countersign::natsio
