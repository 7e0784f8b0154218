#!/usr/bin/python3
"""Decode a provium event stream (4-byte big-endian length, then a msgpack
map) with Debian's python3-msgpack, an independent decoder; print one JSON
object per event. Reads a file, stdin (-), or the clients' side of
--events-socket (--socket PATH, waiting up to 20 s for it to appear)."""
import json
import socket
import struct
import sys
import time

import msgpack


def frames(read):
    while True:
        head = read(4)
        if not head:
            return
        if len(head) < 4:
            raise SystemExit("truncated length")
        (n,) = struct.unpack(">I", head)
        body = read(n)
        if len(body) != n:
            raise SystemExit("truncated frame")
        yield msgpack.unpackb(body, raw=False)


def reader(f):
    def read(n):
        out = b""
        while len(out) < n:
            chunk = f.read(n - len(out))
            if not chunk:
                break
            out += chunk
        return out
    return read


def main():
    if sys.argv[1] == "--socket":
        s = socket.socket(socket.AF_UNIX)
        for _ in range(400):
            try:
                s.connect(sys.argv[2])
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise SystemExit("no socket at " + sys.argv[2])
        src = s.makefile("rb")
    elif sys.argv[1] == "-":
        src = sys.stdin.buffer
    else:
        src = open(sys.argv[1], "rb")
    for e in frames(reader(src)):
        print(json.dumps(e, sort_keys=True), flush=True)


main()
