// Pins the C ABI's layout: every field's offset and every struct's size on LP64 (x86_64 and
// aarch64). An accidental reorder, insertion or type change fails the build here.
#include <cppunit/extensions/HelperMacros.h>

#include <cstddef>
#include <type_traits>

#include <shoal/network.h>
#include <shoal/plugin.h>
#include <shoal/runtime.h>
#include <shoal/scheduler.h>
#include <shoal/secrets.h>
#include <shoal/storage.h>

static_assert(sizeof(void*) == 8, "the pinned layout is LP64's");

#define OFF(type, field, off) static_assert(offsetof(type, field) == (off), #type "." #field)

static_assert(std::is_same_v<shoal_status, int32_t>);
static_assert(SHOAL_ABI_MAJOR == 1 && SHOAL_ABI_MINOR == 2);

OFF(shoal_str, ptr, 0);
OFF(shoal_str, len, 8);
static_assert(sizeof(shoal_str) == 16);
OFF(shoal_buf, ptr, 0);
OFF(shoal_buf, len, 8);
static_assert(sizeof(shoal_buf) == 16);

OFF(shoal_event, struct_size, 0);
OFF(shoal_event, type, 4);
OFF(shoal_event, op, 8);
OFF(shoal_event, status, 16);
OFF(shoal_event, reserved, 20);
OFF(shoal_event, subject, 24);
OFF(shoal_event, json, 40);
static_assert(sizeof(shoal_event) == 56);

OFF(shoal_host, struct_size, 0);
OFF(shoal_host, abi_major, 4);
OFF(shoal_host, abi_minor, 6);
OFF(shoal_host, alloc, 8);
OFF(shoal_host, free, 16);
OFF(shoal_host, log, 24);
OFF(shoal_host, fail, 32);
OFF(shoal_host, post, 40);
OFF(shoal_host, now_ns, 48);
OFF(shoal_host, monotonic_ns, 56);
// ABI 1.1
OFF(shoal_host, policy_open, 64);
OFF(shoal_host, policy_close, 72);
OFF(shoal_host, policy_bind, 80);
OFF(shoal_host, policy_update, 88);
OFF(shoal_host, policy_filter, 96);
OFF(shoal_host, policy_score, 104);
OFF(shoal_host, policy_explain, 112);
static_assert(sizeof(shoal_host) == 120);

OFF(shoal_policy_usage, struct_size, 0);
OFF(shoal_policy_usage, count, 4);
OFF(shoal_policy_usage, nodes, 8);
OFF(shoal_policy_usage, reserved_nano_cpus, 16);
OFF(shoal_policy_usage, reserved_memory_bytes, 24);
OFF(shoal_policy_usage, tasks, 32);
OFF(shoal_policy_usage, service_tasks, 40);
static_assert(sizeof(shoal_policy_usage) == 48);

OFF(shoal_plugin_desc, struct_size, 0);
OFF(shoal_plugin_desc, abi_major, 4);
OFF(shoal_plugin_desc, abi_minor, 6);
OFF(shoal_plugin_desc, kind, 8);
OFF(shoal_plugin_desc, name, 16);
OFF(shoal_plugin_desc, version, 24);
OFF(shoal_plugin_desc, init, 32);
OFF(shoal_plugin_desc, fini, 40);
OFF(shoal_plugin_desc, ops, 48);
static_assert(sizeof(shoal_plugin_desc) == 56);
static_assert(SHOAL_PLUGIN_DESC_MIN_SIZE == 56);

OFF(shoal_runtime_ops, struct_size, 0);
OFF(shoal_runtime_ops, reserved, 4);
OFF(shoal_runtime_ops, describe, 8);
OFF(shoal_runtime_ops, prepare, 16);
OFF(shoal_runtime_ops, start, 24);
OFF(shoal_runtime_ops, wait, 32);
OFF(shoal_runtime_ops, shutdown, 40);
OFF(shoal_runtime_ops, terminate, 48);
OFF(shoal_runtime_ops, remove, 56);
OFF(shoal_runtime_ops, inspect, 64);
OFF(shoal_runtime_ops, list, 72);
OFF(shoal_runtime_ops, logs, 80);
OFF(shoal_runtime_ops, cancel, 88);
// ABI 1.2
OFF(shoal_runtime_ops, image_pull, 96);
OFF(shoal_runtime_ops, image_resolve, 104);
OFF(shoal_runtime_ops, image_load, 112);
OFF(shoal_runtime_ops, image_list, 120);
OFF(shoal_runtime_ops, image_remove, 128);
static_assert(sizeof(shoal_runtime_ops) == 136);
static_assert(SHOAL_RUNTIME_OPS_MIN_SIZE == 96);

