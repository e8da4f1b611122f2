"""A code-interpreter-shaped sandbox for the capture tests.

It keeps its state only in memory: a counter a thread bumps ten times a
second (printed, one number a line, like the busybox counter) and a secret
drawn at start. It serves both on a listening TCP socket, 127.0.0.1:8000:
GET / answers "n=<counter> secret=<secret>". A clone restored from a capture
answers with the same secret and a counter that went on from the captured
value; a fresh start would draw a new secret and count from 1.
"""
import http.server
import os
import sys
import threading
import time

state = {"n": 0, "secret": os.urandom(8).hex()}
print("secret=" + state["secret"], flush=True)


def count():
    while True:
        state["n"] += 1
        print(state["n"], flush=True)
        time.sleep(0.1)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("n=%d secret=%s\n" % (state["n"], state["secret"])).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


threading.Thread(target=count, daemon=True).start()
port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
# The loopback interface may come up after the process starts.
while True:
    try:
        server = http.server.HTTPServer(("127.0.0.1", port), Handler)
        break
    except OSError:
        time.sleep(0.1)
server.serve_forever()
