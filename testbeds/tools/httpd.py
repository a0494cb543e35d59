#!/usr/bin/env python3
"""A minimal HTTP server for lab pods ("nginx"): serves a page on ADDRESS:PORT.

Unlike `python3 -m http.server`, it does not look its own address up in DNS before
listening (HTTPServer.server_bind calls socket.getfqdn, which blocks for the resolver's
timeouts inside a network namespace without DNS), and it says when it listens.
Usage: httpd.py ADDRESS [PORT]
"""
import http.server
import socketserver
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("hello from %s\n" % self.server.server_address[0]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    addr = sys.argv[1]
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 80
    with Server((addr, port), Handler) as s:
        print("listening on %s:%d" % (addr, port), flush=True)
        s.serve_forever()


if __name__ == "__main__":
    main()
