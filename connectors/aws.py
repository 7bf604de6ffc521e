"""AWS IAM access keys through boto3 (the optional extra ``aws``): a user's keys with their
status and creation date, when and where a key was last used, the user's attached policies;
deactivate, reactivate and delete a key.

boto3 is imported when the connector is built, so aisoar works without it; without it the
connector cannot be built and says what to install.

Retries are ours, not botocore's: its own are off (``total_max_attempts: 1``) and every call
goes through the shared ``Backoff`` policy: throttling (HTTP 429, or the codes ``Throttling``,
``ThrottlingException``, ``RequestLimitExceeded`` that IAM sends with HTTP 400), 5xx and
connection errors are tried again a bounded number of times, a ``Retry-After`` header is
honoured (capped); a timeout is reported as one. Errors are built from the HTTP status and
AWS's error code and message only: never from the request, which carries the signature.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal, TypeVar
from xml.sax.saxutils import escape as xml_escape

from pydantic import Field, SecretStr

from connectors.errors import ConnectorError, NotConfigured, PlanGuard
from connectors.retry import RETRY_STATUSES, Backoff, Failure, with_retries
from connectors.system import ConnectOptions, StandIn, System, SystemSettings, optional_secret

TITLE = "AWS IAM"


class AwsSettings(SystemSettings):
    region: str = "us-east-1"
    endpoint_url: str | None = Field(None, description="only for IAM-compatible stand-ins (moto)")
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    use_default_credentials: bool = Field(
        False, description="use boto3's default credential chain (instance role, profile) instead of explicit keys"
    )


def _aws_missing(s: AwsSettings) -> list[str]:
    if s.use_default_credentials:
        return []
    return ["AISOAR_AWS_ACCESS_KEY_ID", "AISOAR_AWS_SECRET_ACCESS_KEY", "or AISOAR_AWS_USE_DEFAULT_CREDENTIALS=true"]


def _aws(s: AwsSettings, o: ConnectOptions) -> AwsIam:
    """Explicit keys when both are set; else boto3's default chain."""
    from connectors.aws_cloud import AwsCloud

    explicit = bool(s.access_key_id and s.secret_access_key)
    return AwsCloud(
        s.region,
        s.endpoint_url,
        s.access_key_id if explicit else None,
        optional_secret(s.secret_access_key) if explicit else None,
        timeout=o.timeout,
        plan=o.plan,
        **o.retry,
    )
USER_NAME = re.compile(r"^[A-Za-z0-9+=,.@_\-]{1,64}$")  # IAM: [\w+=,.@-]{1,64}
ACCESS_KEY_ID = re.compile(r"^(AKIA|ASIA)[A-Z0-9]{12,124}$")  # long-term AKIA..., temporary ASIA...
THROTTLING_CODES = frozenset(
    {"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException", "RequestThrottled"}
)
# "Does not exist" from IAM, EC2 and S3: the asset is absent, not the call failed.
NOT_FOUND_CODES = frozenset({"NoSuchEntity", "InvalidInstanceID.NotFound", "NoSuchBucket"})
PAGE_SIZE = 100
MAX_PAGES = 20
KeyStatus = Literal["Active", "Inactive"]
T = TypeVar("T")


class Boto3Missing(NotConfigured):
    """boto3 is not installed: the step is skipped, saying what to install."""

    def __init__(self) -> None:
        RuntimeError.__init__(self, f"{TITLE} needs boto3, which is not installed: install aisoar[aws]")
        self.system = TITLE
        self.settings = ["boto3 (pip install 'aisoar[aws]')"]


class NoSuchEntity(ConnectorError):
    """AWS answered that the user, key, role, instance or bucket does not exist."""


