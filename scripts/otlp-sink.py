#!/usr/bin/env python3
"""An OTLP/HTTP trace sink for measuring what exporting costs the services (docs/
benchmarks.md § Tracing's cost): it takes `POST /v1/traces`, answers an empty
ExportTraceServiceResponse, and counts the requests and bytes it was sent, which it
prints on SIGTERM or SIGINT. Usage: scripts/otlp-sink.py [PORT] (default 4318)."""

import http.server
import signal
import sys
import threading

received = {"requests": 0, "bytes": 0}


class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", 0))
        body = self.rfile.read(length)
        received["requests"] += 1
        received["bytes"] += len(body)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 4318
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Sink)

    def stop(*_):
        print(f"otlp-sink: {received['requests']} exports, {received['bytes']} bytes", flush=True)
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
