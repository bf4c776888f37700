"""A TCP relay between an agent and a collector (both on loopback) that can hold back the collector's answer.

`hold_next_answer()` arms it: the next bytes the collector sends on any connection are not passed on, and
`answer_held` is set instead. Since the collector answers a batch only once it is committed, a held answer means
"the batch is stored and the agent does not know it" — the moment a test kills the agent in. `release()` then
closes the connection that was held, without passing the answer on.
"""

from __future__ import annotations

import socket
import threading


class Relay:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.answer_held = threading.Event()
        self._armed = False
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept_loop)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hold_next_answer(self) -> None:
        with self._lock:
            self.answer_held.clear()
            self._release.clear()
            self._armed = True

    def release(self) -> None:
        with self._lock:
            self._armed = False
        self._release.set()

    def close(self) -> None:
        self._closed.set()
        self._release.set()
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                _shut(s)
        for t in self._threads:
            t.join(timeout=10)

    # -- internals ------------------------------------------------------------------------------------------

    def _spawn(self, target, *args) -> None:  # type: ignore[no-untyped-def]
        t = threading.Thread(target=target, args=args, name="relay", daemon=True)
        with self._lock:
            self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()  # the collector is down: the agent sees its connection closed
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            self._spawn(self._pump, client, server, False)
            self._spawn(self._pump, server, client, True)

    def _pump(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if answers:
                    with self._lock:
                        hold = self._armed
                        self._armed = False
                    if hold:
                        self.answer_held.set()
                        self._release.wait()
                        break  # the held answer is never passed on
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _shut(src)
            _shut(dst)


def _shut(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
