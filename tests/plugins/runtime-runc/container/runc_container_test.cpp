// The container half of runtime-runc without root or runc: the task document, the OCI runtime
// spec (Docker's rules for the process, env, capabilities, users, mounts and limits), the state
// files, and the exit watcher and log follower driven by fake shims.
#include <cppunit/extensions/HelperMacros.h>

#include <Poco/Dynamic/Var.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <shoal/plugin.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <shoal/plugin.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "oci_spec.h"
#include "process.h"
#include "shim.h"
#include "state_files.h"
#include "task_spec.h"
#include "tests/support/temp_dir.h"

using namespace shoal::runc;
using Poco::JSON::Array;
using Poco::JSON::Object;
using shoal::test::TempDir;
using Strings = std::vector<std::string>;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string doc(const std::string& spec, const std::string& top = "") {
  return R"({"schema":"shoal.task/v1","id":"t0123456789abcdef","service_id":"s1","slot":2,)"
         R"("node_id":"n1","name":"web.2",)" +
         top + R"("spec":{"image":"busybox:latest")" + (spec.empty() ? "" : "," + spec) +
         R"(},"networks":[]})";
}

// The EINVAL message of parsing `json` ("" if it parsed).
std::string parseError(const std::string& json) {
  try {
    parseTaskDocument(json);
  } catch (const shoal::sdk::Error& e) {
    CPPUNIT_ASSERT_EQUAL(SHOAL_EINVAL, e.code());
    return e.what();
  }
  return "";
}

Object::Ptr config(const TaskSpec& task, const ImageDefaults& image = {},
                   const std::string& rootfs = "/nonexistent-rootfs") {
  Poco::JSON::Parser parser;
  return parser.parse(buildOciConfig(task, image, rootfs, "/shoal/" + task.id))
      .extract<Object::Ptr>();
}

Strings strings(const Array::Ptr& arr) {
  Strings out;
  for (std::size_t i = 0; i < arr->size(); ++i) {
    out.push_back(arr->get(static_cast<unsigned>(i)).toString());
  }
  return out;
}

TaskSpec baseTask() {
  TaskSpec t = parseTaskDocument(doc(R"("command":["/bin/sh"])"));
  return t;
}

Object::Ptr findMount(const Object::Ptr& cfg, const std::string& destination) {
  Array::Ptr mounts = cfg->getArray("mounts");
  for (std::size_t i = 0; i < mounts->size(); ++i) {
    Object::Ptr m = mounts->getObject(static_cast<unsigned>(i));
    if (m->getValue<std::string>("destination") == destination) return m;
  }
  return nullptr;
}

std::string errorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const shoal::sdk::Error& e) {
    return e.what();
  }
  return "";
}

// A stand-in for a shim: a child process whose pid and start time are in stateDir/shim.pid.
struct FakeShim {
  explicit FakeShim(const std::string& stateDir) {
    pid = fork();
    if (pid == 0) {
      pause();
      _exit(0);
    }
    while (processStartTime(pid) == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    writeFileAtomic(stateDir + "/" + kShimPidFile,
                    std::to_string(pid) + " " + std::to_string(processStartTime(pid)) + "\n");
  }
  ~FakeShim() { stop(); }
  void stop() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      pid = 0;
    }
  }
  pid_t pid = 0;
};

}  // namespace

class TaskSpecTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(TaskSpecTest);
  CPPUNIT_TEST(testParsesEveryField);
  CPPUNIT_TEST(testAcceptsDockerKeysItDoesNotActOn);
  CPPUNIT_TEST(testRefusesWrongTypesNamingTheField);
  CPPUNIT_TEST(testRefusesMissingRequiredFields);
  CPPUNIT_TEST(testMountsDefaultToVolumeAndNeedTargets);
  CPPUNIT_TEST(testDnsAndAddressesAreReadWhenPresent);
  CPPUNIT_TEST(testRefusesBadDnsAndAddressesNamingTheField);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testParsesEveryField() {
    const TaskSpec t = parseTaskDocument(doc(
        R"("command":["/bin/sh","-c"],"args":["echo hi"],"env":["A=1","B"],"workdir":"/w",)"
        R"("user":"1000:100","hostname":"h1","stop_signal":"SIGINT","stop_grace_ns":5000000000,)"
        R"("read_only":true,"cap_add":["NET_ADMIN"],"cap_drop":["CAP_MKNOD"],)"
        R"("sysctls":{"net.ipv4.ip_forward":"1"},"ulimits":[{"name":"nofile","soft":100,"hard":200}],)"
        R"("init":false,"tty":true,"healthcheck":{"Test":["CMD","true"],"Interval":1000000000},)"
        R"("mounts":[{"Type":"bind","Source":"/srv","Target":"/data","ReadOnly":true,)"
        R"("BindOptions":{"Propagation":"rslave"}},)"
        R"({"Type":"tmpfs","Target":"/scratch","TmpfsOptions":{"SizeBytes":1048576,"Mode":448}}],)"
        R"("resources":{"Limits":{"NanoCPUs":500000000,"MemoryBytes":33554432,"Pids":64},)"
        R"("Reservations":{"NanoCPUs":100000000,"MemoryBytes":16777216}})",
        R"("netns":"/run/netns/t1","mounts":[{"source":"/var/lib/vol","target":"/v",)"
        R"("type":"bind","options":["rbind","ro"]}],)"));
    CPPUNIT_ASSERT_EQUAL(std::string("t0123456789abcdef"), t.id);
    CPPUNIT_ASSERT_EQUAL(std::string("s1"), t.serviceId);
    CPPUNIT_ASSERT_EQUAL(int64_t{2}, t.slot);
    CPPUNIT_ASSERT_EQUAL(std::string("n1"), t.nodeId);
    CPPUNIT_ASSERT_EQUAL(std::string("web.2"), t.name);
    CPPUNIT_ASSERT_EQUAL(std::string("busybox:latest"), t.image);
    CPPUNIT_ASSERT(t.command == Strings({"/bin/sh", "-c"}));
    CPPUNIT_ASSERT(t.args == Strings({"echo hi"}));
    CPPUNIT_ASSERT(t.env == Strings({"A=1", "B"}));
    CPPUNIT_ASSERT_EQUAL(std::string("/w"), t.workdir);
    CPPUNIT_ASSERT_EQUAL(std::string("1000:100"), t.user);
    CPPUNIT_ASSERT_EQUAL(std::string("h1"), t.hostname);
    CPPUNIT_ASSERT_EQUAL(std::string("SIGINT"), t.stopSignal);
    CPPUNIT_ASSERT_EQUAL(int64_t{5000000000}, t.stopGraceNs);
    CPPUNIT_ASSERT(t.readOnly);
    CPPUNIT_ASSERT(t.tty);
    CPPUNIT_ASSERT(t.capAdd == Strings({"NET_ADMIN"}));
    CPPUNIT_ASSERT(t.capDrop == Strings({"CAP_MKNOD"}));
    CPPUNIT_ASSERT_EQUAL(std::string("1"), t.sysctls.at("net.ipv4.ip_forward"));
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, t.ulimits.size());
    CPPUNIT_ASSERT_EQUAL(std::string("nofile"), t.ulimits[0].name);
    CPPUNIT_ASSERT_EQUAL(int64_t{100}, t.ulimits[0].soft);
    CPPUNIT_ASSERT_EQUAL(int64_t{200}, t.ulimits[0].hard);
    CPPUNIT_ASSERT(!t.init);
    CPPUNIT_ASSERT(contains(t.healthcheckJson, R"("Test":["CMD","true"])"));
    CPPUNIT_ASSERT(contains(t.healthcheckJson, R"("Interval":1000000000)"));
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, t.mounts.size());
    CPPUNIT_ASSERT_EQUAL(std::string("bind"), t.mounts[0].type);
    CPPUNIT_ASSERT_EQUAL(std::string("/srv"), t.mounts[0].source);
    CPPUNIT_ASSERT_EQUAL(std::string("/data"), t.mounts[0].target);
    CPPUNIT_ASSERT(t.mounts[0].readOnly);
    CPPUNIT_ASSERT_EQUAL(std::string("rslave"), t.mounts[0].propagation);
    CPPUNIT_ASSERT_EQUAL(std::string("tmpfs"), t.mounts[1].type);
    CPPUNIT_ASSERT_EQUAL(int64_t{1048576}, t.mounts[1].tmpfsSizeBytes);
    CPPUNIT_ASSERT_EQUAL(uint32_t{0700}, t.mounts[1].tmpfsMode);
    CPPUNIT_ASSERT_EQUAL(int64_t{500000000}, t.nanoCpus);
    CPPUNIT_ASSERT_EQUAL(int64_t{33554432}, t.memoryLimitBytes);
    CPPUNIT_ASSERT_EQUAL(int64_t{64}, t.pidsLimit);
    CPPUNIT_ASSERT_EQUAL(int64_t{16777216}, t.memoryReservationBytes);
    CPPUNIT_ASSERT_EQUAL(std::string("/run/netns/t1"), t.netnsPath);
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, t.extraMounts.size());
    CPPUNIT_ASSERT_EQUAL(std::string("/var/lib/vol"), t.extraMounts[0].source);
    CPPUNIT_ASSERT_EQUAL(std::string("/v"), t.extraMounts[0].target);
    CPPUNIT_ASSERT(t.extraMounts[0].options == Strings({"rbind", "ro"}));
  }

  void testAcceptsDockerKeysItDoesNotActOn() {
    const TaskSpec t = parseTaskDocument(
        doc(R"("labels":{"a":"b"},"tty":false,"groups":["wheel"],"dns_config":{},)"
            R"("isolation":"default","command":[],"args":[],"env":[],"healthcheck":null)",
            R"("networks":[{"id":"x"}],)"));
    CPPUNIT_ASSERT(t.command.empty());
    CPPUNIT_ASSERT(t.healthcheckJson.empty());
    CPPUNIT_ASSERT(t.netnsPath.empty());
    // The agent's document as Agent::runtimeDocument writes it for a bare service.
    const TaskSpec minimal = parseTaskDocument(
        R"({"schema":"shoal.task/v1","id":"abc","service_id":"","slot":0,"node_id":"",)"
        R"("name":"","spec":{"image":"busybox","command":[],"args":[],"env":[],"workdir":"",)"
        R"("user":"","stop_signal":"","stop_grace_ns":10000000000},"networks":[]})");
    CPPUNIT_ASSERT_EQUAL(std::string("busybox"), minimal.image);
    CPPUNIT_ASSERT_EQUAL(int64_t{10000000000}, minimal.stopGraceNs);
  }

  void testRefusesWrongTypesNamingTheField() {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {doc(R"("command":"sh")"), "\"spec.command\" must be an array"},
        {doc(R"("args":[1])"), "\"spec.args\" must be an array of strings"},
        {doc(R"("env":"A=1")"), "\"spec.env\" must be an array"},
        {doc(R"("env":["=x"])"), "\"spec.env\" has an entry with no name"},
        {doc(R"("workdir":5)"), "\"spec.workdir\" must be a string"},
        {doc(R"("workdir":"rel")"), "\"spec.workdir\" must be an absolute path"},
        {doc(R"("stop_grace_ns":"10s")"), "\"spec.stop_grace_ns\" must be an integer"},
        {doc(R"("stop_grace_ns":1.5)"), "\"spec.stop_grace_ns\" must be an integer"},
        {doc(R"("read_only":"yes")"), "\"spec.read_only\" must be true or false"},
        {doc(R"("sysctls":{"a":1})"), "\"spec.sysctls\" must map names to strings"},
        {doc(R"("ulimits":[{"name":"nofile","soft":10,"hard":5}])"), "\"spec.ulimits[0].soft\""},
        {doc(R"("healthcheck":["CMD"])"), "\"spec.healthcheck\" must be an object"},
        {doc(R"("mounts":{})"), "\"spec.mounts\" must be an array"},
        {doc(R"("mounts":[{"Type":"npipe","Target":"/x"}])"), "\"spec.mounts[0].Type\""},
        {doc(R"("mounts":[{"Type":"bind","Source":"rel","Target":"/x"}])"),
         "\"spec.mounts[0].Source\" must be an absolute path"},
        {doc(R"("mounts":[{"Type":"tmpfs","Target":"x"}])"),
         "\"spec.mounts[0].Target\" must be an absolute path"},
        {doc(R"("resources":{"Limits":{"MemoryBytes":"1G"}})"),
         "\"spec.resources.Limits.MemoryBytes\" must be an integer"},
        {doc(R"("resources":{"Limits":{"MemoryBytes":1024}})"),
         "\"spec.resources.Limits.MemoryBytes\" must be at least 6 MiB"},
        {doc(R"("resources":{"Limits":{"NanoCPUs":-1}})"),
         "\"spec.resources.Limits.NanoCPUs\" must not be negative"},
        {doc("", R"("netns":"run/netns/x",)"), "\"netns\" must be an absolute path"},
        {doc("", R"("mounts":[{"source":"/a"}],)"), "\"mounts[0].target\" is required"},
        {doc("", R"("slot":"2",)"), "\"slot\" must be an integer"},
    };
    for (const auto& [json, expected] : cases) {
      const std::string message = parseError(json);
      CPPUNIT_ASSERT_MESSAGE(json + " -> " + message, contains(message, expected));
      CPPUNIT_ASSERT_MESSAGE(message, contains(message, "task t0123456789abcdef"));
    }
  }

  void testRefusesMissingRequiredFields() {
    CPPUNIT_ASSERT(contains(parseError("[]"), "must be a JSON object"));
    CPPUNIT_ASSERT(contains(parseError("{"), "not valid JSON"));
    CPPUNIT_ASSERT(contains(parseError(R"({"spec":{"image":"x"}})"), "\"id\" is required"));
    CPPUNIT_ASSERT(contains(parseError(R"({"id":"a/b","spec":{"image":"x"}})"), "\"id\""));
    CPPUNIT_ASSERT(contains(parseError(R"({"id":"a"})"), "\"spec\" is required"));
    CPPUNIT_ASSERT(contains(parseError(R"({"id":"a","spec":{}})"), "\"spec.image\" is required"));
    CPPUNIT_ASSERT(contains(parseError(R"({"id":"a","spec":{"image":""}})"), "must not be empty"));
    CPPUNIT_ASSERT(contains(parseError(R"({"id":"a","schema":"v2","spec":{"image":"x"}})"),
                            "\"schema\" must be \"shoal.task/v1\""));
  }

  void testMountsDefaultToVolumeAndNeedTargets() {
    const TaskSpec t = parseTaskDocument(doc(R"("mounts":[{"Source":"data","Target":"/data"}])"));
    CPPUNIT_ASSERT_EQUAL(std::string("volume"), t.mounts[0].type);
    CPPUNIT_ASSERT(contains(parseError(doc(R"("mounts":[{"Type":"bind","Source":"/a"}])")),
                            "\"spec.mounts[0].Target\" is required"));
  }

  void testDnsAndAddressesAreReadWhenPresent() {
    const TaskSpec t = parseTaskDocument(
        doc("", R"("netns":"/run/shoal/netns/t1","dns":{"nameservers":["127.0.0.11"],)"
                R"("search":["svc.example"],"options":["ndots:0","timeout:2"]},)"
                R"("addresses":["10.0.1.5","10.0.2.5"],)"));
    CPPUNIT_ASSERT(t.dns.has_value());
    CPPUNIT_ASSERT(t.dns->nameservers == Strings({"127.0.0.11"}));
    CPPUNIT_ASSERT(t.dns->search == Strings({"svc.example"}));
    CPPUNIT_ASSERT(t.dns->options == Strings({"ndots:0", "timeout:2"}));
    CPPUNIT_ASSERT(t.addresses == Strings({"10.0.1.5", "10.0.2.5"}));
    // The agent's shape, empty lists included; and no "dns" at all is today's document.
    const TaskSpec empty = parseTaskDocument(
        doc("", R"("dns":{"nameservers":["127.0.0.11"],"search":[],"options":[]},)"));
    CPPUNIT_ASSERT(empty.dns && empty.dns->search.empty() && empty.addresses.empty());
    const TaskSpec none = parseTaskDocument(doc(""));
    CPPUNIT_ASSERT(!none.dns.has_value());
    CPPUNIT_ASSERT(!parseTaskDocument(doc("", R"("dns":null,)")).dns.has_value());
  }

  void testRefusesBadDnsAndAddressesNamingTheField() {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {R"("dns":["127.0.0.11"],)", "\"dns\" must be an object"},
        {R"("dns":{"nameservers":"127.0.0.11"},)", "\"dns.nameservers\" must be an array"},
        {R"("dns":{"nameservers":[11]},)", "\"dns.nameservers\" must be an array of strings"},
        {R"("dns":{"nameservers":["::1"]},)",
         "\"dns.nameservers\" has \"::1\", which is not an IPv4 address"},
        {R"("dns":{"nameservers":["10.0.0.256"]},)", "\"dns.nameservers\" has \"10.0.0.256\""},
        {R"("dns":{"nameservers":["1.1.1.1","1.0.0.1","8.8.8.8","8.8.4.4"]},)",
         "\"dns.nameservers\" has 4 entries; glibc reads at most 3"},
        {R"("dns":{"search":["a b"]},)", "\"dns.search\" has an empty entry or one with blanks"},
        {R"("dns":{"search":[""]},)", "\"dns.search\" has an empty entry"},
        {R"("dns":{"options":["ndots:0\nnameserver 1.2.3.4"]},)", "\"dns.options\" has an empty"},
        {R"("addresses":"10.0.1.5",)", "\"addresses\" must be an array"},
        {R"("addresses":["10.0.1.5/24"],)",
         "\"addresses\" has \"10.0.1.5/24\", which is not an IPv4 address"},
    };
    for (const auto& [top, expected] : cases) {
      const std::string message = parseError(doc("", top));
      CPPUNIT_ASSERT_MESSAGE(top + " -> " + message, contains(message, expected));
      CPPUNIT_ASSERT_MESSAGE(message, contains(message, "task t0123456789abcdef"));
    }
  }
};

class OciSpecTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(OciSpecTest);
  CPPUNIT_TEST(testProcessArgsFollowDockersEntrypointAndCmdRules);
  CPPUNIT_TEST(testNoCommandAtAllIsRefused);
  CPPUNIT_TEST(testEnvMergesTaskOverImage);
  CPPUNIT_TEST(testDefaultCapabilitiesWithAddAndDrop);
  CPPUNIT_TEST(testDefaultSeccompFollowsTheCapabilities);
  CPPUNIT_TEST(testUsersResolveFromTheRootfsPasswdAndGroup);
  CPPUNIT_TEST(testPasswdSymlinkStaysInsideTheRootfs);
  CPPUNIT_TEST(testHostnameDefaultsToTwelveCharsOfTheId);
  CPPUNIT_TEST(testLimitsBecomeCgroupResources);
  CPPUNIT_TEST(testReadonlyRootfsNetnsAndNamespaces);
  CPPUNIT_TEST(testDockersDefaultMountsMaskedAndReadonlyPaths);
  CPPUNIT_TEST(testTaskMountsAreSortedAndReplaceDefaults);
  CPPUNIT_TEST(testVolumeMountNeedsAPluginMount);
  CPPUNIT_TEST(testSysctlsRlimitsAndRefusals);
  CPPUNIT_TEST(testStopSignals);
  CPPUNIT_TEST(testDnsGivesResolvConfHostsAndHostnameFiles);
  CPPUNIT_TEST(testDnsFilesAreBoundOverTheImagesEtcFiles);
  CPPUNIT_TEST(testWithoutDnsTheImagesEtcFilesStay);
  CPPUNIT_TEST(testTaskMountsOverEtcFilesWinAndBadHostnamesAreRefused);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testProcessArgsFollowDockersEntrypointAndCmdRules() {
    struct Case {
      Strings command, args, entrypoint, cmd, expected;
    };
    const std::vector<Case> cases = {
        // neither given: the image's entrypoint + cmd
        {{}, {}, {"/ep"}, {"c1", "c2"}, {"/ep", "c1", "c2"}},
        {{}, {}, {}, {"/bin/sh"}, {"/bin/sh"}},
        // args only: the image's entrypoint + the task's args
        {{}, {"a1"}, {"/ep"}, {"c1"}, {"/ep", "a1"}},
        {{}, {"/bin/true"}, {}, {"c1"}, {"/bin/true"}},
        // command only: replaces the entrypoint and drops the image's cmd
        {{"/cmd"}, {}, {"/ep"}, {"c1"}, {"/cmd"}},
        // both: command + args
        {{"/cmd", "x"}, {"a1", "a2"}, {"/ep"}, {"c1"}, {"/cmd", "x", "a1", "a2"}},
    };
    for (const Case& c : cases) {
      TaskSpec t = baseTask();
      t.command = c.command;
      t.args = c.args;
      ImageDefaults image;
      image.entrypoint = c.entrypoint;
      image.cmd = c.cmd;
      CPPUNIT_ASSERT(processArgs(t, image) == c.expected);
      CPPUNIT_ASSERT(strings(config(t, image)->getObject("process")->getArray("args")) ==
                     c.expected);
    }
  }

  void testNoCommandAtAllIsRefused() {
    TaskSpec t = baseTask();
    t.command.clear();
    const std::string message = errorOf([&] { processArgs(t, ImageDefaults{}); });
    CPPUNIT_ASSERT(contains(message, "no command specified"));
    CPPUNIT_ASSERT(contains(message, t.id));
  }

  void testEnvMergesTaskOverImage() {
    TaskSpec t = baseTask();
    t.env = {"B=task", "C=new", "D"};
    ImageDefaults image;
    image.env = {"PATH=/image/bin", "A=1", "B=image", "D=gone"};
    CPPUNIT_ASSERT(
        processEnv(t, image, "host1", "/root") ==
        Strings({"HOSTNAME=host1", "PATH=/image/bin", "A=1", "B=task", "C=new", "HOME=/root"}));
    // No PATH anywhere: Docker's default first; HOME and HOSTNAME given are kept.
    t.env = {"HOME=/h", "HOSTNAME=mine"};
    CPPUNIT_ASSERT(processEnv(t, ImageDefaults{}, "host1", "/root") ==
                   Strings({"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                            "HOSTNAME=mine", "HOME=/h"}));
    Strings env = strings(config(t, image)->getObject("process")->getArray("env"));
    CPPUNIT_ASSERT(std::find(env.begin(), env.end(), "HOME=/h") != env.end());
    // A terminal gets Docker's TERM=xterm, unless the image or the task says otherwise.
    t.env.clear();
    t.tty = true;
    CPPUNIT_ASSERT(processEnv(t, ImageDefaults{}, "host1", "") ==
                   Strings({"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                            "TERM=xterm", "HOSTNAME=host1"}));
    image.env = {"TERM=vt100"};
    env = processEnv(t, image, "host1", "");
    CPPUNIT_ASSERT(std::find(env.begin(), env.end(), "TERM=vt100") != env.end());
    CPPUNIT_ASSERT(std::find(env.begin(), env.end(), "TERM=xterm") == env.end());
  }

  // The default seccomp filter: every call allowed but Docker's refused ones; a capability
  // gives its group back (SYS_ADMIN: mount, unshare, namespace-making clone); off on request.
  void testDefaultSeccompFollowsTheCapabilities() {
    TaskSpec t = baseTask();
    auto deniedBy = [](const Object::Ptr& cfg) {
      std::map<std::string, int> out;  // call -> errno (clone: the number of flag rules)
      auto sc = cfg->getObject("linux")->getObject("seccomp");
      if (!sc) return out;
      CPPUNIT_ASSERT_EQUAL(std::string("SCMP_ACT_ALLOW"),
                           sc->getValue<std::string>("defaultAction"));
      CPPUNIT_ASSERT(sc->getArray("architectures")->size() >= 2);
      auto rules = sc->getArray("syscalls");
      for (std::size_t i = 0; i < rules->size(); ++i) {
        auto r = rules->getObject(static_cast<unsigned>(i));
        CPPUNIT_ASSERT_EQUAL(std::string("SCMP_ACT_ERRNO"), r->getValue<std::string>("action"));
        for (const std::string& name : strings(r->getArray("names"))) {
          if (name == "clone") {
            ++out[name];
            CPPUNIT_ASSERT(r->getArray("args")->size() == 1);
          } else {
            out[name] = r->getValue<int>("errnoRet");
          }
        }
      }
      return out;
    };
    auto plain = deniedBy(config(t));
    for (const char* call : {"mount", "unshare", "setns", "keyctl", "bpf", "open_by_handle_at",
                             "init_module", "reboot", "kexec_load", "settimeofday", "iopl"}) {
      CPPUNIT_ASSERT_MESSAGE(call, plain.count(call) == 1 && plain[call] == 1);  // EPERM
    }
    CPPUNIT_ASSERT_EQUAL(38, plain["clone3"]);  // ENOSYS: libc falls back to clone
    CPPUNIT_ASSERT_EQUAL(7, plain["clone"]);    // one rule per namespace flag
    for (const char* allowed : {"read", "execve", "ptrace", "chown", "socket"}) {
      CPPUNIT_ASSERT_MESSAGE(allowed, plain.count(allowed) == 0);
    }
    t.capAdd = {"SYS_ADMIN", "SYS_TIME"};
    auto admin = deniedBy(config(t));
    for (const char* call : {"mount", "unshare", "setns", "clone", "clone3", "settimeofday"}) {
      CPPUNIT_ASSERT_MESSAGE(call, admin.count(call) == 0);
    }
    CPPUNIT_ASSERT(admin.count("keyctl") == 1 && admin.count("reboot") == 1);
    Poco::JSON::Parser parser;
    auto off = parser.parse(buildOciConfig(t, {}, "/nonexistent-rootfs", "/shoal/x", "", "", false))
                   .extract<Object::Ptr>();
    CPPUNIT_ASSERT(!off->getObject("linux")->has("seccomp"));
  }

  void testDefaultCapabilitiesWithAddAndDrop() {
    Strings defaults;
    for (const std::string& c : kDefaultCapabilities) defaults.push_back("CAP_" + c);
    std::sort(defaults.begin(), defaults.end());
    CPPUNIT_ASSERT_EQUAL(std::size_t{14}, defaults.size());
    CPPUNIT_ASSERT(capabilities({}, {}) == defaults);
    Strings caps = capabilities({"net_admin", "CAP_SYS_PTRACE"}, {"MKNOD", "cap_net_raw"});
    CPPUNIT_ASSERT_EQUAL(std::size_t{14}, caps.size());
    CPPUNIT_ASSERT(std::count(caps.begin(), caps.end(), "CAP_NET_ADMIN") == 1);
    CPPUNIT_ASSERT(std::count(caps.begin(), caps.end(), "CAP_SYS_PTRACE") == 1);
    CPPUNIT_ASSERT(std::count(caps.begin(), caps.end(), "CAP_MKNOD") == 0);
    CPPUNIT_ASSERT(std::count(caps.begin(), caps.end(), "CAP_NET_RAW") == 0);
    CPPUNIT_ASSERT_EQUAL(std::size_t{41}, capabilities({"ALL"}, {}).size());
    CPPUNIT_ASSERT_EQUAL(std::size_t{40}, capabilities({"all"}, {"SYS_ADMIN"}).size());
    CPPUNIT_ASSERT(capabilities({"CHOWN"}, {"ALL"}) == Strings({"CAP_CHOWN"}));
    CPPUNIT_ASSERT(capabilities({}, {"ALL"}).empty());
    TaskSpec t = baseTask();
    t.capAdd = {"NET_ADMIN"};
    Object::Ptr c = config(t)->getObject("process")->getObject("capabilities");
    for (const char* set : {"bounding", "effective", "permitted"}) {
      Strings s = strings(c->getArray(set));
      CPPUNIT_ASSERT_EQUAL(std::size_t{15}, s.size());
      CPPUNIT_ASSERT(std::count(s.begin(), s.end(), "CAP_NET_ADMIN") == 1);
    }
    t.capAdd = {"CAP_FLY"};
    const std::string message = errorOf([&] { config(t); });
    CPPUNIT_ASSERT(contains(message, "unknown capability \"CAP_FLY\""));
    CPPUNIT_ASSERT(contains(message, t.id));
  }

  void testUsersResolveFromTheRootfsPasswdAndGroup() {
    TempDir root;
    root.write("etc/passwd",
               "root:x:0:0:root:/root:/bin/sh\n"
               "# comment\n"
               "app:x:1000:1000:App:/home/app:/bin/sh\n"
               "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n");
    root.write("etc/group",
               "root:x:0:\nwheel:x:10:app,other\napp:x:1000:\nstaff:x:50:app\n"
               "nogroup:x:65534:\n");
    auto user = [&](const std::string& u) { return resolveUser(u, root.path()); };
    ResolvedUser r = user("");
    CPPUNIT_ASSERT_EQUAL(uint32_t{0}, r.uid);
    CPPUNIT_ASSERT_EQUAL(std::string("/root"), r.home);
    r = user("app");
    CPPUNIT_ASSERT_EQUAL(uint32_t{1000}, r.uid);
    CPPUNIT_ASSERT_EQUAL(uint32_t{1000}, r.gid);
    CPPUNIT_ASSERT_EQUAL(std::string("/home/app"), r.home);
    CPPUNIT_ASSERT(r.additionalGids == std::vector<uint32_t>({10, 50}));
    r = user("1000");  // a uid in passwd: its gid and groups
    CPPUNIT_ASSERT_EQUAL(uint32_t{1000}, r.gid);
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, r.additionalGids.size());
    r = user("app:nogroup");
    CPPUNIT_ASSERT_EQUAL(uint32_t{1000}, r.uid);
    CPPUNIT_ASSERT_EQUAL(uint32_t{65534}, r.gid);
    CPPUNIT_ASSERT(r.additionalGids.empty());
    r = user("4242:77");  // numeric, in neither file
    CPPUNIT_ASSERT_EQUAL(uint32_t{4242}, r.uid);
    CPPUNIT_ASSERT_EQUAL(uint32_t{77}, r.gid);
    CPPUNIT_ASSERT(r.home.empty());
    r = user("4242");
    CPPUNIT_ASSERT_EQUAL(uint32_t{0}, r.gid);
    CPPUNIT_ASSERT(contains(errorOf([&] { user("ghost"); }),
                            "unable to find user ghost: no matching entries in passwd file"));
    CPPUNIT_ASSERT(contains(errorOf([&] { user("app:ghosts"); }),
                            "unable to find group ghosts: no matching entries in group file"));
    // Without /etc/passwd only numeric users work.
    TempDir bare;
    CPPUNIT_ASSERT_EQUAL(uint32_t{7}, resolveUser("7:8", bare.path()).uid);
    CPPUNIT_ASSERT(!errorOf([&] { resolveUser("app", bare.path()); }).empty());
    // In config.json: uid, gid, additionalGids; HOME from passwd.
    TaskSpec t = baseTask();
    t.user = "app";
    Object::Ptr process = config(t, {}, root.path())->getObject("process");
    CPPUNIT_ASSERT_EQUAL(1000, process->getObject("user")->getValue<int>("uid"));
    CPPUNIT_ASSERT_EQUAL(1000, process->getObject("user")->getValue<int>("gid"));
    CPPUNIT_ASSERT_EQUAL(std::size_t{2},
                         process->getObject("user")->getArray("additionalGids")->size());
    Strings env = strings(process->getArray("env"));
    CPPUNIT_ASSERT(std::find(env.begin(), env.end(), "HOME=/home/app") != env.end());
    // The image's user applies when the task gives none.
    t.user.clear();
    ImageDefaults image;
    image.user = "nobody";
    CPPUNIT_ASSERT_EQUAL(65534, config(t, image, root.path())
                                    ->getObject("process")
                                    ->getObject("user")
                                    ->getValue<int>("uid"));
    t.user = "ghost";
    CPPUNIT_ASSERT(contains(errorOf([&] { config(t, {}, root.path()); }), "task " + t.id));
  }

  void testPasswdSymlinkStaysInsideTheRootfs() {
    TempDir root;
    root.write("real/passwd", "inside:x:4321:4321::/in:/bin/sh\n");
    std::filesystem::create_directories(root.file("etc"));
    // An absolute link (and one climbing out) resolve inside the rootfs, not on the host.
    symlink("/../../../real/passwd", root.file("etc/passwd").c_str());
    CPPUNIT_ASSERT_EQUAL(uint32_t{4321}, resolveUser("inside", root.path()).uid);
    CPPUNIT_ASSERT_EQUAL(root.path() + "/real/passwd", resolveInRoot(root.path(), "/etc/passwd"));
    CPPUNIT_ASSERT_EQUAL(root.path() + "/x", resolveInRoot(root.path(), "/../../x"));
    symlink("loop", root.file("loop").c_str());
    resolveInRoot(root.path(), "/loop/x");  // terminates
  }

  void testHostnameDefaultsToTwelveCharsOfTheId() {
    TaskSpec t = baseTask();
    CPPUNIT_ASSERT_EQUAL(std::string("t0123456789a"), config(t)->getValue<std::string>("hostname"));
    Strings env = strings(config(t)->getObject("process")->getArray("env"));
    CPPUNIT_ASSERT(std::find(env.begin(), env.end(), "HOSTNAME=t0123456789a") != env.end());
    t.hostname = "web-1";
    CPPUNIT_ASSERT_EQUAL(std::string("web-1"), config(t)->getValue<std::string>("hostname"));
  }

  void testLimitsBecomeCgroupResources() {
    TaskSpec t = baseTask();
    Object::Ptr linux = config(t)->getObject("linux");
    CPPUNIT_ASSERT_EQUAL(std::string("/shoal/") + t.id,
                         linux->getValue<std::string>("cgroupsPath"));
    Object::Ptr resources = linux->getObject("resources");
    CPPUNIT_ASSERT(!resources->has("memory"));
    CPPUNIT_ASSERT(!resources->has("cpu"));
    CPPUNIT_ASSERT(!resources->has("pids"));
    CPPUNIT_ASSERT(resources->getArray("devices")->size() > 0);
    t.memoryLimitBytes = 32 << 20;
    t.memoryReservationBytes = 16 << 20;
    t.nanoCpus = 1500000000;  // 1.5 CPUs
    t.pidsLimit = 50;
    resources = config(t)->getObject("linux")->getObject("resources");
    CPPUNIT_ASSERT_EQUAL(int64_t{32 << 20},
                         resources->getObject("memory")->getValue<int64_t>("limit"));
    CPPUNIT_ASSERT_EQUAL(int64_t{16 << 20},
                         resources->getObject("memory")->getValue<int64_t>("reservation"));
    CPPUNIT_ASSERT(!resources->getObject("memory")->has("swap"));  // none unless the runtime says
    CPPUNIT_ASSERT_EQUAL(int64_t{150000}, resources->getObject("cpu")->getValue<int64_t>("quota"));
    CPPUNIT_ASSERT_EQUAL(int64_t{100000}, resources->getObject("cpu")->getValue<int64_t>("period"));
    CPPUNIT_ASSERT_EQUAL(int64_t{50}, resources->getObject("pids")->getValue<int64_t>("limit"));
    // A swap limit (memory + swap, as OCI counts it) goes with a memory limit, never below it.
    t.memorySwapBytes = 64 << 20;
    CPPUNIT_ASSERT_EQUAL(int64_t{64 << 20}, config(t)
                                                ->getObject("linux")
                                                ->getObject("resources")
                                                ->getObject("memory")
                                                ->getValue<int64_t>("swap"));
    t.memorySwapBytes = 16 << 20;
    CPPUNIT_ASSERT(
        !config(t)->getObject("linux")->getObject("resources")->getObject("memory")->has("swap"));
    t.memorySwapBytes = 0;
    t.nanoCpus = 1000;  // below the kernel's 1 ms minimum quota
    CPPUNIT_ASSERT_EQUAL(int64_t{1000}, config(t)
                                            ->getObject("linux")
                                            ->getObject("resources")
                                            ->getObject("cpu")
                                            ->getValue<int64_t>("quota"));
  }

  void testReadonlyRootfsNetnsAndNamespaces() {
    TaskSpec t = baseTask();
    Object::Ptr cfg = config(t, {}, "/b/rootfs");
    CPPUNIT_ASSERT_EQUAL(std::string("1.0.2"), cfg->getValue<std::string>("ociVersion"));
    CPPUNIT_ASSERT_EQUAL(std::string("/b/rootfs"),
                         cfg->getObject("root")->getValue<std::string>("path"));
    CPPUNIT_ASSERT(!cfg->getObject("root")->getValue<bool>("readonly"));
    Object::Ptr process = cfg->getObject("process");
    CPPUNIT_ASSERT(!process->getValue<bool>("terminal"));
    CPPUNIT_ASSERT(!process->getValue<bool>("noNewPrivileges"));
    TaskSpec tty = baseTask();
    tty.tty = true;
    CPPUNIT_ASSERT(config(tty)->getObject("process")->getValue<bool>("terminal"));
    CPPUNIT_ASSERT_EQUAL(std::string("/"), process->getValue<std::string>("cwd"));
    Array::Ptr ns = cfg->getObject("linux")->getArray("namespaces");
    Strings types;
    for (std::size_t i = 0; i < ns->size(); ++i) {
      Object::Ptr n = ns->getObject(static_cast<unsigned>(i));
      types.push_back(n->getValue<std::string>("type"));
      CPPUNIT_ASSERT(!n->has("path"));
    }
    CPPUNIT_ASSERT(types == Strings({"pid", "ipc", "uts", "mount", "network"}));
    t.readOnly = true;
    t.netnsPath = "/run/netns/t1";
    t.workdir = "/srv";
    cfg = config(t);
    CPPUNIT_ASSERT(cfg->getObject("root")->getValue<bool>("readonly"));
    CPPUNIT_ASSERT_EQUAL(std::string("/srv"),
                         cfg->getObject("process")->getValue<std::string>("cwd"));
    ns = cfg->getObject("linux")->getArray("namespaces");
    Object::Ptr net = ns->getObject(4);
    CPPUNIT_ASSERT_EQUAL(std::string("network"), net->getValue<std::string>("type"));
    CPPUNIT_ASSERT_EQUAL(std::string("/run/netns/t1"), net->getValue<std::string>("path"));
    // The image's working directory applies when the task gives none.
    t.workdir.clear();
    ImageDefaults image;
    image.workingDir = "/app";
    CPPUNIT_ASSERT_EQUAL(std::string("/app"),
                         config(t, image)->getObject("process")->getValue<std::string>("cwd"));
    CPPUNIT_ASSERT(contains(errorOf([&] { buildOciConfig(t, image, "rel", "/x"); }), "absolute"));
  }

  void testDockersDefaultMountsMaskedAndReadonlyPaths() {
    Object::Ptr cfg = config(baseTask());
    Strings destinations;
    Array::Ptr mounts = cfg->getArray("mounts");
    for (std::size_t i = 0; i < mounts->size(); ++i) {
      destinations.push_back(
          mounts->getObject(static_cast<unsigned>(i))->getValue<std::string>("destination"));
    }
    CPPUNIT_ASSERT(destinations == Strings({"/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup",
                                            "/dev/mqueue", "/dev/shm"}));
    Strings sys = strings(findMount(cfg, "/sys")->getArray("options"));
    CPPUNIT_ASSERT(std::count(sys.begin(), sys.end(), "ro") == 1);
    Strings cg = strings(findMount(cfg, "/sys/fs/cgroup")->getArray("options"));
    CPPUNIT_ASSERT(std::count(cg.begin(), cg.end(), "ro") == 1);
    Strings masked = strings(cfg->getObject("linux")->getArray("maskedPaths"));
    for (const char* p : {"/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware",
                          "/proc/acpi", "/proc/scsi"}) {
      CPPUNIT_ASSERT_MESSAGE(p, std::count(masked.begin(), masked.end(), p) == 1);
    }
    CPPUNIT_ASSERT(
        strings(cfg->getObject("linux")->getArray("readonlyPaths")) ==
        Strings({"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}));
  }

  void testTaskMountsAreSortedAndReplaceDefaults() {
    TaskSpec t = parseTaskDocument(doc(
        R"("command":["/bin/sh"],"mounts":[)"
        R"({"Type":"bind","Source":"/host/a/b","Target":"/data/sub","ReadOnly":true},)"
        R"({"Type":"bind","Source":"/host/a","Target":"/data/","BindOptions":{"Propagation":"rshared"}},)"
        R"({"Type":"tmpfs","Target":"/dev/shm","TmpfsOptions":{"SizeBytes":1048576,"Mode":1023}}])",
        R"("mounts":[{"source":"/secrets/t","target":"/run/secrets/s","options":["rbind","ro"]},)"
        R"({"source":"/vol","target":"/srv"}],)"));
    Object::Ptr cfg = config(t);
    Array::Ptr mounts = cfg->getArray("mounts");
    Strings destinations;
    for (std::size_t i = 0; i < mounts->size(); ++i) {
      destinations.push_back(
          mounts->getObject(static_cast<unsigned>(i))->getValue<std::string>("destination"));
    }
    // Defaults (without the replaced /dev/shm), then the task's, parents before children.
    CPPUNIT_ASSERT(destinations ==
                   Strings({"/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue",
                            "/data", "/srv", "/data/sub", "/dev/shm", "/run/secrets/s"}));
    Object::Ptr data = findMount(cfg, "/data");
    CPPUNIT_ASSERT_EQUAL(std::string("bind"), data->getValue<std::string>("type"));
    CPPUNIT_ASSERT_EQUAL(std::string("/host/a"), data->getValue<std::string>("source"));
    CPPUNIT_ASSERT(strings(data->getArray("options")) == Strings({"rbind", "rshared"}));
    CPPUNIT_ASSERT(strings(findMount(cfg, "/data/sub")->getArray("options")) ==
                   Strings({"rbind", "rprivate", "ro"}));
    Object::Ptr shm = findMount(cfg, "/dev/shm");
    CPPUNIT_ASSERT_EQUAL(std::string("tmpfs"), shm->getValue<std::string>("type"));
    CPPUNIT_ASSERT(strings(shm->getArray("options")) ==
                   Strings({"nosuid", "nodev", "noexec", "size=1048576", "mode=1777"}));
    CPPUNIT_ASSERT(strings(findMount(cfg, "/run/secrets/s")->getArray("options")) ==
                   Strings({"rbind", "ro"}));
    Object::Ptr srv = findMount(cfg, "/srv");
    CPPUNIT_ASSERT_EQUAL(std::string("bind"), srv->getValue<std::string>("type"));
    CPPUNIT_ASSERT(strings(srv->getArray("options")) == Strings({"rbind", "rprivate"}));
    // Two mounts on one target are refused.
    t.mounts.push_back(t.mounts[0]);
    CPPUNIT_ASSERT(contains(errorOf([&] { config(t); }), "two mounts have the target /data/sub"));
  }

  void testVolumeMountNeedsAPluginMount() {
    TaskSpec t = parseTaskDocument(
        doc(R"("command":["/bin/sh"],"mounts":[{"Type":"volume","Source":"db","Target":"/db"}])"));
    CPPUNIT_ASSERT(contains(errorOf([&] { config(t); }), "volume mount at /db"));
    t.extraMounts.push_back({"/var/lib/shoal/volumes/db", "/db", "", {}});
    CPPUNIT_ASSERT_EQUAL(std::string("/var/lib/shoal/volumes/db"),
                         findMount(config(t), "/db")->getValue<std::string>("source"));
  }

  void testSysctlsRlimitsAndRefusals() {
    TaskSpec t = baseTask();
    t.sysctls = {{"net.core.somaxconn", "1024"}};
    t.ulimits = {{"nofile", 1024, 4096}, {"NPROC", 10, 20}};
    Object::Ptr cfg = config(t);
    CPPUNIT_ASSERT_EQUAL(
        std::string("1024"),
        cfg->getObject("linux")->getObject("sysctl")->getValue<std::string>("net.core.somaxconn"));
    Array::Ptr rlimits = cfg->getObject("process")->getArray("rlimits");
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, rlimits->size());
    CPPUNIT_ASSERT_EQUAL(std::string("RLIMIT_NOFILE"),
                         rlimits->getObject(0)->getValue<std::string>("type"));
    CPPUNIT_ASSERT_EQUAL(1024, rlimits->getObject(0)->getValue<int>("soft"));
    CPPUNIT_ASSERT_EQUAL(4096, rlimits->getObject(0)->getValue<int>("hard"));
    CPPUNIT_ASSERT_EQUAL(std::string("RLIMIT_NPROC"),
                         rlimits->getObject(1)->getValue<std::string>("type"));
    t.ulimits = {{"fly", 1, 1}};
    CPPUNIT_ASSERT(contains(errorOf([&] { config(t); }), "unknown ulimit \"fly\""));
    t.ulimits.clear();
    // --init: refused without an init binary; with one, it runs the command as PID 1.
    t.init = true;
    CPPUNIT_ASSERT(contains(errorOf([&] { config(t); }), "\"init\" needs an init binary"));
    Poco::JSON::Parser parser;
    Object::Ptr withInit = parser
                               .parse(buildOciConfig(t, {}, "/nonexistent-rootfs", "/shoal/" + t.id,
                                                     "/usr/bin/tini-static"))
                               .extract<Object::Ptr>();
    Strings args = strings(withInit->getObject("process")->getArray("args"));
    CPPUNIT_ASSERT(args.size() >= 3 && args[0] == "/sbin/docker-init" && args[1] == "--");
    bool bound = false;
    Array::Ptr mounts = withInit->getArray("mounts");
    for (std::size_t i = 0; i < mounts->size(); ++i) {
      auto m = mounts->getObject(static_cast<unsigned>(i));
      bound |= m->getValue<std::string>("destination") == "/sbin/docker-init" &&
               m->getValue<std::string>("source") == "/usr/bin/tini-static";
    }
    CPPUNIT_ASSERT(bound);
  }

  void testStopSignals() {
    CPPUNIT_ASSERT_EQUAL(SIGTERM, parseSignal(""));
    CPPUNIT_ASSERT_EQUAL(SIGINT, parseSignal("SIGINT"));
    CPPUNIT_ASSERT_EQUAL(SIGQUIT, parseSignal("quit"));
    CPPUNIT_ASSERT_EQUAL(SIGUSR1, parseSignal("10"));
    CPPUNIT_ASSERT_EQUAL(SIGRTMIN + 3, parseSignal("SIGRTMIN+3"));
    CPPUNIT_ASSERT_EQUAL(0, parseSignal("SIGFLY"));
    CPPUNIT_ASSERT_EQUAL(0, parseSignal("99"));
    TaskSpec t = baseTask();
    ImageDefaults image;
    CPPUNIT_ASSERT_EQUAL(SIGTERM, stopSignal(t, image));
    image.stopSignal = "SIGQUIT";
    CPPUNIT_ASSERT_EQUAL(SIGQUIT, stopSignal(t, image));
    t.stopSignal = "SIGHUP";
    CPPUNIT_ASSERT_EQUAL(SIGHUP, stopSignal(t, image));
    t.stopSignal = "NOPE";
    CPPUNIT_ASSERT(contains(errorOf([&] { stopSignal(t, image); }), "\"NOPE\" is not a signal"));
  }

  void testDnsGivesResolvConfHostsAndHostnameFiles() {
    TaskSpec t = dnsTask();
    const std::vector<NetworkFile> files = networkFiles(t);
    CPPUNIT_ASSERT_EQUAL(std::size_t{3}, files.size());
    CPPUNIT_ASSERT_EQUAL(std::string("resolv.conf"), files[0].name);
    CPPUNIT_ASSERT_EQUAL(std::string("/etc/resolv.conf"), files[0].target);
    CPPUNIT_ASSERT_EQUAL(std::string("nameserver 127.0.0.11\noptions ndots:0\n"), files[0].content);
    CPPUNIT_ASSERT_EQUAL(std::string("hosts"), files[1].name);
    CPPUNIT_ASSERT_EQUAL(std::string("/etc/hosts"), files[1].target);
    CPPUNIT_ASSERT_EQUAL(std::string("127.0.0.1\tlocalhost\n"
                                     "::1\tlocalhost ip6-localhost ip6-loopback\n"
                                     "10.0.1.5\tt0123456789a\n"),
                         files[1].content);
    CPPUNIT_ASSERT_EQUAL(std::string("/etc/hostname"), files[2].target);
    CPPUNIT_ASSERT_EQUAL(std::string("t0123456789a\n"), files[2].content);
    // Search domains and several nameservers in order; the spec's hostname; no address: no
    // line for the hostname in hosts.
    t.dns->nameservers = {"10.0.0.2", "10.0.0.3"};
    t.dns->search = {"a.example", "b.example"};
    t.dns->options = {};
    t.addresses.clear();
    t.hostname = "web-1";
    const std::vector<NetworkFile> other = networkFiles(t);
    CPPUNIT_ASSERT_EQUAL(std::string("nameserver 10.0.0.2\nnameserver 10.0.0.3\n"
                                     "search a.example b.example\n"),
                         other[0].content);
    CPPUNIT_ASSERT_EQUAL(std::string("127.0.0.1\tlocalhost\n"
                                     "::1\tlocalhost ip6-localhost ip6-loopback\n"),
                         other[1].content);
    CPPUNIT_ASSERT_EQUAL(std::string("web-1\n"), other[2].content);

    TempDir dir;
    writeNetworkFiles(dnsTask(), dir.path());
    for (const NetworkFile& f : files) {
      CPPUNIT_ASSERT_EQUAL(f.content, shoal::test::readFile(dir.file(f.name)));
      struct stat st {};
      CPPUNIT_ASSERT(stat(dir.file(f.name).c_str(), &st) == 0);
      CPPUNIT_ASSERT_EQUAL(0644u, static_cast<unsigned>(st.st_mode & 07777));
    }
    const std::string error =
        errorOf([&] { writeNetworkFiles(dnsTask(), dir.file("no/such/dir")); });
    CPPUNIT_ASSERT_MESSAGE(error, contains(error, "cannot write " + dir.file("no/such/dir")));
  }

  void testDnsFilesAreBoundOverTheImagesEtcFiles() {
    TaskSpec t = dnsTask();
    Object::Ptr cfg = dnsConfig(t, "/state/t1");
    Strings destinations = mountDestinations(cfg);
    // After Docker's defaults and the task's mounts.
    CPPUNIT_ASSERT(destinations ==
                   Strings({"/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue",
                            "/dev/shm", "/etc/resolv.conf", "/etc/hosts", "/etc/hostname"}));
    for (const char* name : {"resolv.conf", "hosts", "hostname"}) {
      Object::Ptr m = findMount(cfg, std::string("/etc/") + name);
      CPPUNIT_ASSERT_EQUAL(std::string("bind"), m->getValue<std::string>("type"));
      CPPUNIT_ASSERT_EQUAL(std::string("/state/t1/") + name, m->getValue<std::string>("source"));
      CPPUNIT_ASSERT(strings(m->getArray("options")) == Strings({"rbind", "rprivate"}));
    }
    CPPUNIT_ASSERT_EQUAL(std::string("t0123456789a"), cfg->getValue<std::string>("hostname"));
    // A read-only rootfs gets read-only files.
    t.readOnly = true;
    CPPUNIT_ASSERT(
        strings(findMount(dnsConfig(t, "/state/t1"), "/etc/hosts")->getArray("options")) ==
        Strings({"rbind", "rprivate", "ro"}));
    // "dns" needs the directory the files are in.
    CPPUNIT_ASSERT(contains(errorOf([&] { config(t); }), "\"dns\" needs an absolute directory"));
    CPPUNIT_ASSERT(contains(errorOf([&] { dnsConfig(t, "state"); }), "absolute directory"));
  }

  void testWithoutDnsTheImagesEtcFilesStay() {
    TaskSpec t = baseTask();
    t.addresses = {"10.0.1.5"};  // addresses alone change nothing
    CPPUNIT_ASSERT(networkFiles(t).empty());
    TempDir dir;
    writeNetworkFiles(t, dir.path());
    CPPUNIT_ASSERT(std::filesystem::is_empty(dir.path()));
    for (const std::string& cfgText :
         {buildOciConfig(t, {}, "/r", "/c"), buildOciConfig(t, {}, "/r", "/c", "", dir.path())}) {
      CPPUNIT_ASSERT_MESSAGE(cfgText, !contains(cfgText, "/etc/"));
    }
  }

  void testTaskMountsOverEtcFilesWinAndBadHostnamesAreRefused() {
    TaskSpec t = dnsTask();
    t.mounts.push_back({"bind", "/srv/hosts", "/etc/hosts", true, "", 0, 0});
    Object::Ptr cfg = dnsConfig(t, "/state/t1");
    Strings destinations = mountDestinations(cfg);
    CPPUNIT_ASSERT_EQUAL(1L, std::count(destinations.begin(), destinations.end(), "/etc/hosts"));
    CPPUNIT_ASSERT_EQUAL(std::string("/srv/hosts"),
                         findMount(cfg, "/etc/hosts")->getValue<std::string>("source"));
    CPPUNIT_ASSERT_EQUAL(std::string("/state/t1/resolv.conf"),
                         findMount(cfg, "/etc/resolv.conf")->getValue<std::string>("source"));
    t = dnsTask();
    t.hostname = "web 1";
    CPPUNIT_ASSERT(contains(errorOf([&] { networkFiles(t); }), "cannot stand in /etc/hosts"));
    CPPUNIT_ASSERT(contains(errorOf([&] { dnsConfig(t, "/state/t1"); }), "task t0123456789abcdef"));
  }

 private:
  // A task as the agent sends it for a network plugin's namespace.
  static TaskSpec dnsTask() {
    return parseTaskDocument(
        doc(R"("command":["/bin/sh"])",
            R"("netns":"/run/shoal/netns/t0123456789abcdef","dns":{"nameservers":["127.0.0.11"],)"
            R"("search":[],"options":["ndots:0"]},"addresses":["10.0.1.5","10.0.2.5"],)"));
  }

  static Object::Ptr dnsConfig(const TaskSpec& task, const std::string& filesDir) {
    Poco::JSON::Parser parser;
    return parser
        .parse(buildOciConfig(task, {}, "/nonexistent-rootfs", "/shoal/" + task.id, "", filesDir))
        .extract<Object::Ptr>();
  }

  static Strings mountDestinations(const Object::Ptr& cfg) {
    Strings out;
    Array::Ptr mounts = cfg->getArray("mounts");
    for (std::size_t i = 0; i < mounts->size(); ++i) {
      out.push_back(
          mounts->getObject(static_cast<unsigned>(i))->getValue<std::string>("destination"));
    }
    return out;
  }
};

class StateFilesTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(StateFilesTest);
  CPPUNIT_TEST(testLogRecordsRoundTripAnyBytes);
  CPPUNIT_TEST(testExitRoundTripsAndRefusesGarbage);
  CPPUNIT_TEST(testLogWriterRotatesKeepingMaxFiles);
  CPPUNIT_TEST(testReadLogsTailAndSinceAcrossRotatedFiles);
  CPPUNIT_TEST(testLogFollowerFollowsAcrossRotationUntilTheExit);
  CPPUNIT_TEST(testExitWatcherReportsRecordedExits);
  CPPUNIT_TEST(testExitWatcherReportsAShimThatDiedSilently);
  CPPUNIT_TEST(testUnwatchedContainersAreNotReported);
  CPPUNIT_TEST(testReadStatusAndLaunchRefusals);
  CPPUNIT_TEST(testMakeDirsCreatesWhatIsMissingOnly);
  CPPUNIT_TEST(testSpawnedProgramsStartWithEverySignalAtItsDefault);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testLogRecordsRoundTripAnyBytes() {
    const std::string nasty = std::string("tab\there \"q\" back\\slash \x01\x7f caf\xc3\xa9 ") +
                              std::string(1, '\0') + " end\r";
    LogRecord in{"stderr", 1234567890123456789, nasty};
    std::string line = encodeLogRecord(in);
    CPPUNIT_ASSERT_EQUAL('\n', line.back());
    CPPUNIT_ASSERT_EQUAL(std::string::npos, line.substr(0, line.size() - 1).find('\n'));
    line.pop_back();
    LogRecord out;
    CPPUNIT_ASSERT(decodeLogRecord(line, out));
    CPPUNIT_ASSERT_EQUAL(in.stream, out.stream);
    CPPUNIT_ASSERT_EQUAL(in.timestampNs, out.timestampNs);
    CPPUNIT_ASSERT(in.line == out.line);
    CPPUNIT_ASSERT(
        decodeLogRecord(R"({"stream":"stdout","ts":1,"line":"\u00e9\ud83d\ude00\/"})", out));
    CPPUNIT_ASSERT_EQUAL(std::string("\xc3\xa9\xf0\x9f\x98\x80/"), out.line);
    CPPUNIT_ASSERT(!decodeLogRecord(R"({"stream":"stdout","ts":1,"line":"torn)", out));
    CPPUNIT_ASSERT(!decodeLogRecord(R"({"stream":"stdout","ts":"1","line":""})", out));
    CPPUNIT_ASSERT(!decodeLogRecord(R"({"stream":"stdout","ts":1,"line":""} x)", out));
  }

  void testExitRoundTripsAndRefusesGarbage() {
    ExitInfo in{137, 9, true, 42, "killed by signal SIGKILL (out of memory)"};
    ExitInfo out;
    CPPUNIT_ASSERT(decodeExit(encodeExit(in), out));
    CPPUNIT_ASSERT_EQUAL(137, out.exitCode);
    CPPUNIT_ASSERT_EQUAL(9, out.signal);
    CPPUNIT_ASSERT(out.oomKilled);
    CPPUNIT_ASSERT_EQUAL(int64_t{42}, out.finishedNs);
    CPPUNIT_ASSERT_EQUAL(in.message, out.message);
    CPPUNIT_ASSERT(!decodeExit("", out));
    CPPUNIT_ASSERT(!decodeExit(R"({"exit_code":)", out));
    CPPUNIT_ASSERT(!decodeExit(R"({"signal":1})", out));
  }

  void testLogWriterRotatesKeepingMaxFiles() {
    TempDir dir;
    const std::string path = dir.file("container.log");
    {
      LogWriter log(path, 1000, 3);
      for (int i = 0; i < 200; ++i) {
        CPPUNIT_ASSERT(log.write({"stdout", i, "line " + std::to_string(i)}));
      }
    }
    CPPUNIT_ASSERT(std::filesystem::exists(path));
    CPPUNIT_ASSERT(std::filesystem::exists(path + ".1"));
    CPPUNIT_ASSERT(std::filesystem::exists(path + ".2"));
    CPPUNIT_ASSERT(!std::filesystem::exists(path + ".3"));
    for (const std::string& f : {path, path + ".1", path + ".2"}) {
      CPPUNIT_ASSERT(std::filesystem::file_size(f) <= 1000);
    }
    // A new writer appends to the existing file (a restarted shim would).
    LogWriter again(path, 1000, 3);
    again.write({"stdout", 200, "line 200"});
    std::vector<LogRecord> records = readLogs(dir.path(), -1, 0);
    CPPUNIT_ASSERT_EQUAL(std::string("line 200"), records.back().line);
    // One file only: truncated instead of rotated.
    TempDir one;
    LogWriter single(one.file("container.log"), 100, 1);
    for (int i = 0; i < 20; ++i) single.write({"stdout", i, "0123456789"});
    CPPUNIT_ASSERT(!std::filesystem::exists(one.file("container.log.1")));
    CPPUNIT_ASSERT(std::filesystem::file_size(one.file("container.log")) <= 100);
  }

  void testReadLogsTailAndSinceAcrossRotatedFiles() {
    TempDir dir;
    {
      LogWriter log(dir.file("container.log"), 600, 10);
      for (int i = 0; i < 50; ++i) {
        log.write({i % 2 == 0 ? "stdout" : "stderr", 1000 + i, "n" + std::to_string(i)});
      }
    }
    CPPUNIT_ASSERT(std::filesystem::exists(dir.file("container.log.2")));
    std::vector<LogRecord> all = readLogs(dir.path(), -1, 0);
    CPPUNIT_ASSERT_EQUAL(std::size_t{50}, all.size());
    for (int i = 0; i < 50; ++i) CPPUNIT_ASSERT_EQUAL("n" + std::to_string(i), all[i].line);
    CPPUNIT_ASSERT_EQUAL(std::string("stderr"), all[1].stream);
    std::vector<LogRecord> tail = readLogs(dir.path(), 3, 0);
    CPPUNIT_ASSERT_EQUAL(std::size_t{3}, tail.size());
    CPPUNIT_ASSERT_EQUAL(std::string("n47"), tail[0].line);
    std::vector<LogRecord> since = readLogs(dir.path(), -1, 1045);
    CPPUNIT_ASSERT_EQUAL(std::size_t{5}, since.size());
    CPPUNIT_ASSERT_EQUAL(std::string("n45"), since[0].line);
    CPPUNIT_ASSERT(readLogs(dir.path(), 0, 0).empty());
    TempDir empty;
    CPPUNIT_ASSERT(readLogs(empty.path(), -1, 0).empty());
  }

  void testLogFollowerFollowsAcrossRotationUntilTheExit() {
    TempDir dir;
    FakeShim shim(dir.path());
    LogWriter log(dir.file("container.log"), 300, 3);
    for (int i = 0; i < 5; ++i) log.write({"stdout", i, "old" + std::to_string(i)});
    LogFollower follower(dir.path(), 2, 0);
    std::vector<LogRecord> first = follower.poll();
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, first.size());
    CPPUNIT_ASSERT_EQUAL(std::string("old3"), first[0].line);
    CPPUNIT_ASSERT_EQUAL(std::string("old4"), first[1].line);
    CPPUNIT_ASSERT(follower.poll().empty());
    CPPUNIT_ASSERT(!follower.finished());
    std::vector<std::string> seen;
    int next = 0;
    // Written in small bursts, each followed by a poll, crossing several rotations.
    for (int burst = 0; burst < 10; ++burst) {
      for (int i = 0; i < 3; ++i, ++next)
        log.write({"stdout", 100 + next, "new" + std::to_string(next)});
      follower.wait(0);
      for (const LogRecord& r : follower.poll()) seen.push_back(r.line);
    }
    CPPUNIT_ASSERT_EQUAL(std::size_t{30}, seen.size());
    for (int i = 0; i < 30; ++i) CPPUNIT_ASSERT_EQUAL("new" + std::to_string(i), seen[i]);
    // The exit is recorded after the last records: they come, then finished().
    log.write({"stderr", 999, "last"});
    writeFileAtomic(dir.file("exit.json"), encodeExit(ExitInfo{}));
    std::vector<LogRecord> last = follower.poll();
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, last.size());
    CPPUNIT_ASSERT_EQUAL(std::string("last"), last[0].line);
    CPPUNIT_ASSERT(follower.finished());
  }

  void testExitWatcherReportsRecordedExits() {
    TempDir a, b;
    FakeShim shimA(a.path()), shimB(b.path());
    // b's exit is recorded before it is watched: reported at once.
    writeFileAtomic(b.file("exit.json"),
                    encodeExit(ExitInfo{3, 0, false, 1, "exited with code 3"}));
    std::mutex mu;
    std::condition_variable cv;
    std::vector<std::pair<std::string, ExitInfo>> exits;
    ExitWatcher watcher([&](const std::string& id, const ExitInfo& exit) {
      std::lock_guard<std::mutex> lock(mu);
      exits.emplace_back(id, exit);
      cv.notify_all();
    });
    watcher.watch("a", a.path());
    watcher.watch("b", b.path());
    auto waitFor = [&](std::size_t n) {
      std::unique_lock<std::mutex> lock(mu);
      return cv.wait_for(lock, std::chrono::seconds(5), [&] { return exits.size() >= n; });
    };
    CPPUNIT_ASSERT(waitFor(1));
    CPPUNIT_ASSERT_EQUAL(std::string("b"), exits[0].first);
    CPPUNIT_ASSERT_EQUAL(3, exits[0].second.exitCode);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    {
      std::lock_guard<std::mutex> lock(mu);
      CPPUNIT_ASSERT_EQUAL(std::size_t{1}, exits.size());  // a is still running
    }
    writeFileAtomic(a.file("exit.json"), encodeExit(ExitInfo{137, 9, true, 2, "oom"}));
    shimA.stop();  // the real shim exits right after writing exit.json
    CPPUNIT_ASSERT(waitFor(2));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::lock_guard<std::mutex> lock(mu);
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, exits.size());  // once each
    CPPUNIT_ASSERT_EQUAL(std::string("a"), exits[1].first);
    CPPUNIT_ASSERT_EQUAL(137, exits[1].second.exitCode);
    CPPUNIT_ASSERT(exits[1].second.oomKilled);
  }

  void testExitWatcherReportsAShimThatDiedSilently() {
    TempDir dir, gone;
    FakeShim shim(dir.path());
    std::mutex mu;
    std::condition_variable cv;
    std::vector<std::pair<std::string, ExitInfo>> exits;
    ExitWatcher watcher([&](const std::string& id, const ExitInfo& exit) {
      std::lock_guard<std::mutex> lock(mu);
      exits.emplace_back(id, exit);
      cv.notify_all();
    });
    watcher.watch("t1", dir.path());
    watcher.watch("t2", gone.path());  // no shim.pid at all: no shim
    shim.stop();
    std::unique_lock<std::mutex> lock(mu);
    CPPUNIT_ASSERT(cv.wait_for(lock, std::chrono::seconds(5), [&] { return exits.size() >= 2; }));
    for (const auto& [id, exit] : exits) {
      CPPUNIT_ASSERT_EQUAL(255, exit.exitCode);
      CPPUNIT_ASSERT_MESSAGE(exit.message, contains(exit.message, "died without recording"));
      CPPUNIT_ASSERT(contains(exit.message, id));
    }
  }

  void testUnwatchedContainersAreNotReported() {
    TempDir dir;
    FakeShim shim(dir.path());
    std::atomic<int> calls{0};
    {
      ExitWatcher watcher([&](const std::string&, const ExitInfo&) { ++calls; });
      watcher.watch("t1", dir.path());
      watcher.unwatch("t1");
      watcher.unwatch("never-watched");
      writeFileAtomic(dir.file("exit.json"), encodeExit(ExitInfo{}));
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    CPPUNIT_ASSERT_EQUAL(0, calls.load());
  }

  void testMakeDirsCreatesWhatIsMissingOnly() {
    TempDir dir;
    const std::string deep = dir.file("a/b/c/");
    CPPUNIT_ASSERT(makeDirs(deep, 0700));
    struct stat st {};
    CPPUNIT_ASSERT(stat(dir.file("a/b/c").c_str(), &st) == 0 && S_ISDIR(st.st_mode));
    CPPUNIT_ASSERT_EQUAL(0700u, static_cast<unsigned>(st.st_mode & 07777));
    CPPUNIT_ASSERT(makeDirs(dir.file("a/b/c"), 0700));  // there already
    CPPUNIT_ASSERT(makeDirs(dir.file("a/b/d"), 0755));  // only the last one missing
    writeFileAtomic(dir.file("a/file"), "x");
    errno = 0;
    CPPUNIT_ASSERT(!makeDirs(dir.file("a/file/e/f"), 0700));  // a file in the way
    CPPUNIT_ASSERT_EQUAL(ENOTDIR, errno);
    CPPUNIT_ASSERT(!makeDirs(dir.file("a/file"), 0700));
  }

  // glibc's posix_spawn would hand its own two signals (32, 33) down ignored: spawn must not.
  void testSpawnedProgramsStartWithEverySignalAtItsDefault() {
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    struct sigaction before {};
    sigaction(SIGPIPE, &ignore, &before);  // one ignored here, as in shoald
    const CaptureResult r =
        runCapture({"/bin/busybox", "grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"}, {});
    sigaction(SIGPIPE, &before, nullptr);
    CPPUNIT_ASSERT_EQUAL_MESSAGE(r.err, 0, r.status);
    CPPUNIT_ASSERT_EQUAL(std::string("SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"),
                         r.out);
  }

  void testReadStatusAndLaunchRefusals() {
    TempDir dir;
    ContainerStatus none = readStatus(dir.path());
    CPPUNIT_ASSERT_EQUAL(0, none.pid);
    CPPUNIT_ASSERT(!none.shimAlive);
    CPPUNIT_ASSERT(!none.exit);
    FakeShim shim(dir.path());
    writeFileAtomic(dir.file("container.pid"), "4242");
    writeFileAtomic(dir.file("started"), "77\n");
    ContainerStatus s = readStatus(dir.path());
    CPPUNIT_ASSERT_EQUAL(4242, s.pid);
    CPPUNIT_ASSERT_EQUAL(int64_t{77}, s.startedNs);
    CPPUNIT_ASSERT(s.shimAlive);
    ShimOptions options{"/bin/false", "/usr/sbin/runc", "/tmp/r", "t1", "/tmp/b", dir.path(), ""};
    try {
      launchShim(options);
      CPPUNIT_FAIL("a second shim for a live one's state dir");
    } catch (const shoal::sdk::Error& e) {
      CPPUNIT_ASSERT_EQUAL(SHOAL_EBUSY, e.code());
    }
    // A pid file naming a live process with another start time is a dead shim (pid reuse).
    writeFileAtomic(dir.file("shim.pid"), std::to_string(shim.pid) + " 1\n");
    CPPUNIT_ASSERT(!readStatus(dir.path()).shimAlive);
    options.bundleDir = "relative";
    try {
      launchShim(options);
      CPPUNIT_FAIL("a relative path");
    } catch (const shoal::sdk::Error& e) {
      CPPUNIT_ASSERT_EQUAL(SHOAL_EINVAL, e.code());
    }
    options.bundleDir = "/tmp/b";
    options.cgroupsPath = "shoal/t1";
    try {
      launchShim(options);
      CPPUNIT_FAIL("a relative cgroups path");
    } catch (const shoal::sdk::Error& e) {
      CPPUNIT_ASSERT_EQUAL(SHOAL_EINVAL, e.code());
      CPPUNIT_ASSERT(std::string(e.what()).find("shoal/t1") != std::string::npos);
    }
    CPPUNIT_ASSERT(removeStateDir(dir.path()));
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(TaskSpecTest);
CPPUNIT_TEST_SUITE_REGISTRATION(OciSpecTest);
CPPUNIT_TEST_SUITE_REGISTRATION(StateFilesTest);
