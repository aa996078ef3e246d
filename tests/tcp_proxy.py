"""A TCP proxy in front of PostgreSQL that a test can cut and restore.

The shared PostgreSQL server is never touched: the app under test connects through the
proxy, and cutting it is, to the app, the database going away (open connections drop,
new ones are refused) and coming back on the same address.
"""

from __future__ import annotations

import socket
import threading


class CuttableProxy:
    """Forward 127.0.0.1:<port> to ``upstream`` until cut; restore on the same port."""

    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.connections_cut = 0
        self._start_accepting()

    @property
    def is_cut(self) -> bool:
        return self._listener is None

    def cut(self) -> None:
        """Drop every open connection and refuse new ones."""
        with self._lock:
            listener, self._listener = self._listener, None
            pairs, self._pairs = self._pairs, set()
        if listener is not None:
            _close(listener)
        for pair in pairs:
            self.connections_cut += 1
            for end in pair:
                _close(end)

    def restore(self) -> None:
        """Listen again on the same port."""
        with self._lock:
            if self._listener is not None:
                return
            self._listener = socket.create_server(("127.0.0.1", self.port))
        self._start_accepting()

    def close(self) -> None:
        self.cut()

    def _start_accepting(self) -> None:
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut: the listener was closed
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            pair = (client, upstream)
            with self._lock:
                if self._listener is not listener:  # cut while connecting
                    _close(client)
                    _close(upstream)
                    return
                self._pairs.add(pair)
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(source, target, pair), daemon=True
                ).start()

    def _pump(self, source: socket.socket, target: socket.socket, pair) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._pairs.discard(pair)
        _close(source)
        _close(target)


def _close(end: socket.socket) -> None:
    # shutdown() wakes a thread blocked in recv() on the socket; close() alone may not.
    try:
        end.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    end.close()
