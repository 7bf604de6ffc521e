"""A real Prometheus Alertmanager for tests: Debian's ``prometheus-alertmanager`` (0.25) on a
free loopback port, with a generated config that sends every alert to one webhook.

``prometheus-alertmanager --config.file=<tmp>/alertmanager.yml --storage.path=<tmp>/data
--web.listen-address=127.0.0.1:<free> --web.external-url=http://127.0.0.1:<free>
--cluster.listen-address=`` (an empty cluster address disables HA gossip, so nothing listens
on 9094), ready when ``GET /-/ready`` answers 200, stopped (process group) at the end. The
Debian package's own systemd service is never used: it would listen on the default 9093/9094
with /etc/prometheus/alertmanager.yml, and this process shares neither ports nor files with it.

Alerts are posted to Alertmanager's own API (``POST /api/v2/alerts``) the way Prometheus does;
posting the same labels again with ``endsAt`` now resolves them, and with ``send_resolved``
Alertmanager then delivers a ``"status": "resolved"`` notification.

The helper FAILS (it does not skip) when the binary is missing.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from sandbox.serving import free_port
from tests.servers.process import server_process, venv_binary

BINARY = "/usr/bin/prometheus-alertmanager"
INSTALL_HINT = (
    "the Alertmanager tests need the real server from Debian: apt-get install -y prometheus-alertmanager "
    "(or `make system-packages` as root)"
)
START_TIMEOUT = 20.0
RECEIVER = "aisoar"


def alertmanager_binary() -> str:
    """Debian's binary (or one on PATH); fails the test with how to install it when missing."""
    if Path(BINARY).exists():
        return BINARY
    return venv_binary("prometheus-alertmanager", INSTALL_HINT)


def alertmanager_config(
    webhook_url: str,
    *,
    bearer_token: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    group_wait: str = "0s",
    group_interval: str = "1s",
    repeat_interval: str = "1h",
    resolve_timeout: str = "5m",
) -> dict[str, Any]:
    """One route (each distinct label set its own group) to one webhook receiver, with
    ``send_resolved`` and the given auth (a bearer token, or basic auth, or none)."""
    if bearer_token is not None and basic_auth is not None:
        raise ValueError("give a bearer token or basic auth, not both")
    webhook: dict[str, Any] = {"url": webhook_url, "send_resolved": True}
    if bearer_token is not None:
        webhook["http_config"] = {"authorization": {"type": "Bearer", "credentials": bearer_token}}
    elif basic_auth is not None:
        webhook["http_config"] = {"basic_auth": {"username": basic_auth[0], "password": basic_auth[1]}}
    return {
        "global": {"resolve_timeout": resolve_timeout},
        "route": {
            "receiver": RECEIVER,
            "group_by": ["..."],
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        },
        "receivers": [{"name": RECEIVER, "webhook_configs": [webhook]}],
    }


def timestamp(moment: datetime | None = None) -> str:
    """RFC 3339 in UTC with milliseconds, as Alertmanager's API takes it."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def alert(
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
    *,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    generator_url: str = "http://127.0.0.1/graph",
) -> dict[str, Any]:
    """One postable alert for ``POST /api/v2/alerts``. Without ``ends_at`` it fires until
    resolved (or until ``resolve_timeout`` passes without it being posted again)."""
    body: dict[str, Any] = {
        "labels": dict(labels),
        "annotations": dict(annotations or {}),
        "startsAt": timestamp(starts_at),
        "generatorURL": generator_url,
    }
    if ends_at is not None:
        body["endsAt"] = timestamp(ends_at)
    return body


@dataclass(frozen=True)
class Alertmanager:
    url: str
    config_file: Path
    workdir: Path

    @property
    def config_text(self) -> str:
        return self.config_file.read_text()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """``POST /api/v2/alerts``; raises unless Alertmanager accepted them (200)."""
        with self.client() as client:
            client.post("/api/v2/alerts", json=list(alerts)).raise_for_status()

    def resolve(self, alerts: Sequence[Mapping[str, Any]], at: datetime | None = None) -> None:
        """Post the same alerts again (same labels and ``startsAt``) with ``endsAt`` now: resolved."""
        ends = timestamp(at)
        self.post_alerts([{**a, "endsAt": ends} for a in alerts])

    def alerts(self) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts``: what Alertmanager holds now."""
        with self.client() as client:
            response = client.get("/api/v2/alerts")
            response.raise_for_status()
            result: list[dict[str, Any]] = response.json()
            return result


@contextmanager
def alertmanager(
    webhook_url: str,
    *,
    bearer_token: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    **timings: str,
) -> Iterator[Alertmanager]:
    """A real Alertmanager delivering to ``webhook_url`` until the context ends.
    ``timings``: group_wait, group_interval, repeat_interval, resolve_timeout overrides."""
    binary = alertmanager_binary()
    workdir = Path(tempfile.mkdtemp(prefix="aisoar-alertmanager-"))
    config = alertmanager_config(webhook_url, bearer_token=bearer_token, basic_auth=basic_auth, **timings)
    config_file = workdir / "alertmanager.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        binary,
        f"--config.file={config_file}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.external-url={url}",  # else the hostname goes into every notification's externalURL
        "--cluster.listen-address=",
        "--log.level=debug",
    ]
    secrets = tuple(s for s in (bearer_token, basic_auth[1] if basic_auth else None) if s)
    try:
        with server_process("Alertmanager", argv, f"{url}/-/ready", workdir, timeout=START_TIMEOUT, redact=secrets):
            yield Alertmanager(url, config_file, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
