// The task document (runtime.h, schema "shoal.task/v1") as the container half reads it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::runc {

// One resource limit, Docker's `--ulimit name=soft:hard` ("nofile", "nproc", ...).
struct Ulimit {
  std::string name;
  int64_t soft = 0;
  int64_t hard = 0;
};

// One entry of the spec's "mounts": Docker's Mount object (ContainerSpec.Mounts), the part of it
// this runtime acts on.
struct Mount {
  std::string type;  // "bind" | "volume" | "tmpfs" (Docker's "Type"; default "volume")
  std::string source;
  std::string target;
  bool readOnly = false;
  std::string propagation;     // BindOptions.Propagation ("" = rprivate)
  int64_t tmpfsSizeBytes = 0;  // TmpfsOptions.SizeBytes (0 = the kernel's default, half of RAM)
  uint32_t tmpfsMode = 0;      // TmpfsOptions.Mode (0 = 01777)
};

// One entry of the document's top-level "mounts" (from the storage and secrets plugins), passed
// through to the OCI spec as it is.
struct ExtraMount {
  std::string source;
  std::string target;
  std::string type;                  // "" = "bind"
  std::vector<std::string> options;  // empty = ["rbind", "rprivate"] for a bind
};

// The top-level "dns" member (the agent sends it only for a task in a network plugin's
// namespace): what the container's /etc/resolv.conf says.
struct DnsConfig {
  std::vector<std::string> nameservers;  // "nameservers": IPv4 addresses, at most 3 (glibc's)
  std::vector<std::string> search;       // "search": domains
  std::vector<std::string> options;      // "options": resolver options ("ndots:0")
};

// glibc reads at most this many nameserver lines (MAXNS).
constexpr std::size_t kMaxNameservers = 3;

// Everything the document says about one task. Strings are "" and numbers 0 when absent.
struct TaskSpec {
  std::string id;         // "id" (required)
  std::string serviceId;  // "service_id"
  int64_t slot = 0;       // "slot"
  std::string nodeId;     // "node_id"
  std::string name;       // "name"

  // "spec"
  std::string image;                 // "image" (required, non-empty)
  std::vector<std::string> command;  // "command": replaces the image's entrypoint
  std::vector<std::string> args;     // "args": replaces the image's cmd
  std::vector<std::string> env;      // "env": Docker's "K=V" strings ("K" alone unsets K)
  std::string workdir;               // "workdir"
  std::string user;                  // "user": "uid", "uid:gid", "name", "name:group"
  std::string hostname;              // "hostname"
  std::string stopSignal;            // "stop_signal" ("SIGTERM", "TERM", "15"; "" = default)
  int64_t stopGraceNs = 0;           // "stop_grace_ns"
  bool readOnly = false;             // "read_only": read-only root filesystem
  std::vector<std::string> capAdd;   // "cap_add": "NET_ADMIN", "CAP_NET_ADMIN", "ALL"
  std::vector<std::string> capDrop;  // "cap_drop"
  std::map<std::string, std::string> sysctls;  // "sysctls": {"net.ipv4.ip_forward": "1"}
  std::vector<Ulimit> ulimits;                 // "ulimits": [{"name","soft","hard"}]
  bool init = false;                           // "init"
  bool tty = false;                            // "tty": a pseudo-terminal for stdio
  std::string healthcheckJson;                 // "healthcheck": Docker's object, raw ("" = none)
  std::vector<Mount> mounts;                   // "mounts": Docker's Mount objects

  // "spec"."resources": Docker's {"Limits": {...}, "Reservations": {...}}
  int64_t memoryLimitBytes = 0;        // Limits.MemoryBytes
  int64_t nanoCpus = 0;                // Limits.NanoCPUs
  int64_t pidsLimit = 0;               // Limits.Pids
  int64_t memoryReservationBytes = 0;  // Reservations.MemoryBytes (a soft limit)
  // Memory plus swap (OCI's "swap"), 0 for no swap limit. Not read from the document: the
  // runtime sets Docker's default, twice the memory limit, where the host limits swap.
  int64_t memorySwapBytes = 0;

  std::vector<ExtraMount> extraMounts;  // top-level "mounts"
  std::string netnsPath;                // top-level "netns" ("" = a new netns, loopback only)
  // Top-level "dns": when present, the container gets its own /etc/resolv.conf, /etc/hosts and
  // /etc/hostname (oci_spec.h); when absent, the image's files stay.
  std::optional<DnsConfig> dns;
  std::vector<std::string> addresses;  // top-level "addresses": IPv4, first network first
};

// Parses a task document. Keys the Docker spec has that this runtime does not act on are
// accepted and ignored; a known key with the wrong type, a missing "id", "spec" or
// "spec.image", a "schema" other than "shoal.task/v1", a relative "netns" path, an "addresses"
// entry or "dns.nameservers" entry that is not an IPv4 address, more than kMaxNameservers
// nameservers, or an empty or blank-holding "dns.search" / "dns.options" entry is refused:
// throws shoal::sdk::Error(SHOAL_EINVAL, "task document[ of task ID]: FIELD ...") naming the
// field.
TaskSpec parseTaskDocument(std::string_view json);

}  // namespace shoal::runc
