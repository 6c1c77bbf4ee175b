// Conversions between cnats messages and the core's Message / OutMessage.
#pragma once

#include <nats/nats.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string_view>

#include "countersign/message.hpp"
#include "countersign/publisher.hpp"
#include "countersign/result.hpp"

namespace countersign::natsio {

// Frees a message this process owns (one it created, or one cnats delivered to a core
// subscription callback of ours) at once, on the calling thread. natsMsg_Destroy hands every
// message to cnats' collector thread instead and wakes that thread whenever it is idle: at the
// rates of holds and approvals that is one more thread wake per message, which on a small VM
// costs about as much as the work around it (bench/README.md). cnats 3.4 exports the function
// its collector calls (natsMsg_free: the headers, then the memory); it is looked up once, only
// on cnats 3.4.x (the version checked), and natsMsg_Destroy is used on any other version or when
// the symbol is missing. Never for a message that cnats still owns (its
// auto-ack callbacks, its control messages): those go through natsMsg_Destroy.
void freeNatsMsg(natsMsg* msg);
// Whether freeNatsMsg frees on the calling thread here (false: it is natsMsg_Destroy).
bool freesNatsMsgDirectly();

// Any message: natsMsg_Destroy, which leaves alone what cnats still owns.
struct NatsMsgDeleter {
  void operator()(natsMsg* msg) const { natsMsg_Destroy(msg); }
};
using NatsMsgPtr = std::unique_ptr<natsMsg, NatsMsgDeleter>;

// Only a message that is ours (see freeNatsMsg): built by toNatsMsg, handed to a core
// subscription callback, or a JetStream get's answer.
struct OwnedNatsMsgDeleter {
  void operator()(natsMsg* msg) const { freeNatsMsg(msg); }
};
using OwnedNatsMsg = std::unique_ptr<natsMsg, OwnedNatsMsgDeleter>;

// Copies subject, reply, headers and payload bytes. Does not take ownership.
//
// Headers of a received message are parsed from the raw header block, in wire order, because
// cnats 3.4.1's own parser is wrong for empty or all-blank values: it skips the line break and
// takes the next header line as the value (or fails when it was the last one); fixed upstream
// in nats.c PR #873. Names are byte-exact; values are trimmed of surrounding spaces and tabs
// (as cnats and the Go client do); a line starting with a space or tab continues the previous
// value (joined with one space); an inline status ("NATS/1.0 503 No Responders") becomes the
// headers Status and Description, as cnats shows it. Only when the raw block cannot be located
// (messages built locally) do cnats' accessors decide; a cnats with another memory layout is
// refused at start by checkReceivedLayout.
//
// Errc::invalid_argument when the header block is malformed: a producer can send one that the
// server passes through (a line without ':', a name with blanks or control bytes, a bare CR or
// LF), and such a message has no trustworthy headers.
Result<Message> fromNatsMsg(natsMsg* msg);

// The check run at start (countersign run fails with its message): a message with known headers
// (an empty value among them) sent to a fresh inbox on `connection` and received back must have
// its raw header block where fromNatsMsg reads it, and the block must parse to those headers.
// A cnats whose received messages have another memory layout would otherwise make every job's
// headers come from cnats' own parser (wrong for empty values in 3.4.1). Errc::unavailable when
// the message does not come back in `timeout`, Errc::internal when the layout is not the one.
// `inbox_prefix`: the connection's own reply prefix (nats.inbox_prefix), where it may subscribe.
Status checkReceivedLayout(natsConnection* connection, std::chrono::milliseconds timeout,
                           std::string_view inbox_prefix = {});
// The part of that check that looks at one received message: it carries `expected`, and its
// raw header block is found and parses to exactly them.
Status checkReceivedLayout(natsMsg* received, const Headers& expected);

// The header parser used by fromNatsMsg, on a complete block ("NATS/1.0...\r\n\r\n").
Result<Headers> parseHeaderBlock(std::string_view block);

// A new natsMsg with the subject, reply, payload and every header value (natsMsgHeader_Add per
// value, in order). Errc::invalid_argument for an empty subject or header name, or for a name or
// value that cannot go on the wire (CR, LF, NUL; ':' or space in a name).
Result<OwnedNatsMsg> toNatsMsg(const OutMessage& message);

// Bytes the message takes against the server's max payload: the payload plus, when there are
// headers, the encoded header block ("NATS/1.0\r\n", "Name: value\r\n" per value, "\r\n").
std::size_t wireSize(const OutMessage& message);

}  // namespace countersign::natsio
