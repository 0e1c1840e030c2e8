// The OCI runtime spec (config.json, ociVersion 1.0.2) for one task, built the way Docker
// builds a container's: Docker's process rules, default capabilities, masked and read-only
// paths and default mounts, plus the task's limits, mounts and network namespace.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "task_spec.h"

namespace shoal::runc {

// What the image's config says (the image half's ImageConfig, the part a container needs).
struct ImageDefaults {
  std::vector<std::string> env;  // "K=V"
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::string workingDir;
  std::string user;
  std::string stopSignal;
};

// Docker's default capabilities, without the "CAP_" prefix, in Docker's order.
extern const std::vector<std::string> kDefaultCapabilities;

// The process Docker would run: spec.command replaces the image's entrypoint, spec.args its
// cmd, and a command given without args drops the image's cmd. Throws SHOAL_EINVAL ("no command
// specified") when the result is empty.
std::vector<std::string> processArgs(const TaskSpec& task, const ImageDefaults& image);

// The environment: the image's, then the task's on top (a task "K=V" replaces the image's K, a
// bare "K" removes it); PATH (Docker's default), HOSTNAME and HOME are added when absent.
std::vector<std::string> processEnv(const TaskSpec& task, const ImageDefaults& image,
                                    const std::string& hostname, const std::string& home);

// The bounding/effective/permitted set: Docker's defaults with cap_add and cap_drop applied
// ("CAP_X" or "X", any case; "ALL" in cap_add means every capability, in cap_drop none of the
// defaults). Names returned as "CAP_X", sorted. Throws SHOAL_EINVAL for an unknown name.
std::vector<std::string> capabilities(const std::vector<std::string>& capAdd,
                                      const std::vector<std::string>& capDrop);

// A user resolved against the image: uid, primary gid, supplementary groups (every group of
// /etc/group that lists the user's name) and the home directory ("" when not in /etc/passwd).
struct ResolvedUser {
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::vector<uint32_t> additionalGids;
  std::string home;
};

// Resolves Docker's user syntax ("", "uid", "uid:gid", "name", "name:group", "uid:group", ...)
// against rootfsPath/etc/passwd and rootfsPath/etc/group, reading them as the container would
// see them (symlinks are resolved inside the rootfs). "" is root. A numeric uid needs no
// passwd entry (its gid is then 0 unless one is given). Throws SHOAL_EINVAL when a name is not
// found ("unable to find user NAME: no matching entries in passwd file").
ResolvedUser resolveUser(const std::string& user, const std::string& rootfsPath);

// Resolves `path` (absolute, as seen inside the container) to a host path under rootfsPath,
// following symlinks without ever leaving rootfsPath (like filepath-securejoin). The result
// need not exist.
std::string resolveInRoot(const std::string& rootfsPath, const std::string& path);

// Signal number of a Docker stop signal ("SIGTERM", "TERM", "15", any case); 0 when `name` is
// not a signal. "" is SIGTERM.
int parseSignal(std::string_view name);

// The stop signal to use: the task's, else the image's, else SIGTERM. Throws SHOAL_EINVAL for
// one that is not a signal.
int stopSignal(const TaskSpec& task, const ImageDefaults& image);

// The container's hostname: spec.hostname, else the first 12 characters of the task id (as
// Docker's).
std::string containerHostname(const TaskSpec& task);

// One file a task with "dns" gets from the runtime, written in its state directory and bound
// over the image's: resolv.conf from "dns" ("nameserver" lines, then "search" and "options"
// lines when not empty); hosts ("127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost
// ip6-loopback", and "<first address>\t<hostname>" when the task has an address); hostname.
struct NetworkFile {
  std::string name;     // the file's name in the state directory: "resolv.conf", ...
  std::string target;   // where it is bound in the container: "/etc/resolv.conf", ...
  std::string content;  // the whole text, each line ending in '\n'
};

// The three files, in that order; none when the task has no "dns". Throws SHOAL_EINVAL when
// the hostname cannot stand in /etc/hosts (blanks or control characters in it).
std::vector<NetworkFile> networkFiles(const TaskSpec& task);

// Writes networkFiles(task) in `dir` (an existing directory), each atomically and mode 0644 (a
// container user other than root reads them). Nothing without "dns". Throws SHOAL_EIO naming
// the file, SHOAL_EINVAL as networkFiles.
void writeNetworkFiles(const TaskSpec& task, const std::string& dir);

// config.json text for `task` with `image`'s defaults, the root filesystem at rootfsPath
// (absolute; users are resolved from it) and the container's cgroup at cgroupsPath (runc's
// cgroupsPath, e.g. "/shoal/<task id>"). With `task.init`, initBinary (an absolute path on the
// node; a static binary such as tini-static) is bound read-only at /sbin/docker-init and runs
// the command as PID 1's child, as Docker's --init does. With `task.dns`, the networkFiles()
// in networkFilesDir (absolute; writeNetworkFiles made them) are bound ("rbind", "rprivate",
// plus "ro" for a read-only rootfs) at /etc/resolv.conf, /etc/hosts and /etc/hostname, after
// the task's own mounts; a task mount at the same target wins, as in Docker. Throws
// SHOAL_EINVAL naming what is wrong (no command, unknown user or capability, a volume mount no
// plugin provided, init without an init binary, "dns" without networkFilesDir, ...). With
// `seccomp`, the container gets defaultSeccomp() for its capabilities (seccomp.h).
// Whether this host's memory cgroup limits swap: cgroup v1's memory.memsw.limit_in_bytes
// (the kernel's swap accounting) or, on cgroup v2, memory.swap.max in a cgroup under the root.
// Docker sets a swap limit only where it does.
bool hostLimitsSwap();

std::string buildOciConfig(const TaskSpec& task, const ImageDefaults& image,
                           const std::string& rootfsPath, const std::string& cgroupsPath,
                           const std::string& initBinary = "",
                           const std::string& networkFilesDir = "", bool seccomp = true);

}  // namespace shoal::runc
