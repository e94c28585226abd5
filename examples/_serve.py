"""What both HTTP examples share: serve until SIGTERM/SIGINT, then clean up."""

from __future__ import annotations

import signal
import threading
from http.server import ThreadingHTTPServer


def serve(server: ThreadingHTTPServer, cleanup: list) -> None:
    """Serve until SIGTERM/SIGINT, then shut down and close ``cleanup``."""
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        # shutdown() waits for serve_forever() to return, so it must run in
        # another thread than the one serving (this one).
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"listening on {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        for close in cleanup:
            close()
