// What the supervisor hands its daemons (src/cli/supervisor.h): the mount's
// configuration, byte for byte, and the fd list.
#include <doctest/doctest.h>

#include "cli/config.h"
#include "cli/supervisor.h"

using namespace wbfs;
using namespace wbfs::cli;

TEST_CASE("the configuration survives the handover byte for byte") {
  MountConfig c;
  c.backing = "/srv/b\xff,k =\n.img";  // not UTF-8, a comma, a newline
  c.cache = "/ssd/c.cache";
  c.mountpoint = "/mnt/\xfe";
  c.image_name = "disk";
  c.journal = "none";
  c.ceph_conf = "";
  c.ceph_client_id = "wbfs";
  c.allow_other = true;
  c.accept_loss = true;
  c.restart_limit = 7;
  c.restart_interval = 30;
  c.tunables.writeback_threshold = 0;
  c.tunables.max_dirty_age = 600;
  MountConfig d;
  d.image_name = "other";
  REQUIRE(DecodeConfig(EncodeConfig(c), &d).ok());
  CHECK(d.backing == c.backing);
  CHECK(d.cache == c.cache);
  CHECK(d.mountpoint == c.mountpoint);
  CHECK(d.image_name == "disk");
  CHECK(d.journal == "none");
  CHECK(d.ceph_conf.empty());
  CHECK(d.ceph_client_id == "wbfs");
  CHECK(d.allow_other);
  CHECK(d.accept_loss);
  CHECK(d.restart_limit == 7);
  CHECK(d.restart_interval == 30);
  CHECK(d.tunables.writeback_threshold == 0);
  CHECK(d.tunables.max_dirty_age == 600);
  CHECK(EncodeConfig(d) == EncodeConfig(c));

  MountConfig e;
  CHECK_FALSE(DecodeConfig("backing=2\n", &e).ok());            // odd hex
  CHECK_FALSE(DecodeConfig("no_such_key=31\n", &e).ok());       // unknown
  CHECK_FALSE(DecodeConfig("restart_limit=313030303030\n", &e).ok());  // out of range
}

TEST_CASE("restart_limit and restart_interval are config keys, range-checked") {
  MountConfig c;
  CHECK(c.restart_limit == 10);
  CHECK(c.restart_interval == 60);
  CHECK(ApplyOption("restart_limit=0", &c).ok());
  CHECK(c.restart_limit == 0);
  CHECK(ApplyOption("restart_interval=5", &c).ok());
  CHECK(c.restart_interval == 5);
  CHECK_FALSE(ApplyOption("restart_limit=101", &c).ok());
  CHECK_FALSE(ApplyOption("restart_interval=0", &c).ok());
  CHECK_FALSE(ApplyOption("restart_limit=x", &c).ok());
}

TEST_CASE("the handover's fd list") {
  Handover h;
  h.config_fd = 5;
  h.chan_fd = 9;
  h.ack_fd = 6;
  h.session_fd = 7;
  h.fuse_fd = 4;
  h.ready_fd = -1;
  h.foreground = true;
  Handover g;
  REQUIRE(DecodeHandover(EncodeHandover(h), &g));
  CHECK(g.config_fd == 5);
  CHECK(g.chan_fd == 9);
  CHECK(g.ack_fd == 6);
  CHECK(g.session_fd == 7);
  CHECK(g.fuse_fd == 4);
  CHECK(g.ready_fd == -1);
  CHECK(g.foreground);
  CHECK_FALSE(DecodeHandover("5,9,6,7,4,-1", &g));
  CHECK_FALSE(DecodeHandover("5,9,6,7,4,-1,0x", &g));
  CHECK_FALSE(DecodeHandover("-1,9,6,7,4,-1,0", &g));
}
