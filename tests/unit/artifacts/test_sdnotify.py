"""The notify protocol client: a no-op outside systemd, path and abstract sockets, the
watchdog interval only for the process systemd meant, and a dead socket never raising."""

import os
import socket

from artifacts.sdnotify import Notifier


def listen(address: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(address)
    s.settimeout(2)
    return s


def test_outside_systemd_nothing_is_sent():
    n = Notifier({})
    assert not n.enabled and n.ready() is False and n.watchdog_s is None


def test_path_socket(tmp_path):
    path = str(tmp_path / "notify")
    s = listen(path)
    assert Notifier({"NOTIFY_SOCKET": path}).ready("serving m v1")
    assert s.recv(4096) == b"READY=1\nSTATUS=serving m v1"
    assert Notifier({"NOTIFY_SOCKET": path}).stopping()
    assert s.recv(4096) == b"STOPPING=1\nSTATUS=draining in-flight requests"


def test_abstract_socket():
    name = f"shipyard-test-{os.getpid()}"
    s = listen("\0" + name)
    assert Notifier({"NOTIFY_SOCKET": "@" + name}).status("starting")
    assert s.recv(4096) == b"STATUS=starting"


def test_watchdog_interval_only_for_this_process():
    env = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "4000000"}
    assert Notifier(env).watchdog_s == 4.0
    assert Notifier(env | {"WATCHDOG_PID": str(os.getpid())}).watchdog_s == 4.0
    assert Notifier(env | {"WATCHDOG_PID": "1"}).watchdog_s is None
    assert Notifier(env | {"WATCHDOG_USEC": "0"}).watchdog_s is None
    assert Notifier(env | {"WATCHDOG_USEC": "soon"}).watchdog_s is None


def test_a_gone_socket_is_logged_not_raised(tmp_path):
    assert Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}).ready() is False
