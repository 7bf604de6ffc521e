"""OpenBao / HashiCorp Vault (the same HTTP API): revoke agent and service credentials.

- tokens, by accessor: look up their metadata (``auth/token/lookup-accessor``, which never
  returns the token itself) and revoke them (``auth/token/revoke-accessor``, children too);
- leases, by prefix: list them (``sys/leases/lookup/<prefix>``) and revoke them all
  (``sys/leases/revoke-prefix/<prefix>``);
- KV v2 secrets: read their metadata (versions, created/deleted/destroyed; never the data)
  and destroy one version (``<mount>/destroy/<path>``).

aisoar refuses to revoke its own token: a step that would do it (its accessor, or a lease
prefix that covers the path its token was created on) fails with a clear error instead of
locking the responder out in the middle of an incident.

Identifiers that reach a URL path are checked against strict patterns here as well as in
the action inputs, and quoted.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import Field, SecretStr

from connectors.errors import ConnectorError
from connectors.system import StandIn, System, SystemSettings, secret
from connectors.transport import HttpApi

TITLE = "Vault"


class VaultSettings(SystemSettings):
    url: str | None = Field(None, description="OpenBao or HashiCorp Vault address")
    token: SecretStr | None = None
    namespace: str | None = None
    kv_mount: str = "secret"

# Vault >= 1.10 and OpenBao: 24 base62 characters, ".<namespace id>" inside a namespace;
# older Vault: a UUID.
ACCESSOR_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9-]{7,95})(?:\.[A-Za-z0-9]{1,32})?$"
# Path segments of letters, digits, "_", "-" and inner dots: no "." or ".." segment, no
# leading "/", no "//", nothing to encode.
_SEGMENT = r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*"
LEASE_PREFIX_PATTERN = rf"^{_SEGMENT}(?:/{_SEGMENT})*/?$"
KV_PATH_PATTERN = rf"^{_SEGMENT}(?:/{_SEGMENT})*$"
KV_MOUNT_PATTERN = rf"^{_SEGMENT}(?:/{_SEGMENT}){{0,3}}$"

MAX_LEASES = 1000
CLIENT_ERRORS = tuple(status for status in range(400, 500) if status != 429)  # not retried
MAX_LIST_CALLS = 200

# What token evidence keeps from lookup-accessor (an allow-list: never "id").
TOKEN_FIELDS = (
    "accessor",
    "display_name",
    "policies",
    "identity_policies",
    "creation_time",
    "creation_ttl",
    "issue_time",
    "expire_time",
    "ttl",
    "explicit_max_ttl",
    "entity_id",
    "path",
    "meta",
    "type",
    "orphan",
    "renewable",
    "num_uses",
    "period",
    "role",
    "namespace_path",
)
SECRET_METADATA_FIELDS = (
    "current_version",
    "oldest_version",
    "max_versions",
    "created_time",
    "updated_time",
    "delete_version_after",
    "cas_required",
    "custom_metadata",
)


class UnsafeIdentifier(ValueError):
    """An accessor, prefix or path that does not fit its pattern (alert data is hostile)."""


def _checked(value: str, pattern: str, what: str) -> str:
    if not isinstance(value, str) or len(value) > 512 or not re.fullmatch(pattern, value):
        raise UnsafeIdentifier(f"not a valid Vault {what}")
    return value


def token_asset(accessor: str) -> str:
    return f"vault:token-accessor:{accessor}"


def lease_asset(prefix: str) -> str:
    return f"vault:lease-prefix:{prefix}"


def kv_asset(mount: str, path: str) -> str:
    return f"vault:kv:{mount}/{path}"


@dataclass(frozen=True)
class Revocation:
    """What a revocation did: ``already`` when there was nothing left to revoke."""

    already: bool
    detail: str


@dataclass(frozen=True)
class LeaseListing:
    lease_ids: list[str]
    truncated: bool


@dataclass(frozen=True)
class OwnToken:
    accessor: str
    path: str
    policies: list[str]
    ttl: int


class VaultCredentials:
    def __init__(
        self,
        base_url: str,
        token: str,
        namespace: str | None = None,
        kv_mount: str = "secret",
        timeout: float = 10.0,
        **retry: Any,
    ) -> None:
        headers = {"X-Vault-Token": token}
        if namespace:
            headers["X-Vault-Namespace"] = namespace
        self.kv_mount = _checked(kv_mount, KV_MOUNT_PATTERN, "KV mount")
        self._api = HttpApi(TITLE, base_url, headers, timeout=timeout, **retry)
        self._api.identify = self.check
        self._own: OwnToken | None = None

    def close(self) -> None:
        self._api.close()

    def _call(
        self,
        method: str,
        path: str,
        operation: str,
        asset: str,
        *,
        expect: tuple[int, ...] = (200,),
        json: Any = None,
        params: dict[str, str] | None = None,
        changes: bool | None = None,
    ) -> httpx.Response:
        """``HttpApi.request`` (retries, timeouts, plan mode), with Vault's own error text
        ("permission denied") in the error of a 4xx answer."""
        response = self._api.request(
            method, path, operation, asset, ok=expect + CLIENT_ERRORS, json=json, params=params, changes=changes
        )
        if response.status_code not in expect:
            raise ConnectorError(TITLE, operation, asset, response.status_code, _error_text(response))
        return response

    # --- aisoar's own token -------------------------------------------------------------

    def own_token(self) -> OwnToken:
        """aisoar's token as Vault sees it (``lookup-self``; the token id itself is dropped)."""
        if self._own is None:
            response = self._call("GET", "/v1/auth/token/lookup-self", "look up own token", "the aisoar token")
            data = _data(response)
            self._own = OwnToken(
                accessor=str(data.get("accessor") or ""),
                path=str(data.get("path") or ""),
                policies=[str(p) for p in data.get("policies") or []],
                ttl=int(data.get("ttl") or 0),
            )
        return self._own

    def check(self) -> str:
        """One cheap authenticated read: look up aisoar's own token."""
        self._own = None
        own = self.own_token()
        ttl = f"ttl {own.ttl}s" if own.ttl else "no expiry"
        return f"Vault reachable, token accepted (policies {', '.join(own.policies) or 'none'}; {ttl})"

    # --- tokens, by accessor ----------------------------------------------------------

    def lookup_accessor(self, accessor: str) -> dict[str, Any] | None:
        """The token's metadata (allow-listed fields), or None when Vault does not know the accessor."""
        _checked(accessor, ACCESSOR_PATTERN, "token accessor")
        asset = token_asset(accessor)
        response = self._call(
            "POST",
            "/v1/auth/token/lookup-accessor",
            "look up token accessor",
            asset,
            expect=(200, 400),
            json={"accessor": accessor},
            changes=False,
        )
        if response.status_code == 400:
            _raise_unless_invalid(response, "look up token accessor", asset, "invalid accessor")
            return None
        data = _data(response)
        return {key: data[key] for key in TOKEN_FIELDS if key in data}

    def revoke_accessor(self, accessor: str) -> Revocation:
        """Revoke the token (and its child tokens and leases) by accessor. Revoking a token
        Vault no longer knows is reported as already done."""
        _checked(accessor, ACCESSOR_PATTERN, "token accessor")
        asset = token_asset(accessor)
        own = self.own_token()
        if own.accessor and own.accessor == accessor:
            raise ConnectorError(
                TITLE, "revoke token accessor", asset, "refused", "this is aisoar's own token; revoke it by hand"
            )
        response = self._call(
            "POST",
            "/v1/auth/token/revoke-accessor",
            "revoke token accessor",
            asset,
            expect=(200, 204, 400),
            json={"accessor": accessor},
        )
        if response.status_code == 400:
            _raise_unless_invalid(response, "revoke token accessor", asset, "invalid accessor")
            return Revocation(True, "Vault does not know the accessor (invalid accessor): already revoked or expired")
        warnings = _warnings(response)
        if any("no token found" in w.lower() for w in warnings):
            return Revocation(True, "Vault found no token with this accessor: already revoked or expired")
        return Revocation(False, "token revoked by accessor (with its child tokens and their leases)")

    # --- leases, by prefix ------------------------------------------------------------

    def list_leases(self, prefix: str, limit: int = MAX_LEASES) -> LeaseListing:
        """Every lease id under ``prefix`` (walking sub-folders), at most ``limit``."""
        _checked(prefix, LEASE_PREFIX_PATTERN, "lease prefix")
        asset = lease_asset(prefix.rstrip("/"))
        found: list[str] = []
        folders: deque[str] = deque([prefix.rstrip("/") + "/"])
        calls = 0
        while folders:
            if len(found) >= limit or calls >= MAX_LIST_CALLS:
                return LeaseListing(found[:limit], True)
            folder = folders.popleft()
            calls += 1
            response = self._call(
                "GET",
                f"/v1/sys/leases/lookup/{quote(folder, safe='/')}",
                "list leases",
                asset,
                expect=(200, 404),
                params={"list": "true"},
            )
            if response.status_code == 404:
                _raise_unless_empty_404(response, "list leases", asset)
                continue
            keys = _data(response).get("keys") or []
            for key in keys:
                if not isinstance(key, str) or not key or ".." in key.split("/"):
                    continue
                if key.endswith("/"):
                    folders.append(folder + key)
                else:
                    found.append(folder + key)
        return LeaseListing(found[:limit], len(found) > limit)

    def lease_details(self, lease_id: str) -> dict[str, Any] | None:
        """One lease's times (issue, expiry, ttl, renewable); None when Vault no longer has it."""
        response = self._call(
            "PUT",
            "/v1/sys/leases/lookup",
            "look up lease",
            lease_asset(lease_id),
            expect=(200, 400),
            json={"lease_id": lease_id},
            changes=False,
        )
        if response.status_code == 400:
            _raise_unless_invalid(response, "look up lease", lease_asset(lease_id), "invalid lease")
            return None
        data = _data(response)
        return {k: data.get(k) for k in ("id", "issue_time", "expire_time", "last_renewal", "ttl", "renewable")}

    def revoke_lease_prefix(self, prefix: str) -> Revocation:
        """Revoke every lease under ``prefix`` (synchronously). Refused when the prefix
        covers aisoar's own token. Revoking an empty prefix is harmless."""
        _checked(prefix, LEASE_PREFIX_PATTERN, "lease prefix")
        asset = lease_asset(prefix.rstrip("/"))
        own = self.own_token()
        if own.path and (own.path.rstrip("/") + "/").startswith(prefix.rstrip("/") + "/"):
            raise ConnectorError(
                TITLE,
                "revoke lease prefix",
                asset,
                "refused",
                f"the prefix covers aisoar's own token (created on {own.path}); use a narrower prefix",
            )
        self._call(
            "PUT",
            f"/v1/sys/leases/revoke-prefix/{quote(prefix.rstrip('/'), safe='/')}",
            "revoke lease prefix",
            asset,
            expect=(200, 204),
            params={"sync": "true"},
        )
        return Revocation(False, "every lease under the prefix revoked")

    # --- KV v2 secrets ----------------------------------------------------------------

    def secret_metadata(self, path: str, mount: str | None = None) -> dict[str, Any] | None:
        """The secret's metadata (versions with created/deleted/destroyed; never the data), or
        None when the mount has no secret at ``path``."""
        mount = _checked(mount or self.kv_mount, KV_MOUNT_PATTERN, "KV mount")
        _checked(path, KV_PATH_PATTERN, "KV path")
        asset = kv_asset(mount, path)
        response = self._call(
            "GET",
            f"/v1/{quote(mount, safe='/')}/metadata/{quote(path, safe='/')}",
            "read secret metadata",
            asset,
            expect=(200, 404),
        )
        if response.status_code == 404:
            _raise_unless_empty_404(response, "read secret metadata", asset)
            return None
        data = _data(response)
        document = {key: data[key] for key in SECRET_METADATA_FIELDS if key in data}
        raw_versions = data.get("versions")
        versions: dict[str, Any] = raw_versions if isinstance(raw_versions, dict) else {}
        document["versions"] = {
            str(number): {
                "created_time": entry.get("created_time"),
                "deletion_time": entry.get("deletion_time"),
                "destroyed": bool(entry.get("destroyed")),
            }
            for number, entry in sorted(versions.items(), key=lambda item: int(item[0]) if item[0].isdigit() else 0)
            if isinstance(entry, dict)
        }
        return document

    def destroy_version(self, path: str, version: int, mount: str | None = None) -> Revocation:
        """Permanently destroy one version of a KV v2 secret (its data is gone; metadata stays).
        Destroying a version that is already destroyed is reported as already done; a version
        the secret never had is an error."""
        mount = _checked(mount or self.kv_mount, KV_MOUNT_PATTERN, "KV mount")
        _checked(path, KV_PATH_PATTERN, "KV path")
        asset = kv_asset(mount, path)
        metadata = self.secret_metadata(path, mount)
        entry = (metadata or {}).get("versions", {}).get(str(version))
        if entry is None:
            where = "the secret does not exist" if metadata is None else f"the secret has no version {version}"
            raise ConnectorError(TITLE, "destroy secret version", asset, "not found", where)
        if entry["destroyed"]:
            return Revocation(True, f"version {version} was already destroyed")
        self._call(
            "PUT",
            f"/v1/{quote(mount, safe='/')}/destroy/{quote(path, safe='/')}",
            "destroy secret version",
            asset,
            expect=(200, 204),
            json={"versions": [version]},
        )
        return Revocation(False, f"version {version} destroyed")


