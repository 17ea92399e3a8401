"""Network faults for tests: a TCP proxy put between a worker and one service, and a way to
make the proxy's port silent (packets dropped, connections left open: a half-open network).

The kernel here has no ``netem``, so latency comes from the proxy (``TcpProxy.delay``: seconds
added before each request, i.e. each client→server burst that follows a reply). A blackout is
an iptables DROP (not REJECT) of the proxy's loopback port in both directions (``Firewall``):
only the test's own worker↔service path goes silent, never the service for anyone else, and
never 6379/5672. Where iptables cannot install rules (no binary, not root), the proxy itself
stops forwarding and holds every connection open (``TcpProxy.hold``), which a client cannot
tell from dropped packets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator

LOOPBACK = "127.0.0.1"


class TcpProxy:
    """Forwards ``LOOPBACK:port`` to ``LOOPBACK:upstream`` on an asyncio loop in a thread."""

    def __init__(self, upstream: int, delay: float = 0.0) -> None:
        self.upstream, self.delay = upstream, delay
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._open = asyncio.Event()
        self._conns: set[asyncio.StreamWriter] = set()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"tcp-proxy-{upstream}")

    def start(self) -> TcpProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._open.set()
        self._server = await asyncio.start_server(self._handle, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def url_for(self, url: str) -> str:
        """``url`` (of the upstream service) with its port replaced by the proxy's."""
        return url.replace(f":{self.upstream}", f":{self.port}", 1)

    def hold(self) -> None:
        """Stop forwarding in both directions; connections stay open, new ones are accepted
        and get nothing."""
        self._loop.call_soon_threadsafe(self._open.clear)

    def release(self) -> None:
        self._loop.call_soon_threadsafe(self._open.set)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self._conns.add(client_w)
        with contextlib.suppress(asyncio.CancelledError):  # close() cancels every connection
            await self._open.wait()
            try:
                up_r, up_w = await asyncio.open_connection(LOOPBACK, self.upstream)
            except OSError:
                client_w.close()
                return
            self._conns.add(up_w)
            replied = [True]  # the next client burst starts a new request
            await asyncio.gather(self._pump(client_r, up_w, replied, True),
                                 self._pump(up_r, client_w, replied, False),
                                 return_exceptions=True)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    replied: list[bool], request: bool) -> None:
        try:
            while True:
                await self._open.wait()
                data = await src.read(65536)
                if not data:
                    break
                if request and replied[0] and self.delay:
                    await asyncio.sleep(self.delay)
                replied[0] = not request
                await self._open.wait()
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._conns.discard(dst)
            with contextlib.suppress(Exception):
                dst.close()

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._conns):
                w.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


class Firewall:
    """iptables DROP rules on loopback ports, each tagged with this object's comment so that
    ``clear`` removes exactly what it added (and a leftover from a crashed run is findable)."""

    def __init__(self) -> None:
        self.tag = f"convatlas-test-{uuid.uuid4().hex[:8]}"
        self.tool = _iptables()
        self._rules: list[list[str]] = []

    @property
    def usable(self) -> bool:
        return self.tool is not None

    def drop(self, port: int) -> None:
        """Drop every packet to and from ``port`` on loopback (both directions: a silent peer)."""
        assert self.tool is not None and port not in (6379, 5672), port
        for flag in ("--dport", "--sport"):
            rule = ["OUTPUT", "-o", "lo", "-p", "tcp", flag, str(port),
                    "-m", "comment", "--comment", self.tag, "-j", "DROP"]
            subprocess.run([self.tool, "-w", "-I", *rule], check=True, capture_output=True,
                           timeout=30)
            self._rules.append(rule)

    def clear(self) -> None:
        """Remove every rule this object added (each once, whatever failed before)."""
        while self._rules:
            rule = self._rules.pop()
            assert self.tool is not None
            subprocess.run([self.tool, "-w", "-D", *rule], capture_output=True, timeout=30)

    def leftover(self) -> list[str]:
        """Rules still in place with this object's tag (none after ``clear``)."""
        if self.tool is None:
            return []
        out = subprocess.run([self.tool, "-w", "-S", "OUTPUT"], capture_output=True, text=True,
                             timeout=30).stdout
        return [line for line in out.splitlines() if self.tag in line]


def _iptables() -> str | None:
    """The first iptables that can list rules here (nft, then legacy), or None."""
    if os.geteuid() != 0:
        return None
    for name in ("iptables-nft", "iptables-legacy", "iptables"):
        path = shutil.which(name)
        if path and subprocess.run([path, "-w", "-S", "OUTPUT"], capture_output=True,
                                   timeout=30).returncode == 0:
            return path
    return None


class Silencer:
    """Makes proxies silent together and lets them through again: iptables DROP on their ports
    where usable, else the proxies hold their connections. ``close`` undoes everything."""

    def __init__(self) -> None:
        self.firewall = Firewall()
        self.proxies: list[TcpProxy] = []
        self.how = "iptables DROP" if self.firewall.usable else "proxy holding connections"

    def proxy(self, upstream: int, delay: float = 0.0) -> TcpProxy:
        p = TcpProxy(upstream, delay).start()
        self.proxies.append(p)
        return p

    def silence(self, *proxies: TcpProxy) -> None:
        for p in proxies:
            if self.firewall.usable:
                self.firewall.drop(p.port)
            else:
                p.hold()

    def restore(self) -> None:
        self.firewall.clear()
        for p in self.proxies:
            p.release()

    def close(self) -> None:
        try:
            self.restore()
            assert self.firewall.leftover() == [], self.firewall.leftover()
        finally:
            for p in self.proxies:
                p.close()


def network_faults() -> Iterator[Silencer]:
    """A fixture body (``pytest.fixture(name=...)(network_faults)`` in a test module): a
    ``Silencer`` whose every rule and proxy is gone when the test ends, whatever happened."""
    s = Silencer()
    try:
        yield s
    finally:
        s.close()
