// Unpacking one image layer (a tar, plain or gzip- or zstd-compressed) into a directory that
// overlayfs stacks as a lower layer.
#pragma once

#include <cstdint>
#include <string>

namespace shoal::runc {

struct UnpackResult {
  std::string diffId;     // "sha256:..." of the uncompressed tar stream
  uint64_t tarBytes = 0;  // length of the uncompressed stream
  uint64_t entries = 0;   // tar entries read (whiteouts included)
};

// Unpacks the layer in file `blobPath` into `destDir` (an existing, empty directory the caller
// owns) and returns the digest of the uncompressed stream, for the caller to compare with the
// config's diff_id. `what` names the layer in messages ("layer sha256:ab12...").
//
// Kept: ownership (numeric ids, when running as root), modes (setuid included), times, xattrs,
// symlinks, hardlinks within the layer, device nodes and fifos. Whiteouts become overlayfs's:
// ".wh.NAME" a 0/0 character device NAME, ".wh..wh..opq" the xattr trusted.overlay.opaque=y on
// its directory (both need root); other ".wh..wh.*" entries are dropped.
// Refused (SHOAL_EIO naming the entry): absolute paths, "..", anything that would be written
// through a symlink, hardlinks to outside the layer. Nothing outside destDir is ever written:
// the work runs on a thread of its own whose working directory is destDir (unshare(CLONE_FS)),
// with libarchive's ARCHIVE_EXTRACT_SECURE_* checks. On error destDir holds a partial tree the
// caller must remove.
// THREAD: any; several unpacks may run at once.
UnpackResult unpackLayer(const std::string& blobPath, const std::string& destDir,
                         const std::string& what);

}  // namespace shoal::runc
