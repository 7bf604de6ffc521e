"""Prefect's client on a plain-HTTP API, without the TLS roots it would never use.

Prefect builds a TLS context for every client it makes, loading certifi's bundle of ~150 roots
(25 ms of CPU each time on a small machine), and each flow run's engine makes two clients: the
run's and its suspension observer's. On a plain ``http://`` API no TLS is spoken and the roots
are never used, yet in a burst they cost more CPU than the runs' steps. So when the API is
plain HTTP and nobody chose a file, aisoar points ``PREFECT_API_SSL_CERT_FILE`` at a one-
certificate file that verifies no server (its key was discarded when it was made). An
``https://`` API, or a file set by the operator, is left as it is.

Prefect reads its settings when it is first imported: call this before that.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

UNUSED_TLS_ROOTS = Path(__file__).with_name("unused_tls_roots.pem")
SETTING = "PREFECT_API_SSL_CERT_FILE"


def skip_unused_tls_roots(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Point Prefect's client at the file that verifies nothing when its API is plain HTTP;
    whether it did."""
    url = environ.get("PREFECT_API_URL", "").strip().lower()
    if not url.startswith("http://") or environ.get(SETTING):
        return False
    environ[SETTING] = str(UNUSED_TLS_ROOTS)
    return True
