// Real containers (runtime-runc: runc through shoal-shim) on scripts/lab nodes, driven through
// the CLI as a user would, with images built by scripts/test-images from busybox-static:
//  - one node pulling from a registry inside its namespace (Debian's docker-registry on the
//    node's loopback): 3 replicas are 3 runc containers, the image is pinned to a digest, a
//    killed container is replaced, `service update --image :v2` rolls, a restarted shoald keeps
//    the same containers running and managed, `service logs` brings their output back through
//    the leader, --init/--read-only/--sysctl/--ulimit and the default seccomp filter reach the
//    container, a memory limit OOM-kills, a failing health check has its task replaced, and
//    `service rm` leaves no container, mount, cgroup or shim;
//  - three nodes loading the image from a tarball (air-gapped): replicas spread and run; a
//    worker leaving the swarm stops its containers, and its tasks move to the others.
// Needs root (namespaces, runc), like every test in this label.
#include <cppunit/extensions/HelperMacros.h>

#include <dirent.h>
#include <unistd.h>

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/lab.h"
#include "tests/support/netns_lab.h"
#include "tests/support/oci_runtime.h"
#include "tests/support/process.h"
#include "tests/support/swarm_lab.h"
#include "tests/support/temp_dir.h"

using namespace std::chrono_literals;
using shoal::test::contains;
using shoal::test::eventually;
using shoal::test::Lab;
using shoal::test::must;
using shoal::test::ociRuntime;
using shoal::test::runCommand;
using shoal::test::RunResult;
using shoal::test::TaskView;
using shoal::test::TempDir;
using shoal::test::trim;

namespace {

const std::string kRegistry = "127.0.0.1:5000";

std::string script(const std::string& name) {
  return std::string(SHOAL_SOURCE_DIR) + "/scripts/" + name;
}

// Lines of /proc/self/mounts whose mount point is under `dir`.
std::vector<std::string> mountsUnder(const std::string& dir) {
  std::ifstream in("/proc/self/mounts");
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string dev, at;
    words >> dev >> at;
    if (at.rfind(dir + "/", 0) == 0) out.push_back(at);
  }
  return out;
}

// Cgroup directories left under any controller's `parent`.
std::vector<std::string> cgroupsUnder(const std::string& parent) {
  std::vector<std::string> out;
  DIR* root = opendir("/sys/fs/cgroup");
  if (!root) return out;
  while (dirent* c = readdir(root)) {
    if (c->d_name[0] == '.') continue;
    const std::string dir = std::string("/sys/fs/cgroup/") + c->d_name + "/" + parent;
    if (DIR* d = opendir(dir.c_str())) {
      while (dirent* e = readdir(d)) {
        if (e->d_type == DT_DIR && e->d_name[0] != '.') out.push_back(dir + "/" + e->d_name);
      }
      closedir(d);
    }
  }
  closedir(root);
  return out;
}

// shoal-shim processes whose command line names `dir`.
int shimsFor(const std::string& dir) {
  int n = 0;
  DIR* proc = opendir("/proc");
  if (!proc) return 0;
  while (dirent* e = readdir(proc)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::ifstream in(std::string("/proc/") + e->d_name + "/cmdline");
    std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (contains(cmd, "shoal-shim") && contains(cmd, dir)) ++n;
  }
  closedir(proc);
  return n;
}

}  // namespace

class RuncLabTest : public CppUnit::TestFixture, protected shoal::test::SwarmLabClient {
  CPPUNIT_TEST_SUITE(RuncLabTest);
  CPPUNIT_TEST(testContainersOnOneNode);
  CPPUNIT_TEST(testReplicasSpreadOverThreeNodesFromALoadedImage);
  CPPUNIT_TEST_SUITE_END();

 public:
  // The OCI runtime (runc, or crun for runc_lab_test_crun) can run containers here; says why
  // not once.
  static bool runtimeUsable() {
    static const bool ok = [] {
      const std::string why = shoal::test::ociRuntimeUnusable();
      if (!why.empty()) std::cerr << "\n(" << why << ": skipped) ";
      return why.empty();
    }();
    return ok;
  }

  void setUp() override {
    CPPUNIT_ASSERT_MESSAGE("this test needs root, ip and nft (network namespaces)",
                           shoal::test::NetnsLab::available());
    if (!runtimeUsable()) return;
    RunResult built = runCommand({script("test-images"), "build", images_.path()}, 120s);
    CPPUNIT_ASSERT_MESSAGE("test-images build: " + built.out + built.err, built.exitCode == 0);
  }