def _body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _data(response: httpx.Response) -> dict[str, Any]:
    data = _body(response).get("data")
    return data if isinstance(data, dict) else {}


def _errors(response: httpx.Response) -> list[str]:
    errors = _body(response).get("errors")
    return [" ".join(str(e).split()) for e in errors] if isinstance(errors, list) else []


def _warnings(response: httpx.Response) -> list[str]:
    warnings = _body(response).get("warnings")
    return [str(w) for w in warnings] if isinstance(warnings, list) else []


def _error_text(response: httpx.Response) -> str:
    return "; ".join(_errors(response))[:300] or f"HTTP {response.status_code} without a message"


def _raise_unless_invalid(response: httpx.Response, operation: str, asset: str, expected: str) -> None:
    """A 400 is "not found" only when Vault says ``expected`` (e.g. "invalid accessor")."""
    errors = _errors(response)
    if not any(expected in error for error in errors):
        raise ConnectorError(TITLE, operation, asset, response.status_code, _error_text(response))


def _raise_unless_empty_404(response: httpx.Response, operation: str, asset: str) -> None:
    """Vault answers "nothing here" with 404 and no errors; a 404 with errors (no such
    mount, "no handler for route") is a real error."""
    errors = [e for e in _errors(response) if e]
    if errors:
        raise ConnectorError(TITLE, operation, asset, 404, "; ".join(errors)[:300])


SYSTEM = System(
    name="vault",
    title=TITLE,
    settings=VaultSettings,
    required=("url", "token"),
    build=lambda s, o: VaultCredentials(
        str(s.url),
        secret(s.token),
        namespace=s.namespace or None,
        kv_mount=s.kv_mount,
        timeout=o.timeout,
        plan=o.plan,
        **o.retry,
    ),
    stand_in=StandIn.server,
    example_change=lambda c: c.revoke_accessor("conformance-accessor"),
)
