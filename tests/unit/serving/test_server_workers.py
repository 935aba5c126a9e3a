"""Workers' sockets: each its own ``SO_REUSEPORT`` listener on the one port; a taken port stops the server at once."""

from __future__ import annotations

import socket

import pytest

from config import Settings
from serving.server import reuse_port_socket, supervise


def test_every_worker_listens_on_the_same_port() -> None:
    first = reuse_port_socket("127.0.0.1", 0)
    port = first.getsockname()[1]
    second = reuse_port_socket("127.0.0.1", port)
    try:
        assert second.getsockname()[1] == port
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # one of the two listeners has it
    finally:
        first.close()
        second.close()


def test_a_port_another_server_holds_fails_before_any_worker_starts() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        with pytest.raises(OSError):
            supervise(Settings(serving_port=holder.getsockname()[1]), workers=2)
    finally:
        holder.close()
