#!/usr/bin/env python3
"""Sends hand-made IPv4 packets through a raw socket, for the lab's security checks: packets a
well-behaved pod or node never sends (spoofed sources, fragments, tunnel packets).

  rawsend.py udp SRC DST DPORT TEXT
      one UDP datagram from SRC (any address: this is the spoof) to DST:DPORT
  rawsend.py frag SRC DST DPORT IDENT OFFSET8 MF LEN
      one fragment of a TCP SYN to DST:DPORT: IP id IDENT, fragment offset OFFSET8 (8-byte
      units), more-fragments flag MF (0/1), LEN bytes of the TCP segment starting at that offset
      (offset 0 carries the TCP header with the ports)
  rawsend.py ipip OUTER_SRC OUTER_DST INNER_SRC INNER_DST DPORT TEXT
      an IPIP packet (protocol 4) carrying a UDP datagram

The kernel fills the IPv4 checksum and total length (IPPROTO_RAW implies IP_HDRINCL) and
sends the packet as it is: it neither fragments nor checks the source.
"""
import socket
import struct
import sys


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src, dst, proto, payload, ident=0x4242, frag=0):
    hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag, 64, proto, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + payload


def udp(src, dst, sport, dport, data):
    seg = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, len(seg))
    c = csum(pseudo + seg) or 0xFFFF
    return seg[:6] + struct.pack("!H", c) + seg[8:]


def tcp_syn(src, dst, sport, dport, total):
    """A SYN segment of `total` bytes (header + zero payload), checksummed as a whole."""
    hdr = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
    seg = hdr + b"\0" * max(0, total - len(hdr))
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(seg))
    c = csum(pseudo + seg)
    return seg[:16] + struct.pack("!H", c) + seg[18:]


def send(dst, packet):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.sendto(packet, (dst, 0))
    s.close()


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "udp" and len(args) == 4:
        src, dst, dport, text = args
        send(dst, ipv4(src, dst, 17, udp(src, dst, 40000, int(dport), text.encode())))
    elif cmd == "frag" and len(args) == 7:
        src, dst, dport, ident, off8, mf, length = args
        off8, length = int(off8), int(length)
        seg = tcp_syn(src, dst, 40001, int(dport), 64)
        piece = seg[off8 * 8: off8 * 8 + length]
        frag = (0x2000 if mf == "1" else 0) | off8
        send(dst, ipv4(src, dst, 6, piece, ident=int(ident, 0), frag=frag))
    elif cmd == "ipip" and len(args) == 6:
        osrc, odst, isrc, idst, dport, text = args
        inner = ipv4(isrc, idst, 17, udp(isrc, idst, 40002, int(dport), text.encode()))
        send(odst, ipv4(osrc, odst, 4, inner))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