  void testContainersOnOneNode() {
    if (!runtimeUsable()) return;
    Lab lab(1, {"SHOAL_LAB_RUNTIME=runtime-runc", "SHOAL_LAB_OCI_RUNTIME=" + ociRuntime(),
                "SHOAL_LAB_INSECURE_REGISTRIES=" + kRegistry});
    lab_ = &lab;
    // The registry lives on node1's own loopback.
    RunResult reg =
        lab.inNode("node1", {script("test-images"), "registry", images_.path(), "5000"});
    CPPUNIT_ASSERT_MESSAGE("registry: " + reg.out + reg.err, reg.exitCode == 0);
    struct StopRegistry {
      const Lab& lab;
      std::string dir;
      ~StopRegistry() { runCommand({script("test-images"), "stop", dir}); }
    } stopRegistry{lab, images_.path()};
    RunResult pushed =
        lab.inNode("node1", {script("test-images"), "push", images_.path(), kRegistry}, 120s);
    CPPUNIT_ASSERT_MESSAGE("push: " + pushed.out + pushed.err, pushed.exitCode == 0);
    init("1s");
    const std::string image = kRegistry + "/shoal-test";

    // Three replicas are three runc containers, and the tag is pinned to a digest.
    must(on({"service", "create", "--name", "web", "--replicas", "3", "--stop-grace-period", "2s",
             image + ":v1"}),
         "create web");
    CPPUNIT_ASSERT_EQUAL(std::size_t{3}, running("web").size());
    CPPUNIT_ASSERT_EQUAL(std::size_t{3}, containers(lab).size());
    RunResult inspect = on({"service", "inspect", "web"});
    CPPUNIT_ASSERT_MESSAGE(inspect.out, contains(inspect.out, image + ":v1@sha256:"));
    RunResult ls = on({"image", "ls"});
    CPPUNIT_ASSERT_MESSAGE(ls.out, contains(ls.out, image) && contains(ls.out, "v1"));

    // A killed container is replaced.
    const auto before = containers(lab);
    const std::string victim = *before.begin();
    RunResult state =
        runCommand({ociRuntime(), "--root", lab.dir("node1") + "/runc", "state", victim});
    Poco::JSON::Object::Ptr st =
        Poco::JSON::Parser().parse(state.out).extract<Poco::JSON::Object::Ptr>();
    const int pid = st->getValue<int>("pid");
    CPPUNIT_ASSERT(pid > 0);
    must(runCommand({"kill", "-9", std::to_string(pid)}), "kill the container");
    CPPUNIT_ASSERT(eventually(
        [&] {
          auto now = containers(lab);
          return running("web").size() == 3 && now.size() == 3 && now.count(victim) == 0;
        },
        30s));
    bool sawExit = false;
    for (const auto& t : tasks("web")) sawExit |= t.id == victim && contains(t.err, "(137)");
    CPPUNIT_ASSERT_MESSAGE("the killed task's error names exit 137", sawExit);

    // A rolling update to :v2 replaces every container; they run the new bytes.
    must(on({"service", "update", "--image", image + ":v2", "--update-parallelism", "3", "web"}),
         "update web");
    auto updated = running("web");
    CPPUNIT_ASSERT_EQUAL(std::size_t{3}, updated.size());
    for (const auto& t : updated) {
      CPPUNIT_ASSERT_MESSAGE(t.image, contains(t.image, ":v2@sha256:"));
      RunResult v = runCommand({ociRuntime(), "--root", lab.dir("node1") + "/runc", "exec", t.id,
                                "cat", "/etc/shoal-test-version"});
      CPPUNIT_ASSERT_EQUAL(std::string("v2"), trim(v.out));
    }

    // Their output comes back through the leader: v2's command prints its version.
    RunResult logs = on({"service", "logs", "web"});
    must(logs, "service logs");
    std::size_t printed = 0;
    for (const auto& t : updated) {
      printed += contains(logs.out, "@node1    | v2") && contains(logs.out, t.id.substr(0, 12));
    }
    CPPUNIT_ASSERT_MESSAGE(logs.out, printed == 3);
    RunResult one = on({"service", "logs", "--raw", "--timestamps", updated[0].id});
    must(one, "service logs of one task");
    CPPUNIT_ASSERT_MESSAGE(one.out, contains(one.out, "Z v2") && !contains(one.out, "|"));

    // A restarted shoald finds the same containers running, and keeps managing them.
    const auto running1 = containers(lab);
    must(lab.lab({"stop", "node1"}), "stop node1");
    CPPUNIT_ASSERT(running1 == containers(lab));  // the shims held them
    must(lab.lab({"start", "node1"}), "start node1");
    CPPUNIT_ASSERT(eventually([&] { return running("web").size() == 3; }, 30s));
    CPPUNIT_ASSERT(running1 == containers(lab));
    must(on({"service", "scale", "web=1"}), "scale down after the restart");
    CPPUNIT_ASSERT(eventually([&] { return containers(lab).size() == 1; }, 30s));

    // Docker's container options reach the container: an init, a read-only root, sysctls,
    // ulimits.
    must(on({"service", "create", "--name", "opts", "--init", "--read-only", "--sysctl",
             "net.ipv4.ip_forward=1", "--ulimit", "nofile=100:200", "--cap-drop", "NET_RAW",
             "--limit-memory", "48M", "--tty", image + ":v1"}),
         "create opts");
    auto opts = running("opts");
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, opts.size());
    const std::string runc = lab.dir("node1") + "/runc";
    RunResult touched =
        runCommand({ociRuntime(), "--root", runc, "exec", opts[0].id, "touch", "/x"});
    CPPUNIT_ASSERT_MESSAGE(touched.err, touched.exitCode != 0);
    // --tty: the container's init has a pseudo-terminal for its stdio, and Docker's TERM.
    RunResult tty =
        runCommand({ociRuntime(), "--root", runc, "exec", opts[0].id, "busybox", "sh", "-c",
                    "busybox readlink /proc/1/fd/0; busybox readlink /proc/1/fd/1"});
    CPPUNIT_ASSERT_EQUAL_MESSAGE(tty.err, std::string("/dev/pts/0\n/dev/pts/0\n"), tty.out);
    CPPUNIT_ASSERT_EQUAL(0, runCommand({ociRuntime(), "--root", runc, "exec", opts[0].id, "grep",
                                        "-q", "TERM=xterm", "/proc/1/environ"})
                                .exitCode);
    CPPUNIT_ASSERT(contains(on({"service", "inspect", "opts"}).out, "\"TTY\": true"));
    RunResult sysctl = runCommand(
        {ociRuntime(), "--root", runc, "exec", opts[0].id, "cat", "/proc/sys/net/ipv4/ip_forward"});
    CPPUNIT_ASSERT_EQUAL(std::string("1"), trim(sysctl.out));
    // Docker's default swap limit: memory + swap is twice the memory limit, where the kernel
    // accounts swap (this one does: cgroup v1 memsw).
    if (access("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes", F_OK) == 0) {
      RunResult memsw = runCommand({ociRuntime(), "--root", runc, "exec", opts[0].id, "cat",
                                    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"});
      CPPUNIT_ASSERT_EQUAL(std::string("50331648\n100663296\n"), memsw.out);
    }
    // The container's init, as the spec set it up (an exec'd process may differ).
    RunResult limits = runCommand(
        {ociRuntime(), "--root", runc, "exec", opts[0].id, "grep", "open files", "/proc/1/limits"});
    std::istringstream words(limits.out);
    std::string max, open, files, soft, hard;  // "Max open files  100  200  files"
    words >> max >> open >> files >> soft >> hard;
    CPPUNIT_ASSERT_MESSAGE(limits.out + limits.err, soft == "100" && hard == "200");
    RunResult init =
        runCommand({ociRuntime(), "--root", runc, "exec", opts[0].id, "cat", "/proc/1/cmdline"});
    CPPUNIT_ASSERT_MESSAGE(init.out, contains(init.out, "/sbin/docker-init"));
    // Under the default seccomp filter: a user namespace (a way to regain capabilities) is
    // refused, as Docker's default profile refuses it.
    RunResult status = runCommand(
        {ociRuntime(), "--root", runc, "exec", opts[0].id, "grep", "Seccomp:", "/proc/1/status"});
    CPPUNIT_ASSERT_MESSAGE(status.out, contains(status.out, "2"));  // SECCOMP_MODE_FILTER
    RunResult userns = runCommand(
        {ociRuntime(), "--root", runc, "exec", opts[0].id, "busybox", "unshare", "-U", "true"});
    CPPUNIT_ASSERT_MESSAGE(
        userns.out + userns.err,
        userns.exitCode != 0 && contains(userns.out + userns.err, "Operation not permitted"));
    must(on({"service", "rm", "opts"}), "rm opts");

    // A memory limit is enforced: the task is OOM-killed and fails saying so.
    must(on({"service", "create", "--name", "hog", "--detach", "--limit-memory", "32M",
             "--restart-condition", "none", image + ":v1", "busybox", "dd", "if=/dev/zero",
             "of=/dev/null", "bs=64M", "count=1"}),
         "create hog");
    CPPUNIT_ASSERT(eventually(
        [&] {
          for (const auto& t : tasks("hog")) {
            if (t.state == "failed" && contains(t.err, "OOM")) return true;
          }
          return false;
        },
        30s));

    // A task whose health check fails is replaced; a healthy one runs.
    must(on({"service", "create", "--name", "sick", "--detach", "--env", "UNHEALTHY=1",
             image + ":health"}),
         "create sick");
    CPPUNIT_ASSERT(eventually(
        [&] {
          for (const auto& t : tasks("sick")) {
            if (t.state == "failed" && contains(t.err, "unhealthy")) return true;
          }
          return false;
        },
        40s));
    must(on({"service", "create", "--name", "well", image + ":health"}), "create well");
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, running("well").size());

    // Removing the services leaves nothing behind.
    for (const char* s : {"web", "hog", "sick", "well"}) must(on({"service", "rm", s}), s);
    const std::string node = lab.dir("node1");
    CPPUNIT_ASSERT(eventually([&] { return containers(lab).empty(); }, 40s));
    CPPUNIT_ASSERT(eventually(
        [&] {
          return mountsUnder(node + "/data").empty() &&
                 cgroupsUnder(lab.name() + "-node1").empty() && shimsFor(node) == 0;
        },
        20s));
  }

