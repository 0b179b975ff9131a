"""systemd integration: the notify protocol on a real socket, and the daemon speaking it end to end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid

import httpx
import pytest

from poller.sdnotify import Notifier, watchdog_seconds
from tests.conftest import REPO


@pytest.fixture
def notify_socket(tmp_path):
    """A datagram socket where systemd would listen: (the NOTIFY_SOCKET value, the socket)."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(30)
        yield str(path), sock


def receive(sock: socket.socket) -> dict[str, str]:
    message = sock.recv(4096).decode("utf-8")
    return dict(line.split("=", 1) for line in message.splitlines())


def test_a_notification_is_one_datagram_of_key_value_lines(notify_socket):
    address, sock = notify_socket
    notify = Notifier.from_environment({"NOTIFY_SOCKET": address})
    assert notify(READY="1", STATUS="last cycle ok:\n3 leads")
    assert receive(sock) == {"READY": "1", "STATUS": "last cycle ok: 3 leads"}  # a newline would start a field


def test_an_abstract_socket_name_starts_with_at():
    name = f"lead-poller-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        assert Notifier(f"@{name}")(WATCHDOG="1")
        assert receive(sock) == {"WATCHDOG": "1"}


def test_outside_systemd_nothing_is_sent_and_a_broken_socket_never_raises(tmp_path):
    assert not Notifier.from_environment({}).enabled
    assert Notifier.from_environment({})(READY="1") is False
    assert Notifier(str(tmp_path / "gone.sock"))(READY="1") is False


def test_watchdog_interval_is_read_for_this_process_only():
    assert watchdog_seconds({"WATCHDOG_USEC": "1200000000"}) == 1200.0
    assert watchdog_seconds({"WATCHDOG_USEC": "1200000000", "WATCHDOG_PID": str(os.getpid())}) == 1200.0
    assert watchdog_seconds({"WATCHDOG_USEC": "1200000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_seconds({}) is None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_daemon_notifies_ready_watchdog_status_and_stopping_and_serves_metrics(sandbox, tenant, notify_socket):
    address, sock = notify_socket
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    port = free_port()
    config = sandbox.write_config(extra=f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH0_", "SALESFORCE_"))}
    env.update(sandbox.env(), PYTHONPATH=str(REPO), NOTIFY_SOCKET=address)
    daemon = subprocess.Popen(
        [sys.executable, "-m", "poller", "--config", str(config)], env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert receive(sock) == {"READY": "1", "STATUS": "running"}
        after_cycle = receive(sock)
        assert after_cycle["WATCHDOG"] == "1"
        assert after_cycle["STATUS"].startswith("last cycle ok: 1 leads created, 1 logins")

        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'lead_poller_cycles_total{outcome="ok"} 1.0' in metrics
        assert "lead_poller_leads_created_total 1.0" in metrics

        daemon.send_signal(signal.SIGTERM)
        assert receive(sock) == {"STOPPING": "1"}
        stdout, stderr = daemon.communicate(timeout=30)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()
    assert daemon.returncode == 0, stderr
    assert len(sandbox.salesforce.leads) == 1
    with pytest.raises(httpx.TransportError):  # the endpoint went away with the daemon
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
