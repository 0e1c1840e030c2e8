// runc_image without a network: reference parsing (Docker's table), digests, layer unpacking
// (plain, gzip, zstd; whiteouts, opaque dirs, ownership, xattrs, links, devices; every escape
// refused), archives (OCI layout, docker-archive), holders and remove, gc, crash leftovers and a
// corrupt index. Tars are built here with libarchive's writer. Parts that need root (ownership,
// device nodes, whiteouts, trusted.* xattrs) are skipped, with a note on stderr, when not root.
#include <archive.h>
#include <archive_entry.h>
#include <cppunit/extensions/HelperMacros.h>
#include <fcntl.h>
#include <shoal/plugin.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <shoal/plugin.hpp>

#include <dirent.h>

#include <atomic>
#include <cstdio>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "digest.h"
#include "fs_util.h"
#include "image_store.h"
#include "layer.h"
#include "manifest.h"
#include "reference.h"
#include "tests/plugins/runtime-runc/image/assert_traits.h"
#include "tests/support/temp_dir.h"

using shoal::runc::Image;
using shoal::runc::ImageStore;
using shoal::runc::Reference;
using shoal::runc::RegistryOptions;
using shoal::sdk::Error;
using shoal::test::TempDir;

namespace {

bool isRoot() { return geteuid() == 0; }

void skipNote(const std::string& what) {
  std::cerr << "\n  [skipped, needs root] " << what << "\n";
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Runs f, which must throw shoal::sdk::Error with `code` and a message containing `needle`.
void expectError(const std::function<void()>& f, shoal_status code, const std::string& needle) {
  try {
    f();
  } catch (const Error& e) {
    CPPUNIT_ASSERT_EQUAL_MESSAGE(e.what(), static_cast<int>(code), static_cast<int>(e.code()));
    CPPUNIT_ASSERT_MESSAGE(std::string(e.what()) + " lacks: " + needle, contains(e.what(), needle));
    return;
  }
  CPPUNIT_FAIL("no error; expected one containing: " + needle);
}

struct TarEntry {
  TarEntry(std::string n, char t = 'f', std::string d = "", std::string l = "", mode_t m = 0644,
           int64_t u = 0, int64_t g = 0, std::map<std::string, std::string> x = {}, dev_t r = 0)
      : name(std::move(n)),
        type(t),
        data(std::move(d)),
        link(std::move(l)),
        mode(m),
        uid(u),
        gid(g),
        xattrs(std::move(x)),
        rdev(r) {}
  std::string name;
  char type = 'f';   // f file, d dir, l symlink, h hardlink, c char device, p fifo
  std::string data;  // file content
  std::string link;  // symlink or hardlink target
  mode_t mode = 0644;
  int64_t uid = 0, gid = 0;
  std::map<std::string, std::string> xattrs;
  dev_t rdev = 0;
};

la_ssize_t appendCb(archive*, void* client, const void* buf, size_t n) {
  static_cast<std::string*>(client)->append(static_cast<const char*>(buf), n);
  return static_cast<la_ssize_t>(n);
}

// A pax tar of `entries`, uncompressed.
std::string makeTar(const std::vector<TarEntry>& entries) {
  std::string out;
  archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  archive_write_add_filter_none(a);
  archive_write_open(a, &out, nullptr, appendCb, nullptr);
  for (const TarEntry& t : entries) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, t.name.c_str());
    archive_entry_set_uid(e, t.uid);
    archive_entry_set_gid(e, t.gid);
    archive_entry_set_mtime(e, 1700000000, 0);
    switch (t.type) {
      case 'd':
        archive_entry_set_filetype(e, AE_IFDIR);
        break;
      case 'l':
        archive_entry_set_filetype(e, AE_IFLNK);
        archive_entry_set_symlink(e, t.link.c_str());
        break;
      case 'h':
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_hardlink(e, t.link.c_str());
        break;
      case 'c':
        archive_entry_set_filetype(e, AE_IFCHR);
        archive_entry_set_rdev(e, t.rdev);
        break;
      case 'p':
        archive_entry_set_filetype(e, AE_IFIFO);
        break;
      default:
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_size(e, static_cast<la_int64_t>(t.data.size()));
    }
    archive_entry_set_perm(e, t.mode);
    for (const auto& [k, v] : t.xattrs)
      archive_entry_xattr_add_entry(e, k.c_str(), v.data(), v.size());
    CPPUNIT_ASSERT_EQUAL(ARCHIVE_OK, archive_write_header(a, e));
    if (t.type == 'f' && !t.data.empty()) archive_write_data(a, t.data.data(), t.data.size());
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
  return out;
}

// `data` through a libarchive compression filter ("gzip", "zstd" or "none").
std::string compress(const std::string& data, const std::string& filter) {
  if (filter == "none") return data;
  std::string out;
  archive* a = archive_write_new();
  archive_write_set_format_raw(a);
  if (filter == "gzip") archive_write_add_filter_gzip(a);
  if (filter == "zstd") archive_write_add_filter_zstd(a);
  archive_write_set_bytes_in_last_block(a, 1);  // no zero padding after the stream
  archive_write_open(a, &out, nullptr, appendCb, nullptr);
  archive_entry* e = archive_entry_new();
  archive_entry_set_filetype(e, AE_IFREG);
  archive_entry_set_pathname(e, "data");
  archive_entry_set_size(e, static_cast<la_int64_t>(data.size()));
  archive_write_header(a, e);
  archive_write_data(a, data.data(), data.size());
  archive_entry_free(e);
  archive_write_close(a);
  archive_write_free(a);
  return out;
}

std::string writeFile(const std::string& path, const std::string& data) {
  shoal::runc::fs::mkdirs(path.substr(0, path.find_last_of('/')));
  FILE* f = std::fopen(path.c_str(), "wb");
  CPPUNIT_ASSERT(f != nullptr);
  std::fwrite(data.data(), 1, data.size(), f);
  std::fclose(f);
  return path;
}

std::string readAll(const std::string& path) { return shoal::test::readFile(path); }

struct stat lstatOf(const std::string& path) {
  struct stat st {};
  CPPUNIT_ASSERT_EQUAL_MESSAGE(path, 0, lstat(path.c_str(), &st));
  return st;
}

std::string sha(const std::string& data) { return shoal::runc::sha256Digest(data); }
std::string hex(const std::string& digest) { return digest.substr(7); }

// --- image fixtures built in memory --------------------------------------------------------

struct Layer {
  std::string tar, blob, diffId, digest;
};

Layer makeLayer(const std::vector<TarEntry>& entries, const std::string& filter = "gzip") {
  Layer l;
  l.tar = makeTar(entries);
  l.blob = compress(l.tar, filter);
  l.diffId = sha(l.tar);
  l.digest = sha(l.blob);
  return l;
}

std::string configJson(const std::vector<const Layer*>& layers, const std::string& cmd,
                       const std::string& arch = "amd64") {
  std::string ids;
  for (const Layer* l : layers) ids += (ids.empty() ? "\"" : ",\"") + l->diffId + "\"";
  return "{\"created\":\"2024-01-02T03:04:05.5Z\",\"architecture\":\"" + arch +
         "\",\"os\":\"linux\",\"config\":{\"Env\":[\"PATH=/bin\",\"A=b\"],\"Entrypoint\":null,"
         "\"Cmd\":[\"sh\",\"-c\",\"" +
         cmd +
         "\"],\"WorkingDir\":\"/srv\",\"User\":\"1000:1000\",\"StopSignal\":\"SIGINT\","
         "\"Healthcheck\":{\"Test\":[\"CMD-SHELL\",\"true\"],\"Interval\":1000000000},"
         "\"Labels\":{\"k\":\"v\"}},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[" +
         ids + "]}}";
}

std::string manifestJson(const std::string& config, const std::vector<const Layer*>& layers) {
  std::string ls;
  for (const Layer* l : layers) {
    ls += std::string(ls.empty() ? "" : ",") +
          "{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"" +
          l->digest + "\",\"size\":" + std::to_string(l->blob.size()) + "}";
  }
  return "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
         "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"" +
         sha(config) + "\",\"size\":" + std::to_string(config.size()) + "},\"layers\":[" + ls +
         "]}";
}

// An OCI layout tarball with two images sharing a base layer: "localhost/unit:v1" (base + top,
// named by io.containerd.image.name) and "example.com/unit:v2" (base only, named by a full ref
// in org.opencontainers.image.ref.name). `corruptTop` stores wrong bytes for the top layer.
struct OciFixture {
  Layer base, top;
  std::string config1, config2, manifest1, manifest2;
  std::string tarPath;
};

OciFixture makeOciLayout(const std::string& dir, bool corruptTop = false) {
  OciFixture f;
  f.base = makeLayer({{"etc", 'd', "", "", 0755},
                      {"etc/base", 'f', "base\n"},
                      {"etc/shared", 'f', "from base\n"},
                      {"bin", 'd', "", "", 0755},
                      {"bin/busybox", 'f', "#!fake\n", "", 0755},
                      {"bin/sh", 'l', "", "busybox", 0777}});
  f.top = makeLayer({{"etc/top", 'f', "top\n"}, {"etc/.wh.shared", 'f', ""}}, "zstd");
  f.config1 = configJson({&f.base, &f.top}, "echo v1");
  f.config2 = configJson({&f.base}, "echo v2");
  f.manifest1 = manifestJson(f.config1, {&f.base, &f.top});
  f.manifest2 = manifestJson(f.config2, {&f.base});
  std::string index =
      "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest."
      "v1+json\",\"digest\":\"" +
      sha(f.manifest1) + "\",\"size\":" + std::to_string(f.manifest1.size()) +
      ",\"annotations\":{\"io.containerd.image.name\":\"localhost/unit:v1\","
      "\"org.opencontainers.image.ref.name\":\"v1\"}},{\"mediaType\":\"application/vnd.oci."
      "image.manifest.v1+json\",\"digest\":\"" +
      sha(f.manifest2) + "\",\"size\":" + std::to_string(f.manifest2.size()) +
      ",\"annotations\":{\"org.opencontainers.image.ref.name\":\"example.com/unit:v2\"}}]}";
  std::vector<TarEntry> entries{{"oci-layout", 'f', "{\"imageLayoutVersion\":\"1.0.0\"}"},
                                {"index.json", 'f', index},
                                {"blobs", 'd', "", "", 0755},
                                {"blobs/sha256", 'd', "", "", 0755}};
  auto blob = [&](const std::string& data, const std::string& digest) {
    entries.push_back({"blobs/sha256/" + hex(digest), 'f', data});
  };
  blob(f.base.blob, f.base.digest);
  blob(corruptTop ? f.top.blob + "x" : f.top.blob, f.top.digest);
  blob(f.config1, sha(f.config1));
  blob(f.config2, sha(f.config2));
  blob(f.manifest1, sha(f.manifest1));
  blob(f.manifest2, sha(f.manifest2));
  f.tarPath = writeFile(dir + "/oci.tar", makeTar(entries));
  return f;
}

// A docker-archive (docker save): the base layer once, linked from a second directory as
// docker save does for a layer it writes twice; uncompressed layer.tar files.
struct DockerFixture {
  Layer base, top;
  std::string config1, config2;
  std::string tarPath;
};

DockerFixture makeDockerArchive(const std::string& dir) {
  DockerFixture f;
  f.base = makeLayer({{"etc/base", 'f', "docker base\n"}}, "none");
  f.top = makeLayer({{"etc/top", 'f', "docker top\n"}}, "none");
  f.config1 = configJson({&f.base, &f.top}, "echo docker1");
  f.config2 = configJson({&f.base}, "echo docker2");
  std::string c1 = hex(sha(f.config1)), c2 = hex(sha(f.config2));
  std::string manifest = "[{\"Config\":\"" + c1 +
                         ".json\",\"RepoTags\":[\"unit-docker:a\",\"unit-docker:b\"],\"Layers\":["
                         "\"aaa/layer.tar\",\"bbb/layer.tar\"]},{\"Config\":\"" +
                         c2 +
                         ".json\",\"RepoTags\":[\"127.0.0.1:5000/unit-docker:c\"],"
                         "\"Layers\":[\"ccc/layer.tar\"]}]";
  f.tarPath =
      writeFile(dir + "/docker.tar", makeTar({{"aaa", 'd', "", "", 0755},
                                              {"aaa/layer.tar", 'f', f.base.tar},
                                              {"bbb/layer.tar", 'f', f.top.tar},
                                              {"ccc/layer.tar", 'l', "", "../aaa/layer.tar", 0777},
                                              {c1 + ".json", 'f', f.config1},
                                              {c2 + ".json", 'f', f.config2},
                                              {"manifest.json", 'f', manifest}}));
  return f;
}

RegistryOptions noRegistry() { return RegistryOptions{}; }

}  // namespace

class RuncImageTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(RuncImageTest);
  CPPUNIT_TEST(testReferencesNormaliseLikeDocker);
  CPPUNIT_TEST(testBadReferencesAreRefusedByName);
  CPPUNIT_TEST(testHostPlatformUsesGoNames);
  CPPUNIT_TEST(testPlatformSelectionFromAnIndex);
  CPPUNIT_TEST(testSha256AndChainIds);
  CPPUNIT_TEST(testConfigAndTimeParsing);
  CPPUNIT_TEST(testUnpackPlainGzipAndZstd);
  CPPUNIT_TEST(testUnpackKeepsOwnershipAndDevicesAsRoot);
  CPPUNIT_TEST(testWhiteoutsAndOpaqueDirectories);
  CPPUNIT_TEST(testPathEscapesAreRefused);
  CPPUNIT_TEST(testCorruptLayerStreamIsAnError);
  CPPUNIT_TEST(testLoadOciLayout);
  CPPUNIT_TEST(testLoadDockerArchive);
  CPPUNIT_TEST(testUntaggedLoadIsDanglingAndGcCollectsIt);
  CPPUNIT_TEST(testLoadWithCorruptBlobLeavesNothing);
  CPPUNIT_TEST(testLoadRefusesNonArchives);
  CPPUNIT_TEST(testHoldersMakeRemoveBusyAndPersist);
  CPPUNIT_TEST(testUntagKeepsImageUntilLastName);
  CPPUNIT_TEST(testForcedRemoveOfHeldImageKeepsLayersUntilRelease);
  CPPUNIT_TEST(testGcFreesUnusedLayersAndKeepsUsedOnes);
  CPPUNIT_TEST(testCrashLeftoversAreCleanedAtStart);
  CPPUNIT_TEST(testCorruptIndexIsAClearError);
  CPPUNIT_TEST(testSecondStoreOnOneRootIsRefused);
  CPPUNIT_TEST(testConcurrentLoadsAndGcAreSafe);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testReferencesNormaliseLikeDocker() {
    const std::string d = "sha256:" + std::string(64, 'a');
    struct Case {
      const char* in;
      const char* domain;
      const char* path;
      const char* tag;
      std::string digest;
      const char* str;
      const char* familiar;
    };
    const std::vector<Case> cases = {
        {"alpine", "docker.io", "library/alpine", "latest", "", "docker.io/library/alpine:latest",
         "alpine:latest"},
        {"alpine:3.19", "docker.io", "library/alpine", "3.19", "", "docker.io/library/alpine:3.19",
         "alpine:3.19"},
        {"library/alpine", "docker.io", "library/alpine", "latest", "",
         "docker.io/library/alpine:latest", "alpine:latest"},
        {"docker.io/alpine", "docker.io", "library/alpine", "latest", "",
         "docker.io/library/alpine:latest", "alpine:latest"},
        {"index.docker.io/library/alpine:1", "docker.io", "library/alpine", "1", "",
         "docker.io/library/alpine:1", "alpine:1"},
        {"user/repo", "docker.io", "user/repo", "latest", "", "docker.io/user/repo:latest",
         "user/repo:latest"},
        {"library/a/b", "docker.io", "library/a/b", "latest", "", "docker.io/library/a/b:latest",
         "library/a/b:latest"},
        {"localhost/foo", "localhost", "foo", "latest", "", "localhost/foo:latest",
         "localhost/foo:latest"},
        {"localhost:5000/foo/bar:v1", "localhost:5000", "foo/bar", "v1", "",
         "localhost:5000/foo/bar:v1", "localhost:5000/foo/bar:v1"},
        {"127.0.0.1:5000/busybox:v1", "127.0.0.1:5000", "busybox", "v1", "",
         "127.0.0.1:5000/busybox:v1", "127.0.0.1:5000/busybox:v1"},
        {"registry.example.com/a/b-c/d_e.f:1.0-rc_1", "registry.example.com", "a/b-c/d_e.f",
         "1.0-rc_1", "", "registry.example.com/a/b-c/d_e.f:1.0-rc_1",
         "registry.example.com/a/b-c/d_e.f:1.0-rc_1"},
        {"Example.com/foo", "Example.com", "foo", "latest", "", "Example.com/foo:latest",
         "Example.com/foo:latest"},
        {"[::1]:5000/foo", "[::1]:5000", "foo", "latest", "", "[::1]:5000/foo:latest",
         "[::1]:5000/foo:latest"},
        {"a__b/c--d", "docker.io", "a__b/c--d", "latest", "", "docker.io/a__b/c--d:latest",
         "a__b/c--d:latest"},
    };
    for (const Case& c : cases) {
      Reference r = shoal::runc::parseReference(c.in);
      CPPUNIT_ASSERT_EQUAL_MESSAGE(c.in, std::string(c.domain), r.domain);
      CPPUNIT_ASSERT_EQUAL_MESSAGE(c.in, std::string(c.path), r.path);
      CPPUNIT_ASSERT_EQUAL_MESSAGE(c.in, std::string(c.tag), r.tag);
      CPPUNIT_ASSERT_EQUAL_MESSAGE(c.in, c.digest, r.digest);
      CPPUNIT_ASSERT_EQUAL_MESSAGE(c.in, std::string(c.str), r.str());
      CPPUNIT_ASSERT_EQUAL_MESSAGE(c.in, std::string(c.familiar), r.familiar());
      CPPUNIT_ASSERT_EQUAL_MESSAGE(c.in, std::string(c.domain) + "/" + c.path, r.name());
    }
    Reference byDigest = shoal::runc::parseReference("busybox@" + d);
    CPPUNIT_ASSERT_EQUAL(std::string(""), byDigest.tag);
    CPPUNIT_ASSERT_EQUAL(d, byDigest.digest);
    CPPUNIT_ASSERT_EQUAL("docker.io/library/busybox@" + d, byDigest.str());
    CPPUNIT_ASSERT_EQUAL("busybox@" + d, byDigest.familiar());
    Reference both = shoal::runc::parseReference("127.0.0.1:5000/busybox:v1@" + d);
    CPPUNIT_ASSERT_EQUAL(std::string("v1"), both.tag);
    CPPUNIT_ASSERT_EQUAL("127.0.0.1:5000/busybox:v1@" + d, both.str());
    // A 64-hex string after a name is a tag, not an id.
    CPPUNIT_ASSERT_EQUAL(std::string(64, 'b'),
                         shoal::runc::parseReference("foo:" + std::string(64, 'b')).tag);
  }

  void testBadReferencesAreRefusedByName() {
    const std::vector<std::string> bad = {
        "",
        "Alpine",
        "alpine:",
        ":v1",
        "a/B",
        "foo//bar",
        "foo/bar/",
        "-foo",
        "foo-",
        "foo:-bad",
        "foo:a b",
        "foo@sha256:abc",
        "foo@md5:0123456789abcdef0123456789abcdef",
        "foo@sha256:" + std::string(64, 'A'),
        std::string(64, 'c'),
        "http://example.com/foo",
        "example.com:port/foo",
        "foo:" + std::string(129, 't'),
        "a/" + std::string(260, 'x'),
        "foo@",
        "@sha256:" + std::string(64, 'a'),
    };
    for (const std::string& text : bad) {
      try {
        Reference r = shoal::runc::parseReference(text);
        CPPUNIT_FAIL("accepted \"" + text + "\" as " + r.str());
      } catch (const Error& e) {
        CPPUNIT_ASSERT_EQUAL_MESSAGE(text, static_cast<int>(SHOAL_EINVAL),
                                     static_cast<int>(e.code()));
        CPPUNIT_ASSERT_MESSAGE(e.what(),
                               contains(e.what(), "invalid reference \"" + text.substr(0, 64)));
      }
    }
    expectError([] { shoal::runc::parseReference("Alpine"); }, SHOAL_EINVAL,
                "repository name must be lowercase");
    expectError([] { shoal::runc::parseReference("foo@md5:0123456789abcdef0123456789abcdef"); },
                SHOAL_EINVAL, "only sha256");
  }

  void testHostPlatformUsesGoNames() {
    shoal::runc::Platform p = shoal::runc::Platform::host();
    CPPUNIT_ASSERT_EQUAL(std::string("linux"), p.os);
    CPPUNIT_ASSERT(!p.architecture.empty());
#if defined(__x86_64__)
    CPPUNIT_ASSERT_EQUAL(std::string("amd64"), p.architecture);
    CPPUNIT_ASSERT_EQUAL(std::string("linux/amd64"), p.str());
#elif defined(__aarch64__)
    CPPUNIT_ASSERT_EQUAL(std::string("arm64"), p.architecture);
#endif
  }

  void testPlatformSelectionFromAnIndex() {
    auto d = [](char c) { return "sha256:" + std::string(64, c); };
    std::string index =
        "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\","
        "\"manifests\":["
        "{\"digest\":\"" +
        d('1') +
        "\",\"size\":1,\"platform\":{\"os\":\"linux\",\"architecture\":\"arm\",\"variant\":\"v6\"}}"
        ","
        "{\"digest\":\"" +
        d('2') +
        "\",\"size\":1,\"platform\":{\"os\":\"linux\",\"architecture\":\"arm\",\"variant\":\"v7\"}}"
        ","
        "{\"digest\":\"" +
        d('3') +
        "\",\"size\":1,\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\",\"variant\":"
        "\"v8\"}},"
        "{\"digest\":\"" +
        d('4') +
        "\",\"size\":1,\"platform\":{\"os\":\"unknown\",\"architecture\":\"unknown\"}},"
        "{\"digest\":\"" +
        d('5') + "\",\"size\":1,\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}}]}";
    CPPUNIT_ASSERT(shoal::runc::isIndex("", index, "t"));
    shoal::runc::ImageIndex ix = shoal::runc::parseIndex(index, "t");
    auto pick = [&](const char* arch, const char* variant) {
      return shoal::runc::selectPlatform(ix, {"linux", arch, variant}, "t").digest;
    };
    CPPUNIT_ASSERT_EQUAL(d('5'), pick("amd64", ""));
    CPPUNIT_ASSERT_EQUAL(d('2'), pick("arm", "v7"));
    CPPUNIT_ASSERT_EQUAL(d('3'), pick("arm64", "v8"));
    CPPUNIT_ASSERT_EQUAL(d('3'), pick("arm64", ""));
    expectError([&] { pick("s390x", ""); }, SHOAL_ENOENT, "no manifest for linux/s390x");
    expectError(
        [] { shoal::runc::isIndex("", "{\"schemaVersion\":1,\"fsLayers\":[]}", "image x"); },
        SHOAL_EIO, "schema 1");
    CPPUNIT_ASSERT(!shoal::runc::isIndex(shoal::runc::media::kDockerManifest,
                                         "{\"schemaVersion\":2,\"config\":{},\"layers\":[]}", "t"));
    CPPUNIT_ASSERT(
        contains(shoal::runc::media::acceptHeader(), "application/vnd.oci.image.manifest.v1+json"));
    CPPUNIT_ASSERT(contains(shoal::runc::media::acceptHeader(),
                            "application/vnd.docker.distribution.manifest.list.v2+json"));
  }

  void testSha256AndChainIds() {
    CPPUNIT_ASSERT_EQUAL(
        std::string("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        sha("abc"));
    shoal::runc::Sha256 h;
    h.update("a");
    h.update("bc");
    CPPUNIT_ASSERT_EQUAL(sha("abc"), h.digest());
    std::vector<std::string> chain = shoal::runc::chainIds({sha("a"), sha("b"), sha("c")});
    CPPUNIT_ASSERT_EQUAL(sha("a"), chain[0]);
    CPPUNIT_ASSERT_EQUAL(sha(sha("a") + " " + sha("b")), chain[1]);
    CPPUNIT_ASSERT_EQUAL(sha(chain[1] + " " + sha("c")), chain[2]);
    expectError([] { shoal::runc::checkDigest("blob", sha("x"), sha("y")); }, SHOAL_EIO,
                "blob " + sha("x") + ": digest mismatch (got " + sha("y") + ")");
    shoal::runc::checkDigest("blob", sha("x"), sha("x"));
    CPPUNIT_ASSERT(shoal::runc::isSha256Digest(sha("x")));
    CPPUNIT_ASSERT(!shoal::runc::isSha256Digest("sha256:abc"));
  }

  void testConfigAndTimeParsing() {
    CPPUNIT_ASSERT_EQUAL(int64_t{1704164645123456789},
                         shoal::runc::parseTimeNs("2024-01-02T03:04:05.123456789Z"));
    CPPUNIT_ASSERT_EQUAL(int64_t{1704164645000000000} - 3600 * int64_t{1000000000},
                         shoal::runc::parseTimeNs("2024-01-02T03:04:05+01:00"));
    CPPUNIT_ASSERT_EQUAL(int64_t{0}, shoal::runc::parseTimeNs("yesterday"));
    Layer l = makeLayer({{"a", 'f', "a"}});
    shoal::runc::ConfigInfo info = shoal::runc::parseConfig(configJson({&l}, "echo hi"), "t");
    CPPUNIT_ASSERT_EQUAL(std::string("amd64"), info.architecture);
    CPPUNIT_ASSERT_EQUAL(std::string("linux"), info.os);
    CPPUNIT_ASSERT_EQUAL(int64_t{1704164645500000000}, info.createdNs);
    CPPUNIT_ASSERT_EQUAL(std::vector<std::string>{l.diffId}, info.diffIds);
    CPPUNIT_ASSERT_EQUAL((std::vector<std::string>{"PATH=/bin", "A=b"}), info.config.env);
    CPPUNIT_ASSERT(info.config.entrypoint.empty());
    CPPUNIT_ASSERT_EQUAL((std::vector<std::string>{"sh", "-c", "echo hi"}), info.config.cmd);
    CPPUNIT_ASSERT_EQUAL(std::string("/srv"), info.config.workingDir);
    CPPUNIT_ASSERT_EQUAL(std::string("1000:1000"), info.config.user);
    CPPUNIT_ASSERT_EQUAL(std::string("SIGINT"), info.config.stopSignal);
    CPPUNIT_ASSERT(contains(info.config.healthcheckJson, "\"CMD-SHELL\""));
    CPPUNIT_ASSERT(contains(info.config.healthcheckJson, "\"Interval\":1000000000"));
    CPPUNIT_ASSERT_EQUAL(std::string("v"), info.config.labels["k"]);
    expectError([] { shoal::runc::parseConfig("{\"rootfs\":{\"diff_ids\":[\"x\"]}}", "image y"); },
                SHOAL_EIO, "image y: diff_id \"x\"");
    expectError([] { shoal::runc::parseConfig("not json", "image y"); }, SHOAL_EIO, "image y");
  }

  void testUnpackPlainGzipAndZstd() {
    std::vector<TarEntry> entries = {
        {"./etc/", 'd', "", "", 0750},
        {"./etc/hello", 'f', "hello world\n", "", 0640},
        {"./etc/hello2", 'h', "", "./etc/hello"},
        {"./bin/", 'd', "", "", 0755},
        {"./bin/busybox", 'f', std::string(200000, 'b'), "", 04755},
        {"./bin/sh", 'l', "", "busybox", 0777},
        {"./bin/abs", 'l', "", "/etc/hello", 0777},
        {"./srv/fifo", 'p', "", "", 0600},
        {"./srv/attr", 'f', "x", "", 0644, 0, 0, {{"user.shoal", "yes"}}},
        {"./srv/empty", 'f', ""},
    };
    std::string tar = makeTar(entries);
    for (const std::string filter : {"none", "gzip", "zstd"}) {
      TempDir tmp;
      std::string blob = writeFile(tmp.file("blob"), compress(tar, filter));
      if (filter != "none") CPPUNIT_ASSERT(readAll(blob) != tar);
      std::string dest = tmp.file("layer");
      mkdir(dest.c_str(), 0700);
      shoal::runc::UnpackResult r = shoal::runc::unpackLayer(blob, dest, "layer test");
      CPPUNIT_ASSERT_EQUAL_MESSAGE(filter, sha(tar), r.diffId);
      CPPUNIT_ASSERT_EQUAL(static_cast<uint64_t>(tar.size()), r.tarBytes);
      CPPUNIT_ASSERT_EQUAL(std::string("hello world\n"), readAll(dest + "/etc/hello"));
      CPPUNIT_ASSERT_EQUAL(0640u, lstatOf(dest + "/etc/hello").st_mode & 07777u);
      CPPUNIT_ASSERT_EQUAL(0750u, lstatOf(dest + "/etc").st_mode & 07777u);
      CPPUNIT_ASSERT_EQUAL(0755u, lstatOf(dest).st_mode & 07777u);
      CPPUNIT_ASSERT_EQUAL(lstatOf(dest + "/etc/hello").st_ino,
                           lstatOf(dest + "/etc/hello2").st_ino);
      CPPUNIT_ASSERT_EQUAL(static_cast<off_t>(200000), lstatOf(dest + "/bin/busybox").st_size);
      CPPUNIT_ASSERT_EQUAL(04755u, lstatOf(dest + "/bin/busybox").st_mode & 07777u);
      char target[256] = {};
      CPPUNIT_ASSERT(readlink((dest + "/bin/sh").c_str(), target, sizeof target - 1) > 0);
      CPPUNIT_ASSERT_EQUAL(std::string("busybox"), std::string(target));
      // An absolute symlink is kept as it is (it resolves inside the container).
      std::fill(std::begin(target), std::end(target), 0);
      CPPUNIT_ASSERT(readlink((dest + "/bin/abs").c_str(), target, sizeof target - 1) > 0);
      CPPUNIT_ASSERT_EQUAL(std::string("/etc/hello"), std::string(target));
      CPPUNIT_ASSERT(S_ISFIFO(lstatOf(dest + "/srv/fifo").st_mode));
      CPPUNIT_ASSERT_EQUAL(static_cast<off_t>(0), lstatOf(dest + "/srv/empty").st_size);
      char value[16] = {};
      ssize_t n = lgetxattr((dest + "/srv/attr").c_str(), "user.shoal", value, sizeof value);
      CPPUNIT_ASSERT_EQUAL_MESSAGE("user xattr restored", std::string("yes"),
                                   std::string(value, n > 0 ? static_cast<std::size_t>(n) : 0));
      CPPUNIT_ASSERT_EQUAL(static_cast<time_t>(1700000000), lstatOf(dest + "/etc/hello").st_mtime);
    }
  }

  void testUnpackKeepsOwnershipAndDevicesAsRoot() {
    if (!isRoot()) {
      skipNote("testUnpackKeepsOwnershipAndDevicesAsRoot: ownership, device nodes, trusted.*");
      return;
    }
    TempDir tmp;
    std::string blob =
        writeFile(tmp.file("blob"),
                  compress(makeTar({{"home/u", 'd', "", "", 0700, 1234, 5678},
                                    {"home/u/file", 'f', "mine", "", 0600, 1234, 5678},
                                    {"home/u/link", 'l', "", "file", 0777, 1234, 5678},
                                    {"dev/null", 'c', "", "", 0666, 0, 0, {}, makedev(1, 3)},
                                    {"srv/t", 'f', "t", "", 0644, 0, 0, {{"trusted.shoal", "1"}}}}),
                           "gzip"));
    std::string dest = tmp.file("layer");
    mkdir(dest.c_str(), 0700);
    shoal::runc::unpackLayer(blob, dest, "layer test");
    struct stat st = lstatOf(dest + "/home/u/file");
    CPPUNIT_ASSERT_EQUAL(1234u, static_cast<unsigned>(st.st_uid));
    CPPUNIT_ASSERT_EQUAL(5678u, static_cast<unsigned>(st.st_gid));
    CPPUNIT_ASSERT_EQUAL(1234u, static_cast<unsigned>(lstatOf(dest + "/home/u").st_uid));
    CPPUNIT_ASSERT_EQUAL(1234u, static_cast<unsigned>(lstatOf(dest + "/home/u/link").st_uid));
    CPPUNIT_ASSERT_EQUAL(0700u, lstatOf(dest + "/home/u").st_mode & 07777u);
    struct stat dev = lstatOf(dest + "/dev/null");
    CPPUNIT_ASSERT(S_ISCHR(dev.st_mode));
    CPPUNIT_ASSERT_EQUAL(makedev(1, 3), dev.st_rdev);
    char value[8] = {};
    CPPUNIT_ASSERT_EQUAL(
        ssize_t{1}, lgetxattr((dest + "/srv/t").c_str(), "trusted.shoal", value, sizeof value));
  }

  void testWhiteoutsAndOpaqueDirectories() {
    if (!isRoot()) {
      skipNote("testWhiteoutsAndOpaqueDirectories: mknod 0/0 and trusted.overlay.opaque");
      return;
    }
    TempDir tmp;
    std::string blob =
        writeFile(tmp.file("blob"), compress(makeTar({{"etc", 'd', "", "", 0755},
                                                      {"etc/.wh.passwd", 'f', ""},
                                                      {"var/lib", 'd', "", "", 0755},
                                                      {"var/lib/.wh..wh..opq", 'f', ""},
                                                      {"var/lib/new", 'f', "new"},
                                                      {"gone/deep/.wh.x", 'f', ""},
                                                      {".wh.toplevel", 'f', ""},
                                                      {"etc/.wh..wh.plnk", 'f', ""}}),
                                             "gzip"));
    std::string dest = tmp.file("layer");
    mkdir(dest.c_str(), 0700);
    shoal::runc::UnpackResult r = shoal::runc::unpackLayer(blob, dest, "layer test");
    CPPUNIT_ASSERT_EQUAL(uint64_t{8}, r.entries);
    for (const std::string w : {"etc/passwd", "gone/deep/x", "toplevel"}) {
      struct stat st = lstatOf(dest + "/" + w);
      CPPUNIT_ASSERT_MESSAGE(w, S_ISCHR(st.st_mode));
      CPPUNIT_ASSERT_EQUAL_MESSAGE(w, makedev(0, 0), st.st_rdev);
      CPPUNIT_ASSERT_MESSAGE("no .wh. file left for " + w,
                             !shoal::runc::fs::exists(dest + "/" + w.substr(0, w.rfind('/') + 1) +
                                                      ".wh." + w.substr(w.rfind('/') + 1)));
    }
    char value[8] = {};
    ssize_t n =
        lgetxattr((dest + "/var/lib").c_str(), "trusted.overlay.opaque", value, sizeof value);
    CPPUNIT_ASSERT_EQUAL(ssize_t{1}, n);
    CPPUNIT_ASSERT_EQUAL('y', value[0]);
    CPPUNIT_ASSERT(!shoal::runc::fs::exists(dest + "/var/lib/.wh..wh..opq"));
    CPPUNIT_ASSERT_EQUAL(std::string("new"), readAll(dest + "/var/lib/new"));
    CPPUNIT_ASSERT(!shoal::runc::fs::exists(dest + "/etc/.wh..wh.plnk"));
    CPPUNIT_ASSERT_EQUAL(
        -1, static_cast<int>(
                lgetxattr((dest + "/etc").c_str(), "trusted.overlay.opaque", value, sizeof value)));
  }

  void testPathEscapesAreRefused() {
    TempDir tmp;
    std::string outside = tmp.file("outside");
    mkdir(outside.c_str(), 0755);
    writeFile(outside + "/secret", "secret");
    struct Case {
      const char* name;
      std::vector<TarEntry> entries;
      const char* message;
    };
    const std::vector<Case> cases = {
        {"dotdot", {{"../evil", 'f', "x"}}, "escapes the layer"},
        {"dotdot-inside", {{"a/../../evil", 'f', "x"}}, "escapes the layer"},
        {"absolute", {{"/evil", 'f', "x"}}, "is absolute"},
        {"through-absolute-symlink", {{"link", 'l', "", outside}, {"link/evil", 'f', "x"}}, ""},
        {"through-relative-symlink",
         {{"link", 'l', "", "../outside"}, {"link/evil", 'f', "x"}},
         ""},
        {"hardlink-dotdot", {{"h", 'h', "", "../outside/secret"}}, "escapes the layer"},
        {"hardlink-absolute", {{"h", 'h', "", outside + "/secret"}}, "is absolute"},
        {"hardlink-through-symlink",
         {{"link", 'l', "", outside}, {"h", 'h', "", "link/secret"}},
         ""},
        {"whiteout-through-symlink",
         {{"link", 'l', "", outside}, {"link/.wh.secret", 'f', ""}},
         "refusing to write through it"},
        {"opaque-through-symlink",
         {{"link", 'l', "", outside}, {"link/.wh..wh..opq", 'f', ""}},
         "refusing to write through it"},
    };
    for (const Case& c : cases) {
      std::string dir = tmp.file(std::string("case-") + c.name);
      mkdir(dir.c_str(), 0700);
      std::string dest = dir + "/layer";
      mkdir(dest.c_str(), 0700);
      std::string blob = writeFile(dir + "/blob", makeTar(c.entries));
      try {
        shoal::runc::unpackLayer(blob, dest, std::string("layer ") + c.name);
        CPPUNIT_FAIL(std::string("unpacked ") + c.name);
      } catch (const Error& e) {
        CPPUNIT_ASSERT_EQUAL_MESSAGE(e.what(), static_cast<int>(SHOAL_EIO),
                                     static_cast<int>(e.code()));
        CPPUNIT_ASSERT_MESSAGE(e.what(), contains(e.what(), std::string("layer ") + c.name));
        CPPUNIT_ASSERT_MESSAGE(e.what(), contains(e.what(), c.message));
      }
      CPPUNIT_ASSERT_MESSAGE(c.name, !shoal::runc::fs::exists(dir + "/evil"));
      CPPUNIT_ASSERT_MESSAGE(c.name, !shoal::runc::fs::exists(tmp.file("evil")));
      CPPUNIT_ASSERT_MESSAGE(c.name, !shoal::runc::fs::exists(outside + "/evil"));
      struct stat st = lstatOf(outside + "/secret");
      CPPUNIT_ASSERT_MESSAGE(c.name, S_ISREG(st.st_mode));
      CPPUNIT_ASSERT_EQUAL_MESSAGE(c.name, static_cast<nlink_t>(1), st.st_nlink);
      CPPUNIT_ASSERT_EQUAL(std::string("secret"), readAll(outside + "/secret"));
    }
  }

  void testCorruptLayerStreamIsAnError() {
    TempDir tmp;
    std::string gz = compress(makeTar({{"a", 'f', std::string(100000, 'a')}}), "gzip");
    std::string blob = writeFile(tmp.file("blob"), gz.substr(0, gz.size() / 2));
    std::string dest = tmp.file("layer");
    mkdir(dest.c_str(), 0700);
    expectError([&] { shoal::runc::unpackLayer(blob, dest, "layer half"); }, SHOAL_EIO,
                "layer half");
    std::string junk = writeFile(tmp.file("junk"), std::string(3000, 'j'));
    std::string dest2 = tmp.file("layer2");
    mkdir(dest2.c_str(), 0700);
    expectError([&] { shoal::runc::unpackLayer(junk, dest2, "layer junk"); }, SHOAL_EIO,
                "layer junk");
  }

  void testLoadOciLayout() {
    TempDir tmp;
    OciFixture f = makeOciLayout(tmp.path());
    auto store = std::make_unique<ImageStore>(tmp.file("store"), noRegistry());
    std::vector<Image> loaded = store->load(f.tarPath);
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, loaded.size());
    std::optional<Image> v1 = store->find("localhost/unit:v1");
    CPPUNIT_ASSERT(v1.has_value());
    CPPUNIT_ASSERT_EQUAL(sha(f.config1), v1->id);
    CPPUNIT_ASSERT_EQUAL(sha(f.manifest1), v1->manifestDigest);
    CPPUNIT_ASSERT_EQUAL(std::vector<std::string>{"localhost/unit:v1"}, v1->tags);
    CPPUNIT_ASSERT(v1->repoDigests.empty());
    CPPUNIT_ASSERT_EQUAL((std::vector<std::string>{f.base.diffId, f.top.diffId}), v1->layers);
    CPPUNIT_ASSERT_EQUAL(static_cast<uint64_t>(f.base.blob.size() + f.top.blob.size()), v1->size);
    CPPUNIT_ASSERT_EQUAL(std::string("amd64"), v1->architecture);
    CPPUNIT_ASSERT_EQUAL(int64_t{1704164645500000000}, v1->createdNs);
    CPPUNIT_ASSERT_EQUAL((std::vector<std::string>{"sh", "-c", "echo v1"}), v1->config.cmd);
    CPPUNIT_ASSERT(contains(v1->config.healthcheckJson, "CMD-SHELL"));
    std::vector<std::string> dirs = store->layerDirs(*v1);
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, dirs.size());
    CPPUNIT_ASSERT(dirs[0].rfind(store->root() + "/layers/", 0) == 0);
    CPPUNIT_ASSERT_EQUAL(std::string("top\n"), readAll(dirs[0] + "/etc/top"));  // top first
    CPPUNIT_ASSERT_EQUAL(std::string("base\n"), readAll(dirs[1] + "/etc/base"));
    CPPUNIT_ASSERT(!shoal::runc::fs::exists(dirs[0] + "/etc/base"));  // one dir per layer
    CPPUNIT_ASSERT(!shoal::runc::fs::exists(dirs[1] + "/etc/top"));
    if (isRoot()) CPPUNIT_ASSERT(S_ISCHR(lstatOf(dirs[0] + "/etc/shared").st_mode));

    std::optional<Image> v2 = store->find("example.com/unit:v2");
    CPPUNIT_ASSERT(v2.has_value());
    CPPUNIT_ASSERT_EQUAL(dirs[1], store->layerDirs(*v2).at(0));  // the base layer is shared
    // Found by id, full hex, short id, and digests.
    CPPUNIT_ASSERT(store->find(v1->id).has_value());
    CPPUNIT_ASSERT(store->find(hex(v1->id)).has_value());
    CPPUNIT_ASSERT_EQUAL(v1->id, store->find(hex(v1->id).substr(0, 12))->id);
    CPPUNIT_ASSERT_EQUAL(v1->id, store->find("localhost/unit@" + v1->manifestDigest)->id);
    CPPUNIT_ASSERT(!store->find("localhost/unit:v3").has_value());
    CPPUNIT_ASSERT(!store->find("localhost/unit@" + sha("nothing")).has_value());
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, store->list().size());
    // ensure() of a present image touches no registry (there is none).
    CPPUNIT_ASSERT_EQUAL(v1->id, store->ensure("localhost/unit:v1").id);

    // Everything survives a restart.
    const std::string root = store->root();
    store.reset();  // the first store must be gone before a second may lock the root
    store = std::make_unique<ImageStore>(root, noRegistry());
    std::optional<Image> again = store->find("localhost/unit:v1");
    CPPUNIT_ASSERT(again.has_value());
    CPPUNIT_ASSERT_EQUAL(v1->config.cmd, again->config.cmd);
    CPPUNIT_ASSERT_EQUAL(v1->config.healthcheckJson, again->config.healthcheckJson);
    CPPUNIT_ASSERT_EQUAL(v1->config.labels, again->config.labels);
    CPPUNIT_ASSERT_EQUAL(v1->createdNs, again->createdNs);
    CPPUNIT_ASSERT_EQUAL(v1->size, again->size);
    CPPUNIT_ASSERT_EQUAL(v1->manifestDigest, again->manifestDigest);
    // Loading the same archive again is idempotent.
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, store->load(f.tarPath).size());
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, store->list().size());
  }

  void testLoadDockerArchive() {
    TempDir tmp;
    DockerFixture f = makeDockerArchive(tmp.path());
    ImageStore store(tmp.file("store"), noRegistry());
    std::vector<Image> loaded = store.load(f.tarPath);
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, loaded.size());
    std::optional<Image> a = store.find("unit-docker:a");
    CPPUNIT_ASSERT(a.has_value());
    CPPUNIT_ASSERT_EQUAL(sha(f.config1), a->id);
    CPPUNIT_ASSERT_EQUAL(std::string(""), a->manifestDigest);
    CPPUNIT_ASSERT_EQUAL((std::vector<std::string>{"docker.io/library/unit-docker:a",
                                                   "docker.io/library/unit-docker:b"}),
                         a->tags);
    CPPUNIT_ASSERT_EQUAL(a->id, store.find("docker.io/library/unit-docker:b")->id);
    CPPUNIT_ASSERT_EQUAL(static_cast<uint64_t>(f.base.tar.size() + f.top.tar.size()), a->size);
    std::vector<std::string> dirs = store.layerDirs(*a);
    CPPUNIT_ASSERT_EQUAL(std::string("docker top\n"), readAll(dirs[0] + "/etc/top"));
    CPPUNIT_ASSERT_EQUAL(std::string("docker base\n"), readAll(dirs[1] + "/etc/base"));
    std::optional<Image> c = store.find("127.0.0.1:5000/unit-docker:c");
    CPPUNIT_ASSERT(c.has_value());
    CPPUNIT_ASSERT_EQUAL(dirs[1], store.layerDirs(*c).at(0));
  }

  void testUntaggedLoadIsDanglingAndGcCollectsIt() {
    TempDir tmp;
    Layer l = makeLayer({{"etc/untagged", 'f', "u\n"}}, "none");
    std::string config = configJson({&l}, "true");
    std::string c = hex(sha(config));
    std::string archive =
        writeFile(tmp.file("untagged.tar"),
                  makeTar({{"l/layer.tar", 'f', l.tar},
                           {c + ".json", 'f', config},
                           {"manifest.json", 'f',
                            "[{\"Config\":\"" + c +
                                ".json\",\"RepoTags\":null,\"Layers\":[\"l/layer.tar\"]}]"}}));
    ImageStore store(tmp.file("store"), noRegistry());
    std::vector<Image> loaded = store.load(archive);
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, loaded.size());
    CPPUNIT_ASSERT(loaded[0].tags.empty());
    CPPUNIT_ASSERT(store.find(loaded[0].id).has_value());
    store.acquire(loaded[0].id, "c");
    CPPUNIT_ASSERT_EQUAL(std::size_t{0}, store.gc().images);  // held
    store.release(loaded[0].id, "c");
    ImageStore::GcResult g = store.gc();
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, g.images);
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, g.layers);
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, g.blobs);
    CPPUNIT_ASSERT(!store.find(loaded[0].id).has_value());
  }

  void testLoadWithCorruptBlobLeavesNothing() {
    TempDir tmp;
    OciFixture f = makeOciLayout(tmp.path(), /*corruptTop=*/true);
    ImageStore store(tmp.file("store"), noRegistry());
    expectError([&] { store.load(f.tarPath); }, SHOAL_EIO,
                "blob " + f.top.digest + ": digest mismatch (got sha256:");
    CPPUNIT_ASSERT(!store.find("localhost/unit:v1").has_value());
    std::vector<std::string> chain = shoal::runc::chainIds({f.base.diffId, f.top.diffId});
    CPPUNIT_ASSERT(!shoal::runc::fs::exists(store.root() + "/layers/" + hex(chain[1])));
    CPPUNIT_ASSERT(!shoal::runc::fs::exists(store.root() + "/blobs/sha256/" + hex(f.top.digest)));
    CPPUNIT_ASSERT_EQUAL(0, countEntries(store.root() + "/tmp"));

    // A layer whose content is not what the config's diff_id says.
    TempDir tmp2;
    DockerFixture d = makeDockerArchive(tmp2.path());
    std::string lie = d.config1;
    lie.replace(lie.find(d.top.diffId), d.top.diffId.size(), sha("something else"));
    std::string c1 = hex(sha(lie));
    std::string archive = writeFile(
        tmp2.file("lie.tar"),
        makeTar({{"l1/layer.tar", 'f', d.base.tar},
                 {"l2/layer.tar", 'f', d.top.tar},
                 {c1 + ".json", 'f', lie},
                 {"manifest.json", 'f',
                  "[{\"Config\":\"" + c1 +
                      ".json\",\"RepoTags\":[\"lie:1\"],\"Layers\":[\"l1/layer.tar\",\"l2/"
                      "layer.tar\"]}]"}}));
    expectError([&] { store.load(archive); }, SHOAL_EIO, "digest mismatch");
    CPPUNIT_ASSERT(!store.find("lie:1").has_value());
    CPPUNIT_ASSERT_EQUAL(0, countEntries(store.root() + "/tmp"));
  }

  void testLoadRefusesNonArchives() {
    TempDir tmp;
    ImageStore store(tmp.file("store"), noRegistry());
    expectError([&] { store.load(tmp.file("missing.tar")); }, SHOAL_ENOENT, "missing.tar");
    std::string notTar = writeFile(tmp.file("x.tar"), std::string(5000, 'x'));
    expectError([&] { store.load(notTar); }, SHOAL_EINVAL, "x.tar");
    std::string empty = writeFile(tmp.file("e.tar"), makeTar({{"hello", 'f', "hi"}}));
    expectError([&] { store.load(empty); }, SHOAL_EINVAL, "neither a docker-archive");
    std::string evil = writeFile(tmp.file("evil.tar"), makeTar({{"../evil", 'f', "x"}}));
    expectError([&] { store.load(evil); }, SHOAL_EINVAL, "escapes the archive");
    CPPUNIT_ASSERT(!shoal::runc::fs::exists(store.root() + "/evil"));
    CPPUNIT_ASSERT_EQUAL(0, countEntries(store.root() + "/tmp"));
  }

  void testHoldersMakeRemoveBusyAndPersist() {
    TempDir tmp;
    OciFixture f = makeOciLayout(tmp.path());
    std::string root = tmp.file("store");
    std::string id;
    {
      ImageStore store(root, noRegistry());
      store.load(f.tarPath);
      id = store.find("localhost/unit:v1")->id;
      store.acquire(id, "task-1");
      store.acquire(id, "task-1");  // idempotent
      store.acquire(id, "task-2");
      expectError([&] { store.remove("localhost/unit:v1", false); }, SHOAL_EBUSY,
                  "in use by 2 containers: task-1, task-2");
      expectError([&] { store.remove(id, false); }, SHOAL_EBUSY, "in use");
      expectError([&] { store.acquire(sha("nope"), "task-3"); }, SHOAL_ENOENT, "no such image");
      expectError([&] { store.remove("localhost/unit:nope", false); }, SHOAL_ENOENT,
                  "no such image");
      CPPUNIT_ASSERT(store.find("localhost/unit:v1").has_value());
    }
    ImageStore store(root, noRegistry());  // holders are persisted
    expectError([&] { store.remove("localhost/unit:v1", false); }, SHOAL_EBUSY, "task-1");
    store.release(id, "task-1");
    store.release(id, "task-1");
    store.release(id, "never-held");
    store.release(sha("unknown"), "task-2");
    expectError([&] { store.remove("localhost/unit:v1", false); }, SHOAL_EBUSY,
                "in use by 1 container: task-2");
    store.release(id, "task-2");
    store.remove("localhost/unit:v1", false);
    CPPUNIT_ASSERT(!store.find("localhost/unit:v1").has_value());
    CPPUNIT_ASSERT(!store.find(id).has_value());
    CPPUNIT_ASSERT(store.find("example.com/unit:v2").has_value());
  }

  void testUntagKeepsImageUntilLastName() {
    TempDir tmp;
    DockerFixture f = makeDockerArchive(tmp.path());
    ImageStore store(tmp.file("store"), noRegistry());
    store.load(f.tarPath);
    std::string id = store.find("unit-docker:a")->id;
    store.acquire(id, "c1");
    store.remove("unit-docker:a", false);  // another tag remains: only an untag, not busy
    CPPUNIT_ASSERT(!store.find("unit-docker:a").has_value());
    CPPUNIT_ASSERT_EQUAL(std::vector<std::string>{"docker.io/library/unit-docker:b"},
                         store.find(id)->tags);
    expectError([&] { store.remove("unit-docker:b", false); }, SHOAL_EBUSY, "c1");
    store.release(id, "c1");
    store.remove("unit-docker:b", false);
    CPPUNIT_ASSERT(!store.find(id).has_value());
  }

  void testForcedRemoveOfHeldImageKeepsLayersUntilRelease() {
    TempDir tmp;
    OciFixture f = makeOciLayout(tmp.path());
    ImageStore store(tmp.file("store"), noRegistry());
    store.load(f.tarPath);
    Image v1 = *store.find("localhost/unit:v1");
    store.acquire(v1.id, "c1");
    store.remove("localhost/unit:v1", true);
    CPPUNIT_ASSERT(!store.find("localhost/unit:v1").has_value());
    std::optional<Image> held = store.find(v1.id);
    CPPUNIT_ASSERT(held.has_value());
    CPPUNIT_ASSERT(held->tags.empty());
    ImageStore::GcResult g = store.gc();
    CPPUNIT_ASSERT_EQUAL(std::size_t{0}, g.images);
    CPPUNIT_ASSERT_EQUAL(std::size_t{0}, g.layers);
    for (const std::string& d : store.layerDirs(v1)) CPPUNIT_ASSERT(shoal::runc::fs::isDir(d));
    store.release(v1.id, "c1");
    g = store.gc();
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, g.images);
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, g.layers);  // the top; the base is v2's too
    CPPUNIT_ASSERT(!store.find(v1.id).has_value());
  }

  void testGcFreesUnusedLayersAndKeepsUsedOnes() {
    TempDir tmp;
    OciFixture f = makeOciLayout(tmp.path());
    ImageStore store(tmp.file("store"), noRegistry());
    store.load(f.tarPath);
    Image v1 = *store.find("localhost/unit:v1");
    Image v2 = *store.find("example.com/unit:v2");
    std::vector<std::string> dirs = store.layerDirs(v1);
    ImageStore::GcResult none = store.gc();
    CPPUNIT_ASSERT_EQUAL(std::size_t{0}, none.layers + none.blobs + none.images);
    store.acquire(v2.id, "c2");
    store.remove("localhost/unit:v1", false);
    ImageStore::GcResult g = store.gc();
    CPPUNIT_ASSERT_EQUAL(std::size_t{0}, g.images);  // remove already deleted the record
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, g.layers);
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, g.blobs);  // v1's manifest and config
    CPPUNIT_ASSERT(g.bytes > 0);
    CPPUNIT_ASSERT(!shoal::runc::fs::exists(dirs[0]));
    CPPUNIT_ASSERT(shoal::runc::fs::isDir(dirs[1]));  // v2 uses the base
    CPPUNIT_ASSERT_EQUAL(std::string("base\n"), readAll(dirs[1] + "/etc/base"));
    CPPUNIT_ASSERT(shoal::runc::fs::exists(store.root() + "/blobs/sha256/" + hex(v2.id)));
    CPPUNIT_ASSERT(!shoal::runc::fs::exists(store.root() + "/blobs/sha256/" + hex(v1.id)));
    CPPUNIT_ASSERT_EQUAL(0, countEntries(store.root() + "/tmp"));
    ImageStore::GcResult again = store.gc();
    CPPUNIT_ASSERT_EQUAL(std::size_t{0}, again.layers + again.blobs + again.images);
    // The image is whole again after a reload of the same archive.
    store.load(f.tarPath);
    CPPUNIT_ASSERT_EQUAL(
        std::string("top\n"),
        readAll(store.layerDirs(*store.find("localhost/unit:v1"))[0] + "/etc/top"));
  }

  void testCrashLeftoversAreCleanedAtStart() {
    TempDir tmp;
    OciFixture f = makeOciLayout(tmp.path());
    std::string root = tmp.file("store");
    std::vector<std::string> dirs;
    {
      ImageStore store(root, noRegistry());
      store.load(f.tarPath);
      dirs = store.layerDirs(*store.find("localhost/unit:v1"));
    }
    // What a crash mid-pull, mid-unpack, mid-write and mid-gc leaves behind.
    writeFile(root + "/tmp/blob-1-2-3", "half a download");
    writeFile(root + "/tmp/layer-1-2-3/etc/passwd", "half a layer");
    writeFile(root + "/tmp/write-1-2-3", "{\"version\":1,");
    writeFile(root + "/tmp/gc-1-2-3/x", "a victim");
    writeFile(root + "/layers/not-a-layer/x", "stray");
    writeFile(root + "/blobs/sha256/partial.tmp", "stray");
    ImageStore store(root, noRegistry());
    CPPUNIT_ASSERT_EQUAL(0, countEntries(root + "/tmp"));
    CPPUNIT_ASSERT(!shoal::runc::fs::exists(root + "/layers/not-a-layer"));
    CPPUNIT_ASSERT(!shoal::runc::fs::exists(root + "/blobs/sha256/partial.tmp"));
    for (const std::string& d : dirs) CPPUNIT_ASSERT(shoal::runc::fs::isDir(d));
    CPPUNIT_ASSERT(store.find("localhost/unit:v1").has_value());
    // A layer dir that vanished (deleted by hand) makes ensure() fetch again, not return a
    // broken image; with no registry to fetch from, that is an error, not a stale answer.
    shoal::runc::fs::removeTree(dirs[0]);
    CPPUNIT_ASSERT_THROW(store.ensure("localhost/unit:v1"), Error);
  }

  void testCorruptIndexIsAClearError() {
    TempDir tmp;
    std::string root = tmp.file("store");
    { ImageStore store(root, noRegistry()); }
    const std::vector<std::string> bad = {
        "{not json",
        "[]",
        "{\"version\":2,\"images\":[]}",
        "{\"version\":1}",
        "{\"version\":1,\"images\":[{\"id\":\"bad\"}]}",
        "{\"version\":1,\"images\":[{\"id\":\"" + sha("x") + "\",\"layers\":[\"nope\"]}]}",
        "{\"version\":1,\"images\":[{\"id\":\"" + sha("x") + "\",\"tags\":7}]}",
        "",
    };
    for (const std::string& text : bad) {
      writeFile(root + "/images.json", text);
      try {
        ImageStore store(root, noRegistry());
        CPPUNIT_FAIL("opened a store whose index is: " + text);
      } catch (const Error& e) {
        CPPUNIT_ASSERT_EQUAL_MESSAGE(text, static_cast<int>(SHOAL_EIO), static_cast<int>(e.code()));
        CPPUNIT_ASSERT_MESSAGE(e.what(), contains(e.what(), root + "/images.json is corrupt"));
      }
    }
    writeFile(root + "/images.json", "{\"version\":1,\"images\":[]}");
    ImageStore store(root, noRegistry());
    CPPUNIT_ASSERT(store.list().empty());
  }

  void testSecondStoreOnOneRootIsRefused() {
    TempDir tmp;
    ImageStore store(tmp.file("store"), noRegistry());
    expectError([&] { ImageStore other(tmp.file("store"), noRegistry()); }, SHOAL_EBUSY,
                "in use by another image store");
    expectError([&] { ImageStore rel("relative/dir", noRegistry()); }, SHOAL_EINVAL,
                "not an absolute path");
  }

  void testConcurrentLoadsAndGcAreSafe() {
    TempDir tmp;
    OciFixture f = makeOciLayout(tmp.path());
    DockerFixture d = makeDockerArchive(tmp.path());
    ImageStore store(tmp.file("store"), noRegistry());
    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    for (int i = 0; i < 4; ++i) {
      threads.emplace_back([&, i] {
        try {
          for (int k = 0; k < 3; ++k) {
            store.load(i % 2 ? f.tarPath : d.tarPath);
            store.gc();
          }
        } catch (const std::exception& e) {
          std::cerr << "concurrent load failed: " << e.what() << "\n";
          ++failures;
        }
      });
    }
    for (std::thread& t : threads) t.join();
    CPPUNIT_ASSERT_EQUAL(0, failures.load());
    CPPUNIT_ASSERT_EQUAL(std::size_t{4}, store.list().size());
    for (const Image& im : store.list()) {
      for (const std::string& dir : store.layerDirs(im)) {
        CPPUNIT_ASSERT_MESSAGE(dir, shoal::runc::fs::isDir(dir));
      }
    }
    CPPUNIT_ASSERT_EQUAL(0, countEntries(store.root() + "/tmp"));
  }

 private:
  static int countEntries(const std::string& dir) {
    int n = 0;
    if (DIR* d = opendir(dir.c_str())) {
      while (struct dirent* e = readdir(d)) {
        std::string name = e->d_name;
        if (name != "." && name != "..") ++n;
      }
      closedir(d);
    }
    return n;
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(RuncImageTest);
