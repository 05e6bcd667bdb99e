#!/usr/bin/env python3
"""A raw client (and fake daemon) for wbfs's control socket, for the
end-to-end tests: sends bytes wbfs's own CLI never would.

  ctl_client.py path MOUNTPOINT          the socket path (as src/ctl/ctl.cc)
  ctl_client.py send SOCK HEX            sends the bytes, prints the reply line
  ctl_client.py flood SOCK N             N status requests, never reads; sleeps
  ctl_client.py hold SOCK N              N idle connections; sleeps
  ctl_client.py fake SOCK REPLY [UID]    a fake daemon answering REPLY to
                                         every line; listens as UID if given
"""
import os
import socket
import sys
import time


def sock_path(mnt):
    h = 1469598103934665603
    for c in os.fsencode(mnt):
        h ^= c
        h = (h * 1099511628211) % (1 << 64)
    d = "/run/wbfs" if os.geteuid() == 0 else (
        os.environ.get("XDG_RUNTIME_DIR", "") + "/wbfs" if os.environ.get("XDG_RUNTIME_DIR")
        else "/tmp/wbfs-%d" % os.geteuid())
    return "%s/mnt-%016x.sock" % (d, h)


def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)  # blocking: waits for room in the listen backlog
    s.settimeout(20)
    return s


def main():
    cmd = sys.argv[1]
    if cmd == "path":
        print(sock_path(sys.argv[2]))
    elif cmd == "send":
        s = connect(sys.argv[2])
        try:
            s.sendall(bytes.fromhex(sys.argv[3]))
        except BrokenPipeError:  # refused at once: its reason is still to read
            pass
        got = b""
        while b"\n" not in got:
            b = s.recv(65536)
            if not b:
                break
            got += b
        sys.stdout.write(got.split(b"\n")[0].decode("utf-8", "backslashreplace") + "\n")
    elif cmd == "flood":
        s = connect(sys.argv[2])
        s.setblocking(False)
        sent = 0
        for _ in range(int(sys.argv[3])):
            try:
                s.send(b"status\n")
                sent += 1
            except BlockingIOError:
                break
        print("sent %d" % sent, flush=True)
        time.sleep(600)
    elif cmd == "hold":
        conns = [connect(sys.argv[2]) for _ in range(int(sys.argv[3]))]
        print("holding %d" % len(conns), flush=True)
        time.sleep(600)
    elif cmd == "fake":
        path, reply = sys.argv[2], sys.argv[3].encode()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        os.chmod(path, 0o666)
        if len(sys.argv) > 4:  # the peer's credentials are taken at listen()
            os.setresgid(int(sys.argv[4]), int(sys.argv[4]), int(sys.argv[4]))
            os.setresuid(int(sys.argv[4]), int(sys.argv[4]), int(sys.argv[4]))
        s.listen(4)
        print("listening", flush=True)
        while True:
            c, _ = s.accept()
            c.settimeout(5)
            try:
                if c.recv(4096):
                    c.sendall(reply + b"\n")
            except OSError:
                pass
            c.close()


main()
