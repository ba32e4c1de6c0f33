#!/usr/bin/env python3
"""Wait until a Fluss coordinator answers GetMetadata with at least one tablet server.

Usage: probe.py HOST:PORT TIMEOUT_SECONDS. Stdlib only: the request is an empty
MetadataRequest (api key 1012), the answer is scanned for field #2 (tablet servers).
"""
import socket
import struct
import sys
import time


def varint(b, i):
    shift = v = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return v, i


def tablet_servers(payload):
    i, n = 0, 0
    while i < len(payload):
        key, i = varint(payload, i)
        field, wt = key >> 3, key & 7
        if wt == 0:
            _, i = varint(payload, i)
        elif wt == 2:
            ln, i = varint(payload, i)
            i += ln
            if field == 2:
                n += 1
        elif wt == 1:
            i += 8
        elif wt == 5:
            i += 4
        else:
            raise ValueError("bad wire type")
    return n


def probe(host, port):
    with socket.create_connection((host, port), 2) as s:
        s.settimeout(5)
        s.sendall(struct.pack(">ihhi", 8, 1012, 0, 7))
        head = b""
        while len(head) < 4:
            head += s.recv(4 - len(head))
        (ln,) = struct.unpack(">i", head)
        body = b""
        while len(body) < ln:
            chunk = s.recv(ln - len(body))
            if not chunk:
                raise OSError("closed")
            body += chunk
        if body[0] != 0:
            return 0
        return tablet_servers(body[5:])


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    deadline = time.time() + float(sys.argv[2])
    last = "no answer"
    while time.time() < deadline:
        try:
            if probe(host, int(port)) > 0:
                return 0
            last = "no tablet server registered yet"
        except (OSError, ValueError, IndexError) as e:
            last = str(e)
        time.sleep(0.3)
    print(f"probe: {sys.argv[1]}: {last}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
