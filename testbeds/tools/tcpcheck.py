#!/usr/bin/env python3
"""TCP transfer with an end-to-end checksum, for lab tests (standard library only).

  tcpcheck.py serve PORT            accept one connection, read to EOF, print "<bytes> <sha256>"
  tcpcheck.py send HOST PORT BYTES  send BYTES of deterministic data, print "<bytes> <sha256>"

Both sides print the same line when every byte arrived intact and in order.
"""
import hashlib
import socket
import sys


def serve(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(1)
        print("listening", flush=True)
        s.settimeout(60)
        conn, _ = s.accept()
        conn.settimeout(60)
        h = hashlib.sha256()
        n = 0
        with conn:
            while True:
                b = conn.recv(1 << 16)
                if not b:
                    break
                h.update(b)
                n += len(b)
        print(n, h.hexdigest(), flush=True)


def send(host, port, total):
    h = hashlib.sha256()
    block = bytes((i * 7 + 3) % 251 for i in range(1 << 16))
    with socket.create_connection((host, port), timeout=30) as s:
        sent = 0
        while sent < total:
            chunk = block[: min(len(block), total - sent)]
            s.sendall(chunk)
            h.update(chunk)
            sent += len(chunk)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(30)
        while s.recv(1 << 16):
            pass
    print(sent, h.hexdigest(), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    elif len(sys.argv) == 5 and sys.argv[1] == "send":
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
