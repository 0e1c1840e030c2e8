// The six built-in plugins as the daemon loads them: each loads through the ABI, describes the
// node truthfully, refuses configuration it does not know, and answers "not supported yet"
// (never a fake success) from the operations that later issues implement.
#include <cppunit/extensions/HelperMacros.h>

#include <shoal/network.h>
#include <shoal/runtime.h>
#include <shoal/scheduler.h>
#include <shoal/secrets.h>
#include <shoal/storage.h>
#include <unistd.h>

#include <cstdlib>

#include "kernel/plugin/plugin_host.h"

using shoal::Status;
using shoal::plugin::Kind;
using shoal::plugin::PluginHost;
using shoal::plugin::PluginInstance;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string take(shoal_buf& b) {
  std::string s(b.ptr, b.len);
  std::free(b.ptr);
  b = {};
  return s;
}

void assertNotYet(const Status& s, const std::string& plugin, const std::string& op) {
  CPPUNIT_ASSERT_MESSAGE(s.toString(), s.code() == Status::Code::kNotSupported);
  CPPUNIT_ASSERT_MESSAGE(s.message(),
                         contains(s.message(), plugin + ": " + op + " is not supported yet"));
}

}  // namespace

class BuiltinPluginsTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(BuiltinPluginsTest);
  CPPUNIT_TEST(testAllSixLoad);
  CPPUNIT_TEST(testRuntimesDescribeThisNode);
  CPPUNIT_TEST(testNetworkDescribesItsCapabilities);
  CPPUNIT_TEST(testSecretsAndStorageDescribeTheirRoots);
  CPPUNIT_TEST(testRuncRefusesBadDocumentsAndUnknownTasks);
  CPPUNIT_TEST(testUnimplementedOpsSayNotSupportedYet);
  CPPUNIT_TEST(testUnknownConfigKeysAreRefused);
  CPPUNIT_TEST(testBadConfigValuesAreRefused);
  CPPUNIT_TEST_SUITE_END();

 public:
  void setUp() override {
    host_ = std::make_unique<PluginHost>();
    host_->loadDirectories({SHOAL_PLUGIN_BUILD_DIR});
  }

  void testAllSixLoad() {
    CPPUNIT_ASSERT(host_->refusals().empty());
    CPPUNIT_ASSERT_EQUAL(std::size_t(6), host_->list().size());
    CPPUNIT_ASSERT(
        host_->checkRequired({"scheduler", "runtime", "network", "secrets", "storage"}).isOk());
  }

  void testRuntimesDescribeThisNode() {
    for (const char* name : {"runtime-runc", "runtime-sim"}) {
      PluginInstance* p = host_->find(Kind::kRuntime, name);
      CPPUNIT_ASSERT(p != nullptr);
      shoal_buf out{};
      Status s = p->invoke(
          "describe", [&](void* st) { return p->ops<shoal_runtime_ops>().describe(st, &out); });
      CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
      std::string json = take(out);
      CPPUNIT_ASSERT_MESSAGE(json, contains(json, "\"schema\":\"shoal.node-runtime/v1\""));
      CPPUNIT_ASSERT_MESSAGE(json, contains(json, "\"os\":\"linux\""));
      CPPUNIT_ASSERT_MESSAGE(
          json, contains(json, "\"cpus\":" + std::to_string(sysconf(_SC_NPROCESSORS_ONLN))));
    }
    PluginInstance* runc = host_->find(Kind::kRuntime, "runtime-runc");
    shoal_buf out{};
    runc->invoke("describe",
                 [&](void* st) { return runc->ops<shoal_runtime_ops>().describe(st, &out); });
    std::string json = take(out);
    CPPUNIT_ASSERT_MESSAGE(json, contains(json, "\"runtime\":\"runc\""));
  }

  void testNetworkDescribesItsCapabilities() {
    PluginInstance* p = host_->find(Kind::kNetwork, "network-overlay");
    shoal_buf out{};
    CPPUNIT_ASSERT(p->invoke("describe", [&](void* st) {
                      return p->ops<shoal_network_ops>().describe(st, &out);
                    }).isOk());
    std::string json = take(out);
    CPPUNIT_ASSERT_MESSAGE(json, contains(json, "\"drivers\":[\"overlay\"]"));
    CPPUNIT_ASSERT_MESSAGE(json, contains(json, "\"vxlan_port\":4789"));
    CPPUNIT_ASSERT_MESSAGE(json, contains(json, "\"mtu\":"));
  }

  void testSecretsAndStorageDescribeTheirRoots() {
    PluginInstance* sec = host_->find(Kind::kSecrets, "secrets-tmpfs");
    shoal_buf out{};
    CPPUNIT_ASSERT(
        sec->invoke("describe",
                    [&](void* st) { return sec->ops<shoal_secrets_ops>().describe(st, &out); })
            .isOk());
    CPPUNIT_ASSERT_EQUAL(std::string("{\"backing\":\"tmpfs\",\"root\":\"/run/shoal/secrets\"}"),
                         take(out));
    PluginInstance* sto = host_->find(Kind::kStorage, "storage-local");
    CPPUNIT_ASSERT(
        sto->invoke("describe",
                    [&](void* st) { return sto->ops<shoal_storage_ops>().describe(st, &out); })
            .isOk());
    CPPUNIT_ASSERT_EQUAL(
        std::string("{\"drivers\":[\"local\"],\"root\":\"/var/lib/shoal/volumes\"}"), take(out));
  }

  void testRuncRefusesBadDocumentsAndUnknownTasks() {
    // Nothing here touches the node: a refused document and unknown tasks write no state.
    PluginInstance* runc = host_->find(Kind::kRuntime, "runtime-runc");
    const auto& ops = runc->ops<shoal_runtime_ops>();
    Status s = runc->invoke(
        "prepare",
        [&](void* st) {
          return ops.prepare(st, 1, {"t", 1}, {"{}", 2});
        },
        true);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.code() == Status::Code::kInvalidArgument);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "\"id\" is required"));
    s = runc->invoke(
        "wait",
        [&](void* st) {
          return ops.wait(st, 2, {"t", 1});
        },
        true);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.code() == Status::Code::kNotFound);
    s = runc->invoke(
        "start",
        [&](void* st) {
          return ops.start(st, 3, {"t", 1});
        },
        true);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "task t is not prepared"));
    CPPUNIT_ASSERT(SHOAL_HAS_FIELD(&ops, shoal_runtime_ops, image_remove) && ops.image_pull);
  }

  void testUnimplementedOpsSayNotSupportedYet() {
    PluginInstance* net = host_->find(Kind::kNetwork, "network-overlay");
    // attach is implemented (tests/plugins/network-overlay): a bad document fails the call at
    // once, naming the field, and touches nothing.
    Status attach = net->invoke(
        "attach",
        [&](void* st) {
          return net->ops<shoal_network_ops>().attach(st, 1, {"t", 1}, {"{}", 2});
        },
        true);
    CPPUNIT_ASSERT_MESSAGE(attach.toString(), attach.code() == Status::Code::kInvalidArgument);
    CPPUNIT_ASSERT_MESSAGE(attach.message(),
                           contains(attach.message(), "attach: schema is required"));
    // So is update_services: a bad document is refused naming the field, a good one applied.
    Status services = net->invoke("update_services", [&](void* st) {
      return net->ops<shoal_network_ops>().update_services(st, {"{}", 2});
    });
    CPPUNIT_ASSERT_MESSAGE(services.toString(), services.code() == Status::Code::kInvalidArgument);
    CPPUNIT_ASSERT_MESSAGE(services.message(),
                           contains(services.message(), "update_services: schema is required"));
    const std::string bad =
        R"({"schema":"shoal.services/v1","services":[{"id":"s1","name":"web","vips":)"
        R"([{"network_id":"n1","address":"10.0.1.2/24"}]}]})";
    services = net->invoke("update_services", [&](void* st) {
      return net->ops<shoal_network_ops>().update_services(st, {bad.data(), bad.size()});
    });
    CPPUNIT_ASSERT_MESSAGE(services.toString(), services.code() == Status::Code::kInvalidArgument);
    CPPUNIT_ASSERT_MESSAGE(services.message(),
                           contains(services.message(), "services[0].vips[0].address"));
    const std::string good =
        R"({"schema":"shoal.services/v1","services":[{"id":"s1","name":"web",)"
        R"("endpoint_mode":"vip","vips":[{"network_id":"n1","address":"10.0.1.2"}],"ports":[],)"
        R"("backends":[{"network_id":"n1","address":"10.0.1.5","task_id":"t1",)"
        R"("task_name":"web.1.t1","aliases":["x"]}]}]})";
    services = net->invoke("update_services", [&](void* st) {
      return net->ops<shoal_network_ops>().update_services(st, {good.data(), good.size()});
    });
    CPPUNIT_ASSERT_MESSAGE(services.toString(), services.isOk());
    PluginInstance* sec = host_->find(Kind::kSecrets, "secrets-tmpfs");
    shoal_buf out{};
    assertNotYet(
        sec->invoke(
            "materialize",
            [&](void* st) {
              return sec->ops<shoal_secrets_ops>().materialize(st, {"t", 1}, {"{}", 2}, &out);
            }),
        "secrets-tmpfs", "materialize");
    PluginInstance* sto = host_->find(Kind::kStorage, "storage-local");
    assertNotYet(
        sto->invoke(
            "volume_create",
            [&](void* st) {
              return sto->ops<shoal_storage_ops>().volume_create(st, {"v", 1}, {"{}", 2}, &out);
            }),
        "storage-local", "volume_create");
    CPPUNIT_ASSERT(out.ptr == nullptr);
  }

  void testUnknownConfigKeysAreRefused() {
    std::map<std::string, std::string> config;
    for (const char* n : {"scheduler-spread", "runtime-runc", "runtime-sim", "network-overlay",
                          "secrets-tmpfs", "storage-local"}) {
      config[n] = "{\"no_such_key\":1}";
    }
    PluginHost host;
    host.setPluginConfig(config);
    host.loadDirectories({SHOAL_PLUGIN_BUILD_DIR});
    CPPUNIT_ASSERT(host.list().empty());
    auto refusals = host.refusals();
    CPPUNIT_ASSERT_EQUAL(std::size_t(6), refusals.size());
    for (const auto& r : refusals) {
      CPPUNIT_ASSERT_MESSAGE(r.message, contains(r.message, "unknown config key \"no_such_key\""));
    }
  }

  void testBadConfigValuesAreRefused() {
    PluginHost host;
    host.setPluginConfig({{"runtime-sim", "{\"failure_rate\":2}"},
                          {"network-overlay", "{\"vxlan_port\":70000}"},
                          {"storage-local", "{\"root\":\"relative/dir\"}"},
                          {"runtime-runc", "{\"runtime\":\"crun\"}"}});
    host.loadDirectories({SHOAL_PLUGIN_BUILD_DIR});
    CPPUNIT_ASSERT_EQUAL(std::size_t(3), host.refusals().size());
    CPPUNIT_ASSERT(host.find(Kind::kRuntime, "runtime-runc") != nullptr);  // crun is a valid choice
    PluginInstance* runc = host.find(Kind::kRuntime, "runtime-runc");
    shoal_buf out{};
    runc->invoke("describe",
                 [&](void* st) { return runc->ops<shoal_runtime_ops>().describe(st, &out); });
    std::string json = take(out);
    CPPUNIT_ASSERT_MESSAGE(json, contains(json, "\"runtime\":\"crun\""));

    PluginHost relative;
    relative.setPluginConfig({{"network-overlay", "{\"netns_dir\":\"run/netns\"}"}});
    relative.loadFile(std::string(SHOAL_PLUGIN_BUILD_DIR) + "/network-overlay.so");
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), relative.refusals().size());
    CPPUNIT_ASSERT_MESSAGE(relative.refusals()[0].message,
                           contains(relative.refusals()[0].message,
                                    "config key \"netns_dir\" must be an absolute path"));
  }

 private:
  std::unique_ptr<PluginHost> host_;
};

CPPUNIT_TEST_SUITE_REGISTRATION(BuiltinPluginsTest);
