"""Prefect's own basic authentication, for the server `aisoar up` starts and for every aisoar
process that talks to a Prefect server.

The server checks ``PREFECT_SERVER_API_AUTH_STRING`` ("user:password"): every request to its API
must carry ``Authorization: Basic base64(user:password)``, except ``GET /api/health`` and
``GET /api/ready``. Clients send ``PREFECT_API_AUTH_STRING``; the UI asks for the string once and
keeps it in the browser. `aisoar up` makes one credential per data dir, keeps it in
``<data dir>/prefect-auth`` (mode 0600) and uses it on every later start; deleting the file and
starting again rotates it. Nothing here imports Prefect except `client_problem`, which must run
after the process's ``PREFECT_*`` variables are set."""

from __future__ import annotations

import base64
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

import httpx

USER = "aisoar"
FILE_NAME = "prefect-auth"
# What the UI can send: it encodes the string with the browser's btoa(), which takes Latin-1 only.
_AUTH_STRING = re.compile(r"[!-9;-~]+:[!-~]+")


class CredentialError(Exception):
    """The credential file cannot be used; the message says what to do."""


@dataclass(frozen=True)
class Credential:
    auth_string: str
    path: Path
    replaced: str | None = None  # why the file was replaced with a new credential; None when it was not

    @property
    def user(self) -> str:
        return self.auth_string.split(":", 1)[0]


def credential_file(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def credential(data_dir: Path) -> Credential:
    """The Prefect credential of ``data_dir``: made once (``aisoar:<random>``), kept in
    ``<data_dir>/prefect-auth`` (mode 0600), the same on every later call. A file that other users
    could read or write is replaced with a new credential (the old one may be known); a file that
    is not this user's regular file, or holds no "user:password", is refused."""
    path = credential_file(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    replaced = None
    found = _read(path)
    if found is not None:
        text, mode = found
        if not mode & 0o077:
            return Credential(_valid(text, path), path)
        path.unlink()
        replaced = f"{path} could be read or changed by other users (mode {mode:03o}); it now holds a new credential"
    _create(path, f"{USER}:{secrets.token_urlsafe(24)}")
    found = _read(path)  # another process may have made it first: everyone uses the one in the file
    assert found is not None
    return Credential(_valid(found[0], path), path, replaced)


def _read(path: Path) -> tuple[str, int] | None:
    """The file's text and permission bits; None when there is no file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:  # a symbolic link (ELOOP), no permission
        raise CredentialError(f"cannot read the Prefect credential {path}: {exc.strerror}; delete it") from exc
    with os.fdopen(fd, encoding="utf-8", errors="replace") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise CredentialError(f"the Prefect credential {path} is not a regular file; delete it")
        if info.st_uid != os.getuid():
            raise CredentialError(f"the Prefect credential {path} belongs to another user (uid {info.st_uid})")
        return handle.read(4096), stat.S_IMODE(info.st_mode)


def _create(path: Path, value: str) -> None:
    """Write ``value`` to ``path`` (mode 0600) unless the file exists by now: written whole to a
    new file first, then linked into place, so nobody reads a half-written credential."""
    staging = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)  # whatever the umask
            handle.write(value + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(staging, path)
        except FileExistsError:
            pass
    finally:
        staging.unlink(missing_ok=True)


def _valid(text: str, path: Path) -> str:
    value = text.strip()
    if not _AUTH_STRING.fullmatch(value):  # never echoed: it may be a password
        raise CredentialError(
            f"the Prefect credential {path} does not hold one user:password (printable ASCII, no spaces); "
            "delete it and start again for a new one"
        )
    return value


def basic_auth(auth_string: str) -> dict[str, str]:
    """The header Prefect's client and UI send: ``Authorization: Basic base64(user:password)``."""
    return {"Authorization": "Basic " + base64.b64encode(auth_string.encode()).decode()}


def client_problem() -> str | None:
    """Why this process's Prefect client must not start, or None. Call it once ``PREFECT_*`` are
    set: it imports Prefect, which reads its settings (environment, ``.env``, profile) then."""
    from prefect.settings import get_current_settings

    if get_current_settings().api.key is not None:
        return (
            "PREFECT_API_KEY is set (in the environment, .env or the active Prefect profile): it is a Prefect Cloud "
            "key, and aisoar talks to a self-hosted Prefect server with PREFECT_API_AUTH_STRING. Unset it "
            "(`unset PREFECT_API_KEY`; for a profile: `prefect config unset PREFECT_API_KEY`)"
        )
    return None


def configured_auth_string() -> str | None:
    """The PREFECT_API_AUTH_STRING this process's Prefect client sends (environment, ``.env`` or
    profile), or None."""
    from prefect.settings import get_current_settings

    secret = get_current_settings().api.auth_string
    if secret is None:
        return None
    return secret.get_secret_value() or None


def api_access(api_url: str, auth_string: str | None, timeout: float = 5.0) -> str | None:
    """How the Prefect API at ``api_url`` takes this process's credential: "ok" (required and
    accepted), "open" (the server asks for none: it is not locked), None when it cannot be told
    (unreachable, an unexpected answer). Raises CredentialError when the server refuses."""
    url = f"{api_url.rstrip('/')}/admin/version"  # what the UI's login checks; the API's health is open
    try:
        bare = httpx.get(url, timeout=timeout).status_code
        sent = httpx.get(url, headers=basic_auth(auth_string), timeout=timeout).status_code if auth_string else bare
    except httpx.HTTPError:
        return None
    if sent == 401:
        if auth_string:
            raise CredentialError(
                f"the Prefect server at {api_url} refuses PREFECT_API_AUTH_STRING (401): set it to the server's "
                "PREFECT_SERVER_API_AUTH_STRING"
            )
        raise CredentialError(
            f"the Prefect server at {api_url} asks for credentials (401): set PREFECT_API_AUTH_STRING to its "
            "PREFECT_SERVER_API_AUTH_STRING"
        )
    if sent != 200:
        return None
    return "open" if bare == 200 else "ok"