OFF(shoal_scheduler_ops, struct_size, 0);
OFF(shoal_scheduler_ops, reserved, 4);
OFF(shoal_scheduler_ops, snapshot_open, 8);
OFF(shoal_scheduler_ops, snapshot_close, 16);
OFF(shoal_scheduler_ops, group_open, 24);
OFF(shoal_scheduler_ops, group_close, 32);
OFF(shoal_scheduler_ops, filter, 40);
OFF(shoal_scheduler_ops, score, 48);
OFF(shoal_scheduler_ops, assign, 56);
OFF(shoal_scheduler_ops, explain, 64);
static_assert(sizeof(shoal_scheduler_ops) == 72);

OFF(shoal_network_ops, struct_size, 0);
OFF(shoal_network_ops, reserved, 4);
OFF(shoal_network_ops, describe, 8);
OFF(shoal_network_ops, restore, 16);
OFF(shoal_network_ops, network_allocate, 24);
OFF(shoal_network_ops, network_release, 32);
OFF(shoal_network_ops, endpoint_allocate, 40);
OFF(shoal_network_ops, endpoint_release, 48);
OFF(shoal_network_ops, attach, 56);
OFF(shoal_network_ops, detach, 64);
OFF(shoal_network_ops, update_peers, 72);
OFF(shoal_network_ops, update_services, 80);
static_assert(sizeof(shoal_network_ops) == 88);

OFF(shoal_secrets_ops, struct_size, 0);
OFF(shoal_secrets_ops, reserved, 4);
OFF(shoal_secrets_ops, describe, 8);
OFF(shoal_secrets_ops, materialize, 16);
OFF(shoal_secrets_ops, release, 24);
static_assert(sizeof(shoal_secrets_ops) == 32);

OFF(shoal_storage_ops, struct_size, 0);
OFF(shoal_storage_ops, reserved, 4);
OFF(shoal_storage_ops, describe, 8);
OFF(shoal_storage_ops, volume_create, 16);
OFF(shoal_storage_ops, volume_remove, 24);
OFF(shoal_storage_ops, volume_inspect, 32);
OFF(shoal_storage_ops, volume_list, 40);
OFF(shoal_storage_ops, mount, 48);
OFF(shoal_storage_ops, unmount, 56);
static_assert(sizeof(shoal_storage_ops) == 64);

// The values of codes and kinds are ABI too.
static_assert(SHOAL_OK == 0 && SHOAL_EAGAIN == 1 && SHOAL_EINVAL == -22 && SHOAL_ENOTSUP == -95);
static_assert(SHOAL_KIND_SCHEDULER == 1 && SHOAL_KIND_RUNTIME == 2 && SHOAL_KIND_NETWORK == 3 &&
              SHOAL_KIND_SECRETS == 4 && SHOAL_KIND_STORAGE == 5);
static_assert(SHOAL_EVENT_OP_DONE == 1 && SHOAL_EVENT_TASK_STATUS == 2 &&
              SHOAL_EVENT_LOG_CHUNK == 3 && SHOAL_EVENT_NOTICE == 4);
static_assert(SHOAL_POLICY_NAMED == 1 && SHOAL_POLICY_EXPRESSION == 2);

class AbiLayoutTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(AbiLayoutTest);
  CPPUNIT_TEST(testHasFieldProbesBySize);
  CPPUNIT_TEST_SUITE_END();

 public:
  // A reader must see a field only when the writer's struct_size covers it.
  void testHasFieldProbesBySize() {
    shoal_host host{};
    host.struct_size = offsetof(shoal_host, post);  // an older host without post
    CPPUNIT_ASSERT(SHOAL_HAS_FIELD(&host, shoal_host, fail));
    CPPUNIT_ASSERT(!SHOAL_HAS_FIELD(&host, shoal_host, post));
    host.struct_size = sizeof host;
    CPPUNIT_ASSERT(SHOAL_HAS_FIELD(&host, shoal_host, monotonic_ns));
    // A 1.0 host ends at monotonic_ns: a 1.1 plugin sees no policy slots in it.
    host.struct_size = offsetof(shoal_host, monotonic_ns) + sizeof(host.monotonic_ns);
    CPPUNIT_ASSERT(SHOAL_HAS_FIELD(&host, shoal_host, monotonic_ns));
    CPPUNIT_ASSERT(!SHOAL_HAS_FIELD(&host, shoal_host, policy_open));
    host.struct_size = sizeof host;
    CPPUNIT_ASSERT(SHOAL_HAS_FIELD(&host, shoal_host, policy_explain));
    const shoal_host* none = nullptr;
    CPPUNIT_ASSERT(!SHOAL_HAS_FIELD(none, shoal_host, alloc));
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(AbiLayoutTest);
