"""Two HTTP servers sharing named shared memory (the node_ipc scenario).

Run two of these on different ports (see examples/README.md)::

    python examples/shm_http.py 8011          # server A
    python examples/shm_http.py 8012          # server B

    curl 'http://127.0.0.1:8011/write?shm_name=demo&content=hello'   # write through A
    curl 'http://127.0.0.1:8012/read?shm_name=demo'                  # read through B

Endpoints (plain text, 200 on success):

``/write?shm_name=N&content=TEXT``  open shared memory N (creating it with 4096
    bytes if it does not exist) and write TEXT as UTF-8 + NUL at offset 0.
    413 if it does not fit, 400 for a bad name or a NUL in TEXT.
``/read?shm_name=N``  the text at offset 0; a server that has not opened N yet
    opens it by name (404 if it exists nowhere).

A server keeps every block it opened open until it stops (SIGTERM or Ctrl-C):
a block lives while any process has it open, and the last server to close it
removes it.  Standard library + ctipc only.
"""

from __future__ import annotations

import argparse
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from _serve import serve  # beside this file

import ctipc

SIZE = 4096  # bytes of a block this server creates


class TooLong(Exception):
    pass


class Blocks:
    """The shared memory blocks this process has open, by name.

    One lock guards the table and every read/write: the operations are short,
    and close() at shutdown must not run while a request uses a block's memory.
    """

    def __init__(self) -> None:
        self._open: dict[str, ctipc.SharedMemory] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _get(self, name: str, create: bool) -> ctipc.SharedMemory:
        if self._closed:
            raise RuntimeError("the server is shutting down")
        shm = self._open.get(name)
        if shm is None:
            shm = _open_block(name, create)
            self._open[name] = shm
        return shm

    def write(self, name: str, text: str) -> int:
        """Write ``text`` + NUL at offset 0; TooLong if it does not fit."""
        with self._lock:
            shm = self._get(name, create=True)
            needed = len(text.encode("utf-8")) + 1
            if needed > shm.size:
                raise TooLong(f"{needed} bytes do not fit in {name!r} ({shm.size} bytes)")
            return shm.write_str(text, 0)

    def read(self, name: str) -> str:
        with self._lock:
            return self._get(name, create=False).read_str(0)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            blocks, self._open = list(self._open.values()), {}
        for shm in blocks:
            shm.close()


def _open_block(name: str, create: bool) -> ctipc.SharedMemory:
    # Attach without a size first, so that a block another process created
    # with another size is used as it is; create only if it does not exist.
    for _ in range(10):
        try:
            return ctipc.SharedMemory(name, create=False)
        except FileNotFoundError:
            if not create:
                raise
        try:
            return ctipc.SharedMemory(name, size=SIZE, create=True)
        except FileExistsError:
            continue  # created by another process meanwhile: attach
    raise RuntimeError(f"shared memory {name!r} keeps appearing and disappearing")


class Handler(BaseHTTPRequestHandler):
    server: ShmServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's spelling)
        url = urllib.parse.urlsplit(self.path)
        try:
            query = urllib.parse.parse_qs(url.query, keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            self.reply(400, "the query is not UTF-8")
            return
        name = query.get("shm_name", [""])[0]
        if url.path not in ("/write", "/read"):
            self.reply(404, f"unknown path {url.path}; use /write or /read")
            return
        if not name:
            self.reply(400, "shm_name is missing")
            return
        blocks = self.server.blocks
        try:
            if url.path == "/read":
                self.reply(200, blocks.read(name))
                return
            if "content" not in query:
                self.reply(400, "content is missing")
                return
            content = query["content"][0]
            if "\0" in content:
                self.reply(400, "content must not contain NUL")
                return
            n = blocks.write(name, content)
            self.reply(200, f"wrote {n} bytes")
        except TooLong as e:
            self.reply(413, str(e))
        except FileNotFoundError:
            self.reply(404, f"shared memory {name!r} does not exist (use /write)")
        except (ValueError, TypeError) as e:  # a name ctipc refuses
            self.reply(400, str(e))
        except ctipc.CtipcError as e:  # IncompatibleError, CorruptedError
            self.reply(409, str(e))
        except RuntimeError as e:
            self.reply(503, str(e))

    def reply(self, status: int, text: str) -> None:
        body = text.encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client went away


class ShmServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, blocks: Blocks) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.blocks = blocks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int, help="TCP port on 127.0.0.1 (0: any free port)")
    args = parser.parse_args(argv)
    blocks = Blocks()
    server = ShmServer(args.port, blocks)
    serve(server, [blocks.close])
    return 0


if __name__ == "__main__":
    sys.exit(main())
