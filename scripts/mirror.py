"""Serve a folder on 127.0.0.1 as a dataset mirror for the tests (LLM_DATA_MIRROR).

    python scripts/mirror.py DIR [--max-seconds N]

Prints the mirror's base URL on its first line, then serves GET requests for files of DIR
(read-only) until it is killed or N seconds have passed, whichever comes first.
"""

import argparse
import functools
import http.server
import sys
import threading


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("--max-seconds", type=float, default=3 * 3600)
    args = parser.parse_args()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *_):
            pass

    handler = functools.partial(Quiet, directory=args.directory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Timer(args.max_seconds, server.shutdown).start()
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
