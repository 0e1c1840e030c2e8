// plugin.hpp's guarantees, checked against a fake host: no exception crosses the ABI, errors
// carry their messages, init/fini construct and destroy the state, replies use host memory.
#include <cppunit/extensions/HelperMacros.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include <shoal/secrets.h>
#include <shoal/plugin.hpp>

namespace {

// The fake host records fail() messages, posted events and allocations.
struct FakeHost {
  static inline std::string lastFail;
  static inline std::vector<std::string> posted;
  static inline int allocs = 0;
  static inline int frees = 0;

  static void* alloc(uint64_t n) {
    ++allocs;
    return std::malloc(n);
  }
  static void free(void* p) {
    if (p) ++frees;
    std::free(p);
  }
  static void log(shoal_instance*, int32_t, shoal_str) {}
  static shoal_status fail(shoal_instance*, shoal_status code, const char* fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    lastFail = buf;
    return code;
  }
  static shoal_status post(shoal_instance*, const shoal_event* ev) {
    posted.emplace_back(ev->json.ptr, ev->json.len);
    return SHOAL_OK;
  }
  static int64_t now() { return 42; }

  static const shoal_host* table() {
    static const shoal_host h = {sizeof(shoal_host), SHOAL_ABI_MAJOR, SHOAL_ABI_MINOR, alloc, free,
                                 log, fail, post, now, now,
                                 // ABI 1.1: no Lua policies in this fake host
                                 nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
    return &h;
  }
};

int g_live = 0;

class Probe : public shoal::sdk::Instance {
 public:
  Probe(const shoal_host* h, shoal_instance* i, std::string_view config) : Instance(h, i) {
    if (config == "bad") throw shoal::sdk::Error(SHOAL_EINVAL, "config is bad");
    if (config == "crash") throw std::runtime_error("constructor blew up");
    ++g_live;
  }
  ~Probe() override { --g_live; }
  shoal_status describe(shoal_buf* out) { return reply(out, "{\"ok\":true}"); }
  shoal_status materialize(shoal_str task, shoal_str, shoal_buf*) {
    complete(7, SHOAL_OK, shoal::sdk::view(task));
    throw std::runtime_error("materialize failed");
  }
  shoal_status release(shoal_str) { throw 17; }
};

const shoal_secrets_ops kOps = [] {
  shoal_secrets_ops o{};
  o.struct_size = sizeof o;
  o.describe = shoal::sdk::op<&Probe::describe>;
  o.materialize = shoal::sdk::op<&Probe::materialize>;
  o.release = shoal::sdk::op<&Probe::release>;
  return o;
}();

const shoal_plugin_desc kDesc =
    shoal::sdk::describe<Probe>(SHOAL_KIND_SECRETS, "probe", "1", &kOps);

}  // namespace

class PluginHppTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(PluginHppTest);
  CPPUNIT_TEST(testDescriptorIsFilledIn);
  CPPUNIT_TEST(testInitAndFiniOwnTheState);
  CPPUNIT_TEST(testThrowingConstructorFailsInit);
  CPPUNIT_TEST(testExceptionsBecomeStatuses);
  CPPUNIT_TEST(testReplyUsesHostMemory);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testDescriptorIsFilledIn() {
    CPPUNIT_ASSERT_EQUAL(uint32_t(sizeof(shoal_plugin_desc)), kDesc.struct_size);
    CPPUNIT_ASSERT_EQUAL(uint16_t(SHOAL_ABI_MAJOR), kDesc.abi_major);
    CPPUNIT_ASSERT_EQUAL(int32_t(SHOAL_KIND_SECRETS), kDesc.kind);
    CPPUNIT_ASSERT(kDesc.init && kDesc.fini && kDesc.ops == &kOps);
  }

  void testInitAndFiniOwnTheState() {
    void* state = nullptr;
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK,
                         kDesc.init(FakeHost::table(), nullptr, shoal::sdk::str("{}"), &state));
    CPPUNIT_ASSERT(state != nullptr);
    CPPUNIT_ASSERT_EQUAL(1, g_live);
    kDesc.fini(state);
    CPPUNIT_ASSERT_EQUAL(0, g_live);
  }

  void testThrowingConstructorFailsInit() {
    void* state = nullptr;
    CPPUNIT_ASSERT_EQUAL(SHOAL_EINVAL,
                         kDesc.init(FakeHost::table(), nullptr, shoal::sdk::str("bad"), &state));
    CPPUNIT_ASSERT_EQUAL(std::string("config is bad"), FakeHost::lastFail);
    CPPUNIT_ASSERT_EQUAL(SHOAL_EINTERNAL,
                         kDesc.init(FakeHost::table(), nullptr, shoal::sdk::str("crash"), &state));
    CPPUNIT_ASSERT(FakeHost::lastFail.find("constructor blew up") != std::string::npos);
    CPPUNIT_ASSERT_EQUAL(0, g_live);
  }

  void testExceptionsBecomeStatuses() {
    void* state = nullptr;
    kDesc.init(FakeHost::table(), nullptr, shoal::sdk::str("{}"), &state);
    shoal_buf out{};
    FakeHost::posted.clear();
    CPPUNIT_ASSERT_EQUAL(SHOAL_EINTERNAL, kOps.materialize(state, shoal::sdk::str("t1"),
                                                           shoal::sdk::str("{}"), &out));
    CPPUNIT_ASSERT(FakeHost::lastFail.find("materialize failed") != std::string::npos);
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), FakeHost::posted.size());
    CPPUNIT_ASSERT_EQUAL(std::string("t1"), FakeHost::posted[0]);
    CPPUNIT_ASSERT_EQUAL(SHOAL_EINTERNAL, kOps.release(state, shoal::sdk::str("t1")));
    CPPUNIT_ASSERT(FakeHost::lastFail.find("unknown type") != std::string::npos);
    kDesc.fini(state);
  }

  void testReplyUsesHostMemory() {
    void* state = nullptr;
    kDesc.init(FakeHost::table(), nullptr, shoal::sdk::str("{}"), &state);
    int before = FakeHost::allocs;
    shoal_buf out{};
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, kOps.describe(state, &out));
    CPPUNIT_ASSERT_EQUAL(before + 1, FakeHost::allocs);
    CPPUNIT_ASSERT_EQUAL(std::string("{\"ok\":true}"), std::string(out.ptr, out.len));
    FakeHost::free(out.ptr);
    kDesc.fini(state);
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(PluginHppTest);
