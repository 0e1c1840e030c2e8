#include "kernel/main/subsystems.h"

#include <Poco/Exception.h>

#include "kernel/common/log.h"

namespace shoal::daemon {

void PluginSubsystem::initialize(Poco::Util::Application&) {
  host_.setPluginConfig(config_.pluginConfig);
  host_.setDisabled(config_.disabledPlugins);
  host_.setEventHandler([this](const plugin::PluginEvent& ev) {
    if (ev.type == SHOAL_EVENT_NOTICE) {
      log::info("plugin", "notice", {{"plugin", ev.plugin}, {"json", ev.json}});
    }
    if (sink_) sink_(ev);
  });
  host_.loadDirectories(config_.pluginDirs);
  host_.start();
  if (Status s = host_.checkRequired(config_.requiredKinds); !s) {
    throw Poco::IllegalStateException(s.message());
  }
}

void PluginSubsystem::uninitialize() { host_.shutdown(); }

void ApiSubsystem::initialize(Poco::Util::Application&) {
  api::ApiServer::Options options;
  options.socketPath = config_.socketPath;
  server_ = std::make_unique<api::ApiServer>(options, router_);
  if (Status s = server_->start(); !s) {
    server_.reset();
    throw Poco::IOException(s.message());
  }
}

void ApiSubsystem::uninitialize() {
  if (server_) server_->stop();
  server_.reset();
}

void SwarmSubsystem::initialize(Poco::Util::Application&) {
  swarm_.setPlugins(&plugins_, config_.runtimePlugin);
  if (Status s = swarm_.resume(); !s) throw Poco::IllegalStateException(s.message());
}

void SwarmSubsystem::uninitialize() { swarm_.stop(); }

}  // namespace shoal::daemon
