#!/usr/bin/env python3
"""Sends malformed frames out of an interface with a raw AF_PACKET socket (lab tests only).

  blast.py IFACE COUNT SRC_MAC DST_MAC NODE_IP PEER_IP [KIND,KIND,...]

Cycles through the kinds (default all): random (random bytes), truncated (Ethernet/IPv4 headers
cut at every length), bad_checksum (IPv4), ihl4, wrong_vni (VXLAN to NODE_IP from PEER_IP with
VNI 4097), unknown_ipip (IPIP to NODE_IP from 192.168.10.77). Prints how many of each it sent.
"""
import random
import socket
import struct
import sys


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def ipv4(src, dst, proto, payload, ttl=64, ihl=5):
    h = struct.pack("!BBHHHBBH4s4s", (4 << 4) | ihl, 0, 20 + len(payload), 0, 0x4000, ttl, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return h + payload


def main():
    iface, count, smac, dmac, node, peer = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
    mac = lambda m: bytes(int(x, 16) for x in m.split(":"))
    eth = mac(dmac) + mac(smac)
    rnd = random.Random(7)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    good = eth + b"\x08\x00" + ipv4("172.16.158.1", "172.16.184.1", 17, struct.pack("!HHHH", 1, 2, 12, 0) + b"abcd")
    kinds = {
        "random": lambda: bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 120))),
        "truncated": lambda: good[: rnd.randint(0, 33)],
        "bad_checksum": lambda: good[:24] + bytes([good[24] ^ 0xFF]) + good[25:],
        "ihl4": lambda: good[:14] + bytes([0x44]) + good[15:],
        "wrong_vni": lambda: eth + b"\x08\x00" + ipv4(peer, node, 17, struct.pack("!HHHH", 40000, 4789, 8 + 8 + len(good), 0)
                                                    + bytes([8, 0, 0, 0, 0, 0x10, 0x01, 0]) + good),
        "unknown_ipip": lambda: eth + b"\x08\x00" + ipv4("192.168.10.77", node, 4, good[14:]),
    }
    if len(sys.argv) > 7:
        kinds = {k: kinds[k] for k in sys.argv[7].split(",")}
    sent = {k: 0 for k in kinds}
    names = list(kinds)
    for i in range(count):
        k = names[i % len(names)]
        f = kinds[k]()
        if len(f) < 14:
            f = f + b"\0" * (14 - len(f))  # the kernel refuses shorter than a header; pad
        try:
            s.send(f)
            sent[k] += 1
        except OSError:
            pass
    print(" ".join("%s=%d" % kv for kv in sent.items()))


if __name__ == "__main__":
    main()
