#include "seccomp.h"

#include <Poco/JSON/Array.h>
#include <sys/utsname.h>

#include <algorithm>
#include <cstring>

namespace shoal::runc {
namespace {

using Poco::JSON::Array;
using Poco::JSON::Object;

constexpr int kEperm = 1;
constexpr int kEnosys = 38;

struct Group {
  const char* capability;  // nullptr: denied whatever the capabilities
  std::vector<const char*> calls;
};

const std::vector<Group>& groups() {
  static const std::vector<Group> g = {
      {nullptr,
       {"add_key", "keyctl", "request_key", "userfaultfd", "io_uring_setup", "io_uring_enter",
        "io_uring_register", "nfsservctl", "uselib", "ustat", "sysfs", "_sysctl", "vm86", "vm86old",
        "create_module", "get_kernel_syms", "query_module"}},
      {"CAP_SYS_ADMIN", {"mount",           "umount",         "umount2",
                         "fsopen",          "fsconfig",       "fsmount",
                         "fspick",          "move_mount",     "open_tree",
                         "mount_setattr",   "pivot_root",     "swapon",
                         "swapoff",         "quotactl",       "quotactl_fd",
                         "unshare",         "setns",          "bpf",
                         "perf_event_open", "lookup_dcookie", "name_to_handle_at"}},
      {"CAP_DAC_READ_SEARCH", {"open_by_handle_at"}},
      {"CAP_SYS_MODULE", {"init_module", "finit_module", "delete_module"}},
      {"CAP_SYS_BOOT", {"reboot", "kexec_load", "kexec_file_load"}},
      {"CAP_SYS_TIME",
       {"settimeofday", "stime", "clock_settime", "clock_settime64", "clock_adjtime",
        "clock_adjtime64"}},
      {"CAP_SYS_PTRACE", {"kcmp"}},
      {"CAP_SYS_NICE", {"mbind", "set_mempolicy", "get_mempolicy", "move_pages"}},
      {"CAP_SYS_RAWIO", {"ioperm", "iopl"}},
      {"CAP_SYS_PACCT", {"acct"}},
      {"CAP_SYSLOG", {"syslog"}},
  };
  return g;
}

// clone's flags that make namespaces (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
// NEWPID, NEWNET).
constexpr uint64_t kNamespaceFlags[] = {0x00020000, 0x02000000, 0x04000000, 0x08000000,
                                        0x10000000, 0x20000000, 0x40000000};

Array::Ptr architectures() {
  Array::Ptr a = new Array;
  struct utsname u {};
  ::uname(&u);
  if (std::strcmp(u.machine, "aarch64") == 0) {
    a->add(std::string("SCMP_ARCH_AARCH64"));
    a->add(std::string("SCMP_ARCH_ARM"));
  } else {
    a->add(std::string("SCMP_ARCH_X86_64"));
    a->add(std::string("SCMP_ARCH_X86"));
    a->add(std::string("SCMP_ARCH_X32"));
  }
  return a;
}

Object::Ptr rule(const std::vector<const char*>& names, int errnoRet) {
  Object::Ptr r = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  Array::Ptr n = new Array;
  for (const char* name : names) n->add(std::string(name));
  r->set("names", n);
  r->set("action", std::string("SCMP_ACT_ERRNO"));
  r->set("errnoRet", errnoRet);
  return r;
}

}  // namespace

Object::Ptr defaultSeccomp(const std::vector<std::string>& caps) {
  auto has = [&](const char* cap) {
    return std::find(caps.begin(), caps.end(), cap) != caps.end();
  };
  Array::Ptr syscalls = new Array;
  for (const Group& g : groups()) {
    if (g.capability != nullptr && has(g.capability)) continue;
    syscalls->add(rule(g.calls, kEperm));
  }
  if (!has("CAP_SYS_ADMIN")) {
    syscalls->add(rule({"clone3"}, kEnosys));
    // One rule per flag: any of them set is refused (the rules of one call are or'ed).
    for (uint64_t flag : kNamespaceFlags) {
      Object::Ptr r = rule({"clone"}, kEperm);
      Object::Ptr arg = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
      arg->set("index", 0);  // the flags (x86_64 and arm64 alike)
      arg->set("value", flag);
      arg->set("valueTwo", flag);
      arg->set("op", std::string("SCMP_CMP_MASKED_EQ"));
      Array::Ptr args = new Array;
      args->add(arg);
      r->set("args", args);
      syscalls->add(r);
    }
  }
  Object::Ptr s = new Object(Poco::JSON_PRESERVE_KEY_ORDER);
  s->set("defaultAction", std::string("SCMP_ACT_ALLOW"));
  s->set("architectures", architectures());
  s->set("syscalls", syscalls);
  return s;
}

}  // namespace shoal::runc