  void testReplicasSpreadOverThreeNodesFromALoadedImage() {
    if (!runtimeUsable()) return;
    Lab lab(3, {"SHOAL_LAB_RUNTIME=runtime-runc", "SHOAL_LAB_OCI_RUNTIME=" + ociRuntime()});
    lab_ = &lab;
    init("1s");
    join("node2");
    join("node3");
    waitReady(3);
    for (const char* node : {"node1", "node2", "node3"}) {
      // `image load FILE` on node2, Docker's `image load -i FILE` on the others.
      std::vector<std::string> load = {"image", "load", images_.file("shoal-test-oci.tar")};
      if (std::string(node) != "node2") load.insert(load.begin() + 2, "-i");
      RunResult loaded = lab.on(node, load);
      must(loaded, std::string("load on ") + node);
      CPPUNIT_ASSERT_MESSAGE(loaded.out,
                             contains(loaded.out, "Loaded image: localhost/shoal-test:v1"));
    }
    // No registry can be reached: the tag stays unpinned, with Docker's warning.
    RunResult created =
        on({"service", "create", "--name", "spread", "--replicas", "6", "localhost/shoal-test:v1"});
    must(created, "create spread");
    CPPUNIT_ASSERT_MESSAGE(created.err,
                           contains(created.err, "could not be accessed on a registry"));
    CPPUNIT_ASSERT(perNode(running("spread")) == (std::vector<std::size_t>{2, 2, 2}));
    for (const char* node : {"node1", "node2", "node3"}) {
      lab_ = &lab;
      CPPUNIT_ASSERT_EQUAL(std::size_t{2}, containersOn(lab, node).size());
    }
    // A worker that leaves takes its containers down with it (as Docker's), and the managers
    // place its tasks on the nodes that stay once it is down.
    must(lab.on("node3", {"swarm", "leave"}), "leave node3");
    CPPUNIT_ASSERT(containersOn(lab, "node3").empty());
    CPPUNIT_ASSERT(eventually([&] { return running("spread").size() == 6; }, 60s));
    CPPUNIT_ASSERT(!onNode(running("spread"), "node3"));
    std::vector<std::size_t> spread = perNode(running("spread"));
    std::sort(spread.begin(), spread.end());
    CPPUNIT_ASSERT(spread == (std::vector<std::size_t>{0, 3, 3}));
    must(on({"service", "rm", "spread"}), "rm spread");
    for (const char* node : {"node1", "node2", "node3"}) {
      CPPUNIT_ASSERT(eventually([&] { return containersOn(lab, node).empty(); }, 30s));
    }
  }

 private:
  // The running containers of a node, by id (runc's list).
  std::set<std::string> containersOn(const Lab& lab, const std::string& node) {
    RunResult r =
        runCommand({ociRuntime(), "--root", lab.dir(node) + "/runc", "list", "-f", "json"});
    std::set<std::string> out;
    if (r.exitCode != 0 || trim(r.out).empty() || trim(r.out) == "null") return out;
    try {
      auto list = Poco::JSON::Parser().parse(r.out).extract<Poco::JSON::Array::Ptr>();
      for (std::size_t i = 0; list && i < list->size(); ++i) {
        auto c = list->getObject(static_cast<unsigned>(i));
        if (c->optValue<std::string>("status", "") == "running") {
          out.insert(c->getValue<std::string>("id"));
        }
      }
    } catch (const std::exception&) {
    }
    return out;
  }
  std::set<std::string> containers(const Lab& lab) { return containersOn(lab, "node1"); }

  TempDir images_;
};

CPPUNIT_TEST_SUITE_REGISTRATION(RuncLabTest);
