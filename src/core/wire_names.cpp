#include "countersign/wire_names.hpp"

namespace countersign {

std::string_view wireName(Outcome outcome) {
  switch (outcome) {
    case Outcome::ok: return "ok";
    case Outcome::allowed: return "allowed";
    case Outcome::denied: return "denied";
    case Outcome::throttled: return "throttled";
    case Outcome::approval_required: return "approval_required";
    case Outcome::queued: return "queued";
    case Outcome::conflict: return "conflict";
    case Outcome::too_large: return "too_large";
    case Outcome::unavailable: return "unavailable";
    case Outcome::unroutable: return "unroutable";
    case Outcome::bad_request: return "bad_request";
    case Outcome::malformed: return "malformed";
    case Outcome::not_found: return "not_found";
    case Outcome::expired: return "expired";
    case Outcome::released: return "released";
    case Outcome::already_released: return "already_released";
    case Outcome::approved: return "approved";
    case Outcome::already_approved: return "already_approved";
    case Outcome::rejected: return "rejected";
    case Outcome::already_rejected: return "already_rejected";
    case Outcome::vote_recorded: return "vote_recorded";
    case Outcome::already_voted: return "already_voted";
    case Outcome::unauthenticated: return "unauthenticated";
    case Outcome::forbidden: return "forbidden";
  }
  return "unavailable";
}

std::string_view wireName(EventKind kind) {
  switch (kind) {
    case EventKind::allowed: return "allowed";
    case EventKind::denied: return "denied";
    case EventKind::throttled: return "throttled";
    case EventKind::held: return "held";
    case EventKind::approved: return "approved";
    case EventKind::rejected: return "rejected";
    case EventKind::vote: return "vote";
    case EventKind::escalated: return "escalated";
    case EventKind::expired: return "expired";
    case EventKind::released: return "released";
    case EventKind::replayed: return "replayed";
    case EventKind::conflict: return "conflict";
    case EventKind::release_unknown: return "release_unknown";
    case EventKind::release_refused: return "release_refused";
  }
  return "conflict";
}

}  // namespace countersign
