// The seccomp filter every container gets unless the node turns it off (the plugin's
// `seccomp` key): Docker's default profile in spirit, written as a deny list. Everything is
// allowed except the system calls Docker's default profile keeps from containers, each group
// given back by the capability that makes it legitimate (as Docker's profile does when a
// service adds that capability):
//   - never: the kernel keyring (add_key, keyctl, request_key), userfaultfd, io_uring, and
//     obsolete or unused calls (nfsservctl, uselib, ustat, sysfs, _sysctl, vm86*, the old
//     module calls);
//   - CAP_SYS_ADMIN: mount and the new mount API, umount, pivot_root, swapon/off, quotactl,
//     unshare, setns, clone/clone3 making namespaces (clone3 answers ENOSYS, so libc falls back
//     to clone, whose flags can be checked), bpf, perf_event_open, lookup_dcookie,
//     name_to_handle_at;
//   - CAP_DAC_READ_SEARCH: open_by_handle_at; CAP_SYS_MODULE: init/finit/delete_module;
//     CAP_SYS_BOOT: reboot, kexec_*; CAP_SYS_TIME: settimeofday, stime, clock_settime,
//     clock_adjtime; CAP_SYS_PTRACE: kcmp; CAP_SYS_NICE: mbind, set/get_mempolicy,
//     move_pages; CAP_SYS_RAWIO: ioperm, iopl; CAP_SYS_PACCT: acct; CAP_SYSLOG: syslog.
// A denied call fails with EPERM (clone3: ENOSYS). Names this architecture lacks are skipped
// by runc. THREAD: pure; any thread.
#pragma once

#include <Poco/JSON/Object.h>

#include <string>
#include <vector>

namespace shoal::runc {

// The OCI `linux.seccomp` object for a container with capabilities `caps` ("CAP_CHOWN", ...).
Poco::JSON::Object::Ptr defaultSeccomp(const std::vector<std::string>& caps);

}  // namespace shoal::runc
