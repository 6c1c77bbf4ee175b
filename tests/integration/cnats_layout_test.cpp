// countersign reads a received message's headers from cnats' message buffer (cnats 3.4.1's own
// header parser is wrong for empty values). The check run at start proves the layout on a real
// round trip, and fails with a message naming cnats when the block is not where it is read.
#include <gtest/gtest.h>
#include <nats/nats.h>

#include <chrono>
#include <memory>
#include <string>

#include "integration/harness/harness.hpp"
#include "nats/message_convert.hpp"

namespace countersign::testing {
namespace {

using namespace std::chrono_literals;

TEST(CnatsLayoutTest, CheckPassesOnThisCnatsOverARealServer) {
  auto server = NatsServer::start();
  Client client(server->url());
  auto checked = natsio::checkReceivedLayout(client.raw(), 5s);
  EXPECT_TRUE(checked.has_value()) << checked.error().message;
}

// A message built here has no received layout: the check must say so, loudly, not fall back.
TEST(CnatsLayoutTest, MessageWithoutTheReceivedLayoutFailsTheCheck) {
  const Headers headers{{"X-A", "1"}};
  auto local = natsio::toNatsMsg(OutMessage{.subject = "a.b", .reply = {}, .headers = &headers, .payload = "x"});
  ASSERT_TRUE(local.has_value());
  auto checked = natsio::checkReceivedLayout(local->get(), headers);
  ASSERT_FALSE(checked.has_value());
  EXPECT_EQ(checked.error().code, Errc::internal);
  EXPECT_NE(checked.error().message.find("cnats " + std::string(nats_GetVersion())), std::string::npos)
      << checked.error().message;
  EXPECT_NE(checked.error().message.find("not where expected"), std::string::npos) << checked.error().message;
}

// A received message whose block holds other headers than the check sent fails it too.
TEST(CnatsLayoutTest, ReceivedMessageWithOtherHeadersFailsTheCheck) {
  auto server = NatsServer::start();
  Client client(server->url());
  natsSubscription* raw_sub = nullptr;
  ASSERT_EQ(natsConnection_SubscribeSync(&raw_sub, client.raw(), "layout.check"), NATS_OK);
  std::unique_ptr<natsSubscription, void (*)(natsSubscription*)> sub(raw_sub, natsSubscription_Destroy);
  client.publish("layout.check", "x", {{"X-A", "1"}, {"X-Empty", ""}});
  client.flush();
  natsMsg* received = nullptr;
  ASSERT_EQ(natsSubscription_NextMsg(&received, raw_sub, 5000), NATS_OK);
  natsio::NatsMsgPtr owned(received);
  EXPECT_TRUE(natsio::checkReceivedLayout(received, {{"X-A", "1"}, {"X-Empty", ""}}).has_value());
  auto other = natsio::checkReceivedLayout(received, {{"X-A", "2"}});
  ASSERT_FALSE(other.has_value());
  EXPECT_NE(other.error().message.find("other headers"), std::string::npos) << other.error().message;
}

}  // namespace
}  // namespace countersign::testing
