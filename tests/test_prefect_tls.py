"""A plain-HTTP Prefect API: Prefect's client is pointed at a file that verifies nothing,
instead of loading certifi's roots for every client (cli/prefect_tls.py)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys

from cli.prefect_server import PrefectServer
from cli.prefect_tls import SETTING, UNUSED_TLS_ROOTS, skip_unused_tls_roots


def test_only_a_plain_http_api_without_a_chosen_file_is_pointed_at_it() -> None:
    plain = {"PREFECT_API_URL": "http://127.0.0.1:4200/api"}
    assert skip_unused_tls_roots(plain)
    assert plain[SETTING] == str(UNUSED_TLS_ROOTS)

    tls = {"PREFECT_API_URL": "https://prefect.example.org/api"}
    assert not skip_unused_tls_roots(tls)
    assert SETTING not in tls  # certifi's roots (or SSL_CERT_FILE) verify it, as Prefect does

    chosen = {"PREFECT_API_URL": "http://127.0.0.1:4200/api", SETTING: "/etc/ssl/corp.pem"}
    assert not skip_unused_tls_roots(chosen)
    assert chosen[SETTING] == "/etc/ssl/corp.pem"

    assert not skip_unused_tls_roots({})  # no API set: `aisoar serve` refuses to start anyway


def test_the_file_is_one_certificate_that_trusts_no_server() -> None:
    context = ssl.create_default_context(cafile=str(UNUSED_TLS_ROOTS))
    assert context.cert_store_stats()["x509_ca"] == 1
    assert context.verify_mode is ssl.CERT_REQUIRED  # never used on plain HTTP; if it were, it would refuse


def test_prefect_clients_talk_to_the_real_server_with_it(prefect_server: PrefectServer) -> None:
    """A process set up as `aisoar serve` sets itself up: both of Prefect's clients (the run's and
    its suspension observer's) load the one certificate, and the API answers through them."""
    script = """
import asyncio, json
from cli.prefect_tls import skip_unused_tls_roots
assert skip_unused_tls_roots()
from prefect.client.orchestration import get_client

def roots(client):
    return client._client._transport._pool._ssl_context.cert_store_stats()["x509_ca"]

with get_client(sync_client=True) as client:
    answer = {"sync": client.hello().status_code, "sync_roots": roots(client)}

async def main():
    async with get_client() as client:
        answer.update(async_=(await client.hello()).status_code, async_roots=roots(client))

asyncio.run(main())
print(json.dumps(answer))
"""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_") or key == "PREFECT_HOME"}
    env.update(PREFECT_API_URL=prefect_server.api_url, PREFECT_API_AUTH_STRING=str(prefect_server.auth_string))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer == {"sync": 200, "sync_roots": 1, "async_": 200, "async_roots": 1}
