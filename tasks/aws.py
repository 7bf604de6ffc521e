"""Actions on cloud access keys: AWS IAM user access keys (deactivate, reactivate, delete).

An alert often names only the key id (a secret scanner sees ``AKIA...``, not whose it is):
the user name is then taken from IAM itself (``GetAccessKeyLastUsed`` names the owner).
When the alert names a user and IAM says the key belongs to someone else, the changing
steps refuse: alert text is attacker-controlled, and a wrong pairing must not be "fixed" by
guessing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import Field, field_validator

from aisoar.actions import Effect
from connectors.aws import SYSTEM as AWS
from connectors.aws import AwsIam, KeyStatus
from tasks.base import ActionContext, AssetInputs, Outcome, ProbeResult, StepOutcome, absent, ok
from tasks.registry import action

AccessKeyId = Annotated[
    str,
    Field(
        pattern=r"^(AKIA|ASIA)[A-Z0-9]{12,124}$",
        description="the AWS access key id (AKIA... long-term, ASIA... temporary); never the secret",
    ),
]
IamUserName = Annotated[str, Field(pattern=r"^[A-Za-z0-9+=,.@_\-]{1,64}$", description="the IAM user who owns the key")]


class AwsAccessKey(AssetInputs):
    access_key_id: AccessKeyId
    user_name: IamUserName | None = Field(
        None, description="the key's IAM user; when empty, the owner IAM reports for the key id"
    )

    @field_validator("user_name", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @property
    def asset(self) -> str:
        return f"aws:access-key:{self.access_key_id}"


def _failed(summary: str) -> StepOutcome:
    return StepOutcome(status=Outcome.failed, summary=summary)


def _temporary_hint(key_id: str) -> str:
    if key_id.startswith("ASIA"):
        return " (ASIA... keys are temporary STS credentials: they cannot be deactivated, only left to expire or "
        "cut off by revoking the role's sessions)"
    return ""


def _owner(iam: AwsIam, inputs: AwsAccessKey) -> tuple[str | None, dict[str, Any] | None, str | None]:
    """The user to act on, the key's last-use record, and why the step must not go on (if so)."""
    last = iam.last_used(inputs.access_key_id)
    owner = str(last["user_name"]) if last and last.get("user_name") else None
    if inputs.user_name and owner and owner != inputs.user_name:
        return (
            None,
            last,
            (
                f"refused: IAM says access key {inputs.access_key_id} belongs to user {owner}, "
                f"not {inputs.user_name} as the alert says; check the alert and give the right user"
            ),
        )
    return inputs.user_name or owner, last, None


@action(
    "aws.collect_access_key_evidence",
    effect=Effect.read_only,
    inputs=AwsAccessKey,
    summary="Preserve the IAM access key's record (status, created, last used: when, service, region) "
    "and its user's keys and attached policies as evidence",
    collects_evidence=True,
)
def collect_access_key_evidence(ctx: ActionContext, inputs: AwsAccessKey) -> StepOutcome:
    iam = AWS.client(ctx.settings)
    last = iam.last_used(inputs.access_key_id)
    owner = str(last["user_name"]) if last and last.get("user_name") else None
    user = inputs.user_name or owner
    keys = iam.list_access_keys(user) if user else None
    key = next((k for k in keys or [] if k["access_key_id"] == inputs.access_key_id), None)
    policies = iam.attached_policies(user) if user and keys is not None else None
    mismatch = bool(inputs.user_name and owner and owner != inputs.user_name)
    document = {
        "collected_at": datetime.now(UTC).isoformat(),
        "system": "aws-iam",
        "access_key_id": inputs.access_key_id,
        "user_name_from_alert": inputs.user_name,
        "owner_reported_by_iam": owner,
        "owner_mismatch": mismatch,
        "found": key is not None,
        "key": key,  # id, status, created: IAM never shows the secret again
        "last_used": last,
        "user_found": keys is not None,
        "user_access_keys": keys,
        "user_attached_policies": policies,
    }
    sha256 = ctx.keep(document, "AWS IAM access key record", asset=inputs.asset)
    names = [p["name"] for p in policies or []]
    common: dict[str, Any] = {
        "evidence_sha256": sha256,
        "user_name": user,
        "owner": owner,
        "owner_mismatch": mismatch,
        "attached_policies": names,
    }
    if mismatch:
        return ok(
            f"evidence kept; IAM says the key belongs to user {owner}, not {inputs.user_name} as the alert says",
            found=key is not None,
            **common,
        )
    if key is None:
        where = f" for user {user}" if user else ""
        return ok(
            f"IAM lists no access key {inputs.access_key_id}{where} (recorded as evidence)"
            + _temporary_hint(inputs.access_key_id),
            found=False,
            **common,
        )
    used = last.get("last_used_date") if last else None
    where_used = f" with {last.get('service_name')} in {last.get('region')}" if last and used else ""
    return ok(
        f"IAM key record preserved: {key['status']}, created {key['created']}, last used {used or 'never'}"
        f"{where_used}; user {user} has {len(names)} attached policy(ies)",
        found=True,
        key_status=key["status"],  # not "status": the runner gives every step's outcome that name
        created=key["created"],
        last_used_date=used,
        last_used_service=last.get("service_name") if last else None,
        last_used_region=last.get("region") if last else None,
        **common,
    )