class AwsIam:
    def __init__(
        self,
        region: str,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        timeout: float = 10.0,
        attempts: int = 4,
        backoff: float = 0.2,
        max_backoff: float = 8.0,
        plan: bool = False,
    ) -> None:
        """Explicit credentials when both are given, else boto3's default chain (environment,
        profile, instance or task role)."""
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise Boto3Missing() from None
        if bool(access_key_id) != bool(secret_access_key):
            raise ValueError("give both the access key id and the secret access key, or neither")
        config = Config(
            region_name=region,
            retries={"total_max_attempts": 1},
            connect_timeout=timeout,
            read_timeout=timeout,
        )
        session = boto3.session.Session(
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None,
            region_name=region,
        )
        self.timeout = timeout
        self.policy = Backoff(attempts, backoff, max_backoff)
        self._guard = PlanGuard(TITLE, plan)
        self._iam: Any = self._client(session, "iam", endpoint_url, config)
        self._sts: Any = self._client(session, "sts", endpoint_url, config)
        self._session, self._endpoint_url, self._config = session, endpoint_url, config

    @staticmethod
    def _client(session: Any, service: str, endpoint_url: str | None, config: Any) -> Any:
        client = session.client(service, endpoint_url=endpoint_url or None, config=config)
        client.meta.events.register("before-parse", _error_answer_as_xml)
        return client

    @property
    def plan(self) -> bool:
        return self._guard.plan

    def close(self) -> None:
        self._iam.close()
        self._sts.close()

    # -- the one place AWS is called --------------------------------------------------------
    def _call(self, operation: str, asset: str, fn: Callable[[], T]) -> T:
        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            HTTPClientError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
        )
        from botocore.parsers import ResponseParserError

        def classify(exc: Exception) -> Failure | None:
            # IAM's calls here are idempotent: an unreachable or throttling endpoint may be tried later.
            if isinstance(exc, ClientError):
                status, code, retry_after, detail = _client_error(exc)
                if code in NOT_FOUND_CODES:
                    raise NoSuchEntity(TITLE, operation, asset, status or code, detail) from None
                again = code in THROTTLING_CODES or status in RETRY_STATUSES
                return Failure(status if status is not None else code or None, detail, again, retry_after)
            if isinstance(exc, (ReadTimeoutError, ConnectTimeoutError)):
                return Failure("timeout", f"no answer within {self.timeout}s", again=True)
            if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
                raise ConnectorError(TITLE, operation, asset, "no credentials", type(exc).__name__) from None
            if isinstance(exc, (EndpointConnectionError, ConnectionClosedError, HTTPClientError)):
                return Failure("connection error", type(exc).__name__, again=True)
            if isinstance(exc, ResponseParserError):
                detail = "the answer could not be parsed as AWS's XML"
                return Failure("invalid answer", detail, again=True, transient=False)
            return None

        return with_retries(self.policy, TITLE, operation, asset, fn, classify)

    # -- reads ------------------------------------------------------------------------------
    def check(self) -> str:
        """``sts:GetCallerIdentity``: needs no permission, proves the endpoint and credentials."""
        found = self._call("get caller identity", "the credentials", lambda: self._sts.get_caller_identity())
        return f"AWS reachable, credentials accepted as {found.get('Arn')} (account {found.get('Account')})"

    def list_access_keys(self, user_name: str) -> list[dict[str, Any]] | None:
        """The user's access keys (id, status, created), or None when IAM has no such user."""
        _check_user(user_name)
        keys: list[dict[str, Any]] = []
        marker: str | None = None
        for _ in range(MAX_PAGES):
            kwargs: dict[str, Any] = {"UserName": user_name, "MaxItems": PAGE_SIZE}
            if marker:
                kwargs["Marker"] = marker
            try:
                page = self._call(
                    "list access keys", _user_asset(user_name), partial(self._iam.list_access_keys, **kwargs)
                )
            except NoSuchEntity:
                return None
            for item in page.get("AccessKeyMetadata", []):
                keys.append(
                    {
                        "access_key_id": str(item.get("AccessKeyId")),
                        "status": str(item.get("Status")),
                        "created": _iso(item.get("CreateDate")),
                    }
                )
            marker = page.get("Marker") if page.get("IsTruncated") else None
            if not marker:
                break
        return keys

    def access_key(self, user_name: str, key_id: str) -> dict[str, Any] | None:
        """The key as the user's key list shows it, or None when it is not listed (or no such user)."""
        _check_key(key_id)
        for key in self.list_access_keys(user_name) or []:
            if key["access_key_id"] == key_id:
                return key
        return None

    def last_used(self, key_id: str) -> dict[str, Any] | None:
        """Who owns the key and when, where and with which service it was last used; None when
        IAM does not know the key id (deleted, never existed, or not in this account)."""
        _check_key(key_id)
        try:
            found = self._call(
                "get access key last used",
                _key_asset(key_id),
                lambda: self._iam.get_access_key_last_used(AccessKeyId=key_id),
            )
        except NoSuchEntity:
            return None
        used = found.get("AccessKeyLastUsed") or {}
        return {
            "user_name": found.get("UserName"),
            "last_used_date": _iso(used.get("LastUsedDate")),
            "service_name": used.get("ServiceName"),
            "region": used.get("Region"),
        }

    def attached_policies(self, user_name: str) -> list[dict[str, str]] | None:
        """The managed policies attached to the user (name, ARN), or None when IAM has no such user."""
        _check_user(user_name)
        policies: list[dict[str, str]] = []
        marker: str | None = None
        for _ in range(MAX_PAGES):
            kwargs: dict[str, Any] = {"UserName": user_name, "MaxItems": PAGE_SIZE}
            if marker:
                kwargs["Marker"] = marker
            try:
                page = self._call(
                    "list attached user policies",
                    _user_asset(user_name),
                    partial(self._iam.list_attached_user_policies, **kwargs),
                )
            except NoSuchEntity:
                return None
            for item in page.get("AttachedPolicies", []):
                policies.append({"name": str(item.get("PolicyName")), "arn": str(item.get("PolicyArn"))})
            marker = page.get("Marker") if page.get("IsTruncated") else None
            if not marker:
                break
        return policies

    # -- changes ----------------------------------------------------------------------------
    def set_status(self, user_name: str, key_id: str, status: KeyStatus) -> None:
        """``UpdateAccessKey``: Inactive makes AWS refuse every request signed with the key;
        Active accepts it again. Setting the status the key already has is harmless. Raises
        ``NoSuchEntity`` when the user has no such key."""
        _check_user(user_name)
        _check_key(key_id)
        if status not in ("Active", "Inactive"):
            raise ValueError(f"not an access key status: {status!r}")
        operation = "deactivate access key" if status == "Inactive" else "activate access key"
        self._guard(operation, _key_asset(key_id), f"UpdateAccessKey {user_name}/{key_id} Status={status}")
        self._call(
            operation,
            _key_asset(key_id),
            lambda: self._iam.update_access_key(UserName=user_name, AccessKeyId=key_id, Status=status),
        )

    def delete_access_key(self, user_name: str, key_id: str) -> bool:
        """``DeleteAccessKey`` (irreversible); False when IAM had no such key for the user."""
        _check_user(user_name)
        _check_key(key_id)
        self._guard("delete access key", _key_asset(key_id), f"DeleteAccessKey {user_name}/{key_id}")
        try:
            self._call(
                "delete access key",
                _key_asset(key_id),
                lambda: self._iam.delete_access_key(UserName=user_name, AccessKeyId=key_id),
            )
        except NoSuchEntity:
            return False
        return True


