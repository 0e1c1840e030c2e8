#include "kernel/manager/node_api_client.h"

#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/HTTPSClientSession.h>
#include <Poco/Net/SecureStreamSocket.h>
#include <Poco/StreamCopier.h>

#include <sstream>

namespace shoal::manager {

Result<NodeApiReply> nodeApiRequest(const NodeApiTarget& target, const std::string& method,
                                    const std::string& path, const std::string& body) {
  try {
    Poco::Net::Context::Params params;
    params.loadDefaultCAs = false;
    params.privateKeyFile = target.keyFile;
    params.certificateFile = target.certFile;
    if (target.caFile.empty()) {
      params.verificationMode = Poco::Net::Context::VERIFY_NONE;
    } else {
      params.caLocation = target.caFile;
      params.verificationMode = Poco::Net::Context::VERIFY_STRICT;
    }
    Poco::Net::Context::Ptr context =
        new Poco::Net::Context(Poco::Net::Context::TLS_CLIENT_USE, params);
    context->requireMinimumProtocol(Poco::Net::Context::PROTO_TLSV1_3);
    const Poco::Timespan timeout(
        std::chrono::duration_cast<std::chrono::microseconds>(target.timeout).count());
    // The name checked against the server's certificate is its node id (its CN): nodes are
    // reached by address, but identified by the cluster CA.
    // The session connects the (unconnected) socket itself, keeping the name set on it.
    Poco::Net::SecureStreamSocket socket(context);
    if (!target.caFile.empty()) socket.setPeerHostName(target.serverNodeId);
    Poco::Net::HTTPSClientSession session(socket);
    const Poco::Net::SocketAddress address(target.address);
    session.setHost(address.host().toString());
    session.setPort(address.port());
    session.setTimeout(timeout);
    Poco::Net::HTTPRequest request(method, path, Poco::Net::HTTPMessage::HTTP_1_1);
    request.setContentType("application/json");
    request.setContentLength(static_cast<std::streamsize>(body.size()));
    session.sendRequest(request) << body;
    Poco::Net::HTTPResponse response;
    std::istream& in = session.receiveResponse(response);
    NodeApiReply reply;
    reply.status = static_cast<int>(response.getStatus());
    Poco::StreamCopier::copyToString(in, reply.body);
    return reply;
  } catch (const Poco::Exception& e) {
    return Status::unavailable("cannot reach the node API at " + target.address + ": " +
                               e.displayText());
  } catch (const std::exception& e) {
    return Status::unavailable("cannot reach the node API at " + target.address + ": " + e.what());
  }
}

}  // namespace shoal::manager
