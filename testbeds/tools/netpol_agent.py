#!/usr/bin/env python3
"""A network-policy test agent for lab pods, as the Kubernetes e2e tests' agnhost is.

  netpol_agent.py serve ADDRESS [PORT...]  serve TCP and UDP on the ports (default 80 81; TCP: a
                                           byte, UDP: echo); prints "serving" when all listen
  netpol_agent.py probe TIMEOUT TARGET...  TARGET = NAME=ADDRESS:PORT/PROTO; probes all at once
                                           and prints one JSON object {NAME: true|false}

A TCP probe succeeds when it connects and reads the byte; a UDP probe when the echo comes back
(both within TIMEOUT seconds).
"""
import json
import socket
import socketserver
import sys
import threading


class TcpHandler(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            self.request.sendall(b"k")
        except OSError:
            pass


class UdpHandler(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        sock.sendto(data, self.client_address)


class Tcp(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = True


class Udp(socketserver.ThreadingMixIn, socketserver.UDPServer):
    allow_reuse_address = True
    daemon_threads = True


def serve(addr, ports):
    servers = []
    for port in ports:
        servers.append(Tcp((addr, port), TcpHandler))
        servers.append(Udp((addr, port), UdpHandler))
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print("serving", flush=True)
    threading.Event().wait()


def probe_one(addr, port, proto, timeout):
    try:
        if proto == "TCP":
            with socket.create_connection((addr, port), timeout=timeout) as s:
                s.settimeout(timeout)
                return s.recv(1) == b"k"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(b"ping", (addr, port))
            data, _ = s.recvfrom(16)
            return data == b"ping"
    except OSError:
        return False


def probe(timeout, targets):
    results = {}
    threads = []
    for t in targets:
        name, rest = t.split("=", 1)
        hostport, proto = rest.split("/")
        addr, port = hostport.rsplit(":", 1)

        def run(name=name, addr=addr, port=int(port), proto=proto):
            results[name] = probe_one(addr, port, proto, timeout)

        th = threading.Thread(target=run)
        th.start()
        threads.append(th)
    for th in threads:
        th.join()
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], [int(p) for p in sys.argv[3:]] or [80, 81])
    else:
        probe(float(sys.argv[2]), sys.argv[3:])
