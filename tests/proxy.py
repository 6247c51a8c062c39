"""A TCP proxy on loopback that tests put between a client and a real server.

It forwards bytes unchanged, and on request makes the network misbehave:

- `delay`: hold every reply this many seconds before passing it on (a slow server);
- `stall()` / `resume()`: accept connections but pass nothing on (a black hole);
- `cut()`: close every open connection at once (a reset, a failover, a dead link).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

__all__ = ["Proxy"]


class Proxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port: int = self.listener.getsockname()[1]
        self.delay = 0.0
        self.connections = 0  # accepted so far
        self._flowing = threading.Event()
        self._flowing.set()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="proxy", daemon=True)

    def start(self) -> Proxy:
        self._thread.start()
        return self

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def cut(self) -> int:
        """Close every open connection; how many there were."""
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            _close(sock)
        return len(sockets) // 2

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        self._thread.join(2)
        self.listener.close()
        self.cut()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=2)
            except OSError:
                _close(client)  # the server is down: so is the proxy, for this client
                continue
            self.connections += 1
            with self._lock:
                self._open |= {client, server}
            for source, sink, replies in ((client, server, False), (server, client, True)):
                threading.Thread(
                    target=self._pump, args=(source, sink, replies), name="proxy-pump", daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        source.settimeout(None)
        try:
            while True:
                chunk = source.recv(65536)
                if not chunk:
                    break
                while not self._flowing.wait(0.05):
                    if self._closed or source not in self._open:
                        return
                if replies and self.delay:
                    time.sleep(self.delay)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open -= {source, sink}
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