def _error_answer_as_xml(response_dict: dict[str, Any], **_: Any) -> None:
    """botocore hook (``before-parse``): an error answer that is not AWS's XML (a proxy's or load
    balancer's page, a JSON body) is given an XML error body, so it becomes a ``ClientError``
    with its HTTP status and headers (Retry-After) instead of an unparsable answer."""
    status = response_dict.get("status_code")
    body = response_dict.get("body")
    if not isinstance(status, int) or status < 400 or not isinstance(body, bytes) or body.lstrip().startswith(b"<"):
        return
    text = xml_escape(" ".join(body[:200].decode("utf-8", "replace").split()))
    response_dict["body"] = (
        "<ErrorResponse><Error><Type>Receiver</Type><Code>NonXmlAnswer</Code>"
        f"<Message>{text}</Message></Error></ErrorResponse>"
    ).encode()


def _client_error(exc: Any) -> tuple[int | None, str, str | None, str]:
    """HTTP status, AWS error code, Retry-After and a short description of a ``ClientError``."""
    response = exc.response if isinstance(getattr(exc, "response", None), dict) else {}
    meta = response.get("ResponseMetadata") or {}
    error = response.get("Error") or {}
    status = meta.get("HTTPStatusCode")
    headers = {str(k).lower(): str(v) for k, v in (meta.get("HTTPHeaders") or {}).items()}
    code = str(error.get("Code") or "")
    message = " ".join(str(error.get("Message") or "").split())
    detail = f"{code}: {message}" if message else code or "no error detail"
    return (status if isinstance(status, int) else None), code, headers.get("retry-after"), detail[:300]


def _check_user(user_name: str) -> None:
    if not USER_NAME.fullmatch(user_name):
        raise ValueError(f"not an IAM user name: {user_name[:70]!r}")


def _check_key(key_id: str) -> None:
    if not ACCESS_KEY_ID.fullmatch(key_id):
        raise ValueError(f"not an AWS access key id: {key_id[:40]!r}")


def _user_asset(user_name: str) -> str:
    return f"user {user_name}"


def _key_asset(key_id: str) -> str:
    return f"access key {key_id}"


def _iso(moment: Any) -> str | None:
    if isinstance(moment, datetime):
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    return None if moment is None else str(moment)


SYSTEM = System(
    name="aws",
    title=TITLE,
    settings=AwsSettings,
    required=("access_key_id", "secret_access_key"),
    build=_aws,
    stand_in=StandIn.server,
    url_field="endpoint_url",
    example_change=lambda c: c.set_status("conformance-user", "AKIACONFORMANCE00001", "Inactive"),
    missing_rule=_aws_missing,
)