def _set_status(ctx: ActionContext, inputs: AwsAccessKey, status: KeyStatus) -> StepOutcome:
    iam = AWS.client(ctx.settings)
    verb = "deactivate" if status == "Inactive" else "activate"
    user, _, refusal = _owner(iam, inputs)
    if refusal:
        return _failed(refusal)
    if user is None:
        return absent(
            f"IAM knows no access key {inputs.access_key_id}; nothing to {verb}" + _temporary_hint(inputs.access_key_id)
        )
    key = iam.access_key(user, inputs.access_key_id)
    if key is None:
        return absent(f"IAM lists no access key {inputs.access_key_id} for user {user}; nothing to {verb}")
    if key["status"] == status:
        return ok(
            f"access key {inputs.access_key_id} of user {user} was already {status} in IAM",
            already=True,
            previous_status=key["status"],
            user_name=user,
        )
    iam.set_status(user, inputs.access_key_id, status)
    return ok(
        f"access key {inputs.access_key_id} of user {user} {verb}d in IAM",
        already=False,
        previous_status=key["status"],
        user_name=user,
    )


def _probe_status(status: KeyStatus) -> Callable[[ActionContext, AwsAccessKey, StepOutcome], ProbeResult]:
    def probe(ctx: ActionContext, inputs: AwsAccessKey, outcome: StepOutcome) -> ProbeResult:
        iam = AWS.client(ctx.settings)
        user = outcome.output.get("user_name") or inputs.user_name or _owner(iam, inputs)[0]
        if not user:
            return ProbeResult(ok=False, detail=f"IAM no longer knows access key {inputs.access_key_id}")
        key = iam.access_key(str(user), inputs.access_key_id)
        if key is None:
            return ProbeResult(ok=False, detail=f"IAM no longer lists access key {inputs.access_key_id} for {user}")
        return ProbeResult(
            ok=key["status"] == status,
            detail=f"ListAccessKeys shows access key {inputs.access_key_id} of user {user} as {key['status']}",
        )

    return probe


@action(
    "aws.deactivate_access_key",
    effect=Effect.changing,
    inputs=AwsAccessKey,
    summary="Deactivate the IAM access key so AWS refuses every request signed with it (reversible)",
    inverse="aws.activate_access_key",
    probe=_probe_status("Inactive"),
)
def deactivate_access_key(ctx: ActionContext, inputs: AwsAccessKey) -> StepOutcome:
    return _set_status(ctx, inputs, "Inactive")


@action(
    "aws.activate_access_key",
    effect=Effect.changing,
    inputs=AwsAccessKey,
    summary="Activate the IAM access key again (the inverse of aws.deactivate_access_key)",
    inverse="aws.deactivate_access_key",
    probe=_probe_status("Active"),
)
def activate_access_key(ctx: ActionContext, inputs: AwsAccessKey) -> StepOutcome:
    return _set_status(ctx, inputs, "Active")


def _probe_deleted(ctx: ActionContext, inputs: AwsAccessKey, outcome: StepOutcome) -> ProbeResult:
    iam = AWS.client(ctx.settings)
    user = outcome.output.get("user_name") or inputs.user_name
    if user and iam.access_key(str(user), inputs.access_key_id) is not None:
        return ProbeResult(ok=False, detail=f"IAM still lists access key {inputs.access_key_id} for user {user}")
    last = iam.last_used(inputs.access_key_id)
    if last is not None:
        return ProbeResult(
            ok=False,
            detail=f"IAM still knows access key {inputs.access_key_id} (owner {last.get('user_name')})",
        )
    return ProbeResult(
        ok=True,
        detail=f"IAM no longer lists nor knows access key {inputs.access_key_id}: "
        "a request signed with it is refused (InvalidClientTokenId)",
    )


@action(
    "aws.delete_access_key",
    effect=Effect.destructive,
    inputs=AwsAccessKey,
    summary="Delete the IAM access key (irreversible: workloads using it must get a new key)",
    probe=_probe_deleted,
)
def delete_access_key(ctx: ActionContext, inputs: AwsAccessKey) -> StepOutcome:
    iam = AWS.client(ctx.settings)
    user, _, refusal = _owner(iam, inputs)
    if refusal:
        return _failed(refusal)
    if user is None:
        return ok(f"IAM knows no access key {inputs.access_key_id}: already deleted", already=True, user_name=None)
    if not iam.delete_access_key(user, inputs.access_key_id):
        return ok(
            f"access key {inputs.access_key_id} of user {user} was already deleted in IAM",
            already=True,
            user_name=user,
        )
    return ok(f"access key {inputs.access_key_id} of user {user} deleted in IAM", already=False, user_name=user)


from tasks import aws_instances as aws_instances  # noqa: E402 - registers the aws.* instance, role and bucket actions
