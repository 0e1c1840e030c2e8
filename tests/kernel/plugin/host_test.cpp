// The host side of the ABI at run time: calls into one instance are serialised, plugin threads
// reach the kernel only through post(), errors carry the plugin's message, and exceptions that
// a plugin lets out are contained.
#include <cppunit/extensions/HelperMacros.h>

#include <shoal/runtime.h>
#include <shoal/secrets.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "kernel/plugin/plugin_host.h"

using shoal::Status;
using shoal::plugin::Kind;
using shoal::plugin::PluginEvent;
using shoal::plugin::PluginHost;
using shoal::plugin::PluginInstance;

namespace {

std::string fixture(const std::string& dir) { return std::string(SHOAL_FIXTURE_DIR) + "/" + dir; }

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Collects events from the dispatcher thread.
struct Collector {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<PluginEvent> events;

  void add(const PluginEvent& ev) {
    std::lock_guard<std::mutex> lock(mu);
    events.push_back(ev);
    cv.notify_all();
  }
  bool waitFor(std::size_t n) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(10), [&] { return events.size() >= n; });
  }
};

std::string str(const shoal_buf& b) {
  std::string s(b.ptr, b.len);
  std::free(b.ptr);
  return s;
}

}  // namespace

class HostTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(HostTest);
  CPPUNIT_TEST(testCallsIntoOneInstanceAreSerialised);
  CPPUNIT_TEST(testAsyncOpCompletesThroughPost);
  CPPUNIT_TEST(testPluginThreadsPostEvents);
  CPPUNIT_TEST(testFailureCarriesPluginMessage);
  CPPUNIT_TEST(testFailureWithoutMessageIsNamed);
  CPPUNIT_TEST(testEagainFromSynchronousOpIsAnError);
  CPPUNIT_TEST(testSdkGuardContainsExceptions);
  CPPUNIT_TEST(testHostContainsExceptionsThatEscapeAPlugin);
  CPPUNIT_TEST(testThrowingInitIsRefused);
  CPPUNIT_TEST_SUITE_END();

 public:
  void setUp() override {
    host_ = std::make_unique<PluginHost>();
    host_->setEventHandler([this](const PluginEvent& ev) { events_.add(ev); });
    host_->loadDirectories({fixture("good"), fixture("throws"), fixture("raw-throw")});
    host_->start();
    good_ = host_->find(Kind::kRuntime, "fixture-good");
    CPPUNIT_ASSERT(good_ != nullptr);
  }

  void tearDown() override { host_.reset(); }

  void testCallsIntoOneInstanceAreSerialised() {
    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < 50; ++i) {
          shoal_buf out{};
          Status s = good_->invoke("inspect", [&](void* st) {
            return good_->ops<shoal_runtime_ops>().inspect(st, {"t", 1}, &out);
          });
          if (!s.isOk()) ++failures;
          std::free(out.ptr);
        }
      });
    }
    for (auto& t : threads) t.join();
    CPPUNIT_ASSERT_EQUAL(0, failures.load());
    shoal_buf out{};
    good_->invoke("inspect", [&](void* st) {
      return good_->ops<shoal_runtime_ops>().inspect(st, {"t", 1}, &out);
    });
    std::string json = str(out);
    // No overlap was ever seen, and the plugin's unsynchronised counter lost no increment.
    CPPUNIT_ASSERT_MESSAGE(json, contains(json, "\"violations\":0"));
    CPPUNIT_ASSERT_MESSAGE(json, contains(json, "\"calls\":401"));
  }

  void testAsyncOpCompletesThroughPost() {
    Status s = good_->invoke(
        "start",
        [&](void* st) {
          return good_->ops<shoal_runtime_ops>().start(st, 77, {"task-1", 6});
        },
        /*async=*/true);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    CPPUNIT_ASSERT(events_.waitFor(1));
    std::lock_guard<std::mutex> lock(events_.mu);
    const PluginEvent& ev = events_.events[0];
    CPPUNIT_ASSERT_EQUAL(int32_t(SHOAL_EVENT_OP_DONE), ev.type);
    CPPUNIT_ASSERT_EQUAL(uint64_t(77), ev.op);
    CPPUNIT_ASSERT_EQUAL(std::string("task-1"), ev.subject);
    CPPUNIT_ASSERT_EQUAL(std::string("fixture-good"), ev.plugin);
    CPPUNIT_ASSERT_EQUAL(std::string("{\"state\":\"running\"}"), ev.json);
  }

  void testPluginThreadsPostEvents() {
    Status s = good_->invoke(
        "logs",
        [&](void* st) {
          return good_->ops<shoal_runtime_ops>().logs(st, 9, {"t", 1}, {"{}", 2});
        },
        true);
    CPPUNIT_ASSERT(s.isOk());
    CPPUNIT_ASSERT(events_.waitFor(1001));
    std::lock_guard<std::mutex> lock(events_.mu);
    std::map<std::string, int> seen;
    int done = 0;
    for (const auto& ev : events_.events) {
      if (ev.type == SHOAL_EVENT_LOG_CHUNK) ++seen[ev.json];
      if (ev.type == SHOAL_EVENT_OP_DONE) ++done;
    }
    CPPUNIT_ASSERT_EQUAL(1, done);
    CPPUNIT_ASSERT_EQUAL(std::size_t(250), seen.size());
    for (const auto& [json, n] : seen) CPPUNIT_ASSERT_EQUAL_MESSAGE(json, 4, n);
  }

  void testFailureCarriesPluginMessage() {
    Status s = good_->invoke(
        "prepare",
        [&](void* st) {
          return good_->ops<shoal_runtime_ops>().prepare(st, 1, {"task-9", 6}, {"{}", 2});
        },
        true);
    CPPUNIT_ASSERT(s.code() == Status::Code::kInvalidArgument);
    CPPUNIT_ASSERT_EQUAL(
        std::string("plugin fixture-good: prepare: fixture: cannot prepare task task-9"),
        s.message());
  }

  void testFailureWithoutMessageIsNamed() {
    Status s = good_->invoke(
        "wait",
        [&](void* st) {
          return good_->ops<shoal_runtime_ops>().wait(st, 1, {"t", 1});
        },
        true);
    CPPUNIT_ASSERT(s.code() == Status::Code::kInternal);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "SHOAL_EIO"));
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "gave no message"));
    // A message from an earlier call never leaks into a later one.
    good_->invoke(
        "prepare",
        [&](void* st) {
          return good_->ops<shoal_runtime_ops>().prepare(st, 1, {"x", 1}, {"{}", 2});
        },
        true);
    s = good_->invoke(
        "wait",
        [&](void* st) {
          return good_->ops<shoal_runtime_ops>().wait(st, 1, {"t", 1});
        },
        true);
    CPPUNIT_ASSERT_MESSAGE(s.message(), !contains(s.message(), "cannot prepare"));
  }

  void testEagainFromSynchronousOpIsAnError() {
    Status s = good_->invoke("remove", [&](void* st) {
      return good_->ops<shoal_runtime_ops>().remove(st, 1, {"t", 1});
    });
    CPPUNIT_ASSERT(s.code() == Status::Code::kInternal);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "SHOAL_EAGAIN"));
  }

  void testSdkGuardContainsExceptions() {
    PluginInstance* p = host_->find(Kind::kSecrets, "fixture-throws");
    CPPUNIT_ASSERT(p != nullptr);
    shoal_buf out{};
    Status s = p->invoke("materialize", [&](void* st) {
      return p->ops<shoal_secrets_ops>().materialize(st, {"task-3", 6}, {"{}", 2}, &out);
    });
    CPPUNIT_ASSERT(s.code() == Status::Code::kInternal);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "boom while materialising task-3"));
    s = p->invoke("release", [&](void* st) {
      return p->ops<shoal_secrets_ops>().release(st, {"t", 1});
    });
    CPPUNIT_ASSERT(s.code() == Status::Code::kNotFound);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "nothing to release"));
    // The instance still works afterwards.
    s = p->invoke("describe",
                  [&](void* st) { return p->ops<shoal_secrets_ops>().describe(st, &out); });
    CPPUNIT_ASSERT(s.isOk());
    CPPUNIT_ASSERT_EQUAL(std::string("{\"backing\":\"none\"}"), str(out));
  }

  void testHostContainsExceptionsThatEscapeAPlugin() {
    PluginInstance* p = host_->find(Kind::kSecrets, "fixture-raw-throw");
    CPPUNIT_ASSERT(p != nullptr);
    shoal_buf out{};
    Status s = p->invoke("describe",
                         [&](void* st) { return p->ops<shoal_secrets_ops>().describe(st, &out); });
    CPPUNIT_ASSERT(s.code() == Status::Code::kInternal);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "raw exception from describe"));
  }

  void testThrowingInitIsRefused() {
    PluginHost host;
    host.setPluginConfig({{"fixture-throws", "{\"throw_in_init\":true}"}});
    host.loadDirectories({fixture("throws")});
    CPPUNIT_ASSERT(host.list().empty());
    auto refusals = host.refusals();
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), refusals.size());
    CPPUNIT_ASSERT_MESSAGE(
        refusals[0].message,
        contains(refusals[0].message, "refusing to start: throw_in_init is set"));
  }

 private:
  std::unique_ptr<PluginHost> host_;
  PluginInstance* good_ = nullptr;
  Collector events_;
};

CPPUNIT_TEST_SUITE_REGISTRATION(HostTest);
