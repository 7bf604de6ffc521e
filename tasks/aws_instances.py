"""Actions for the SSRF cloud-credential pattern (connectors/aws_cloud.py): an EC2 instance's
record (with its roles) as evidence, the instance isolated behind a quarantine security group
and back, its role's sessions cut off and back, an S3 bucket's access logs as evidence.

The instance id and the bucket come from the alert; the role is never taken from the alert:
it is the role IAM lists on the instance's profile, read in the evidence step.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import Field

from aisoar.actions import Effect
from connectors.aws import SYSTEM as AWS
from connectors.aws_cloud import REVOKE_POLICY, AwsCloud, bucket_asset, instance_asset, role_asset
from tasks.base import ActionContext, AssetInputs, ProbeResult, StepOutcome, absent, ok
from tasks.registry import action

InstanceId = Annotated[str, Field(pattern=r"^i-[0-9a-f]{8}([0-9a-f]{9})?$", description="the EC2 instance id")]
RoleName = Annotated[str, Field(pattern=r"^[A-Za-z0-9+=,.@_\-]{1,64}$", description="the IAM role's name")]
BucketName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$", description="the S3 bucket")]
GroupId = Annotated[str, Field(pattern=r"^sg-[0-9a-f]{8,17}$")]


def _cloud(ctx: ActionContext) -> AwsCloud:
    client = AWS.client(ctx.settings)
    if not isinstance(client, AwsCloud):
        raise TypeError(f"the AWS connector is a {type(client).__name__}, not AwsCloud")
    return client


class Instance(AssetInputs):
    instance_id: InstanceId

    @property
    def asset(self) -> str:
        return instance_asset(self.instance_id)


class InstanceGroups(Instance):
    groups: list[GroupId] = Field(min_length=1, description="the security groups to put back")


class Role(AssetInputs):
    role_name: RoleName

    @property
    def asset(self) -> str:
        return role_asset(self.role_name)


class Bucket(AssetInputs):
    bucket: BucketName

    @property
    def asset(self) -> str:
        return bucket_asset(self.bucket)


@action(
    "aws.collect_instance_evidence",
    effect=Effect.read_only,
    inputs=Instance,
    summary="Preserve the EC2 instance's record (state, network, security groups, metadata options, instance "
    "profile) and the roles IAM lists on its profile as evidence",
    collects_evidence=True,
)
def collect_instance_evidence(ctx: ActionContext, inputs: Instance) -> StepOutcome:
    cloud = _cloud(ctx)
    found = cloud.instance(inputs.instance_id)
    if found is None:
        return absent(f"EC2 has no instance {inputs.instance_id}")
    profile = found.get("instance_profile_arn")
    roles = cloud.profile_roles(str(profile)) if profile else []
    now = datetime.now(UTC).isoformat()
    documents: list[tuple[Any, str, str | None]] = [
        ({"collected_at": now, "system": "aws-ec2", "instance": found, "roles": roles}, "EC2 instance", inputs.asset)
    ]
    for role in roles:
        record = {"collected_at": now, "system": "aws-iam", "role": role, "revocation": cloud.revocation(role)}
        documents.append((record, f"IAM role {role} of instance {inputs.instance_id}", role_asset(role)))
    digests = ctx.keep_all(documents)
    imds = (found.get("metadata_options") or {}).get("HttpTokens", "unknown")
    return ok(
        f"instance {inputs.instance_id} preserved: {found['state']}, groups {', '.join(found['security_groups'])}, "
        f"metadata service tokens {imds}, role(s) {', '.join(roles) or 'none'}",
        evidence_sha256=digests[0],
        roles=roles,
        security_groups=found["security_groups"],
        vpc_id=found["vpc_id"],
        instance_state=found["state"],
    )


def _probe_isolated(ctx: ActionContext, inputs: Instance, outcome: StepOutcome) -> ProbeResult:
    cloud = _cloud(ctx)
    found = cloud.instance(inputs.instance_id)
    group = str(outcome.output.get("quarantine_group"))
    if found is None:
        return ProbeResult(ok=False, detail=f"EC2 no longer knows instance {inputs.instance_id}")
    rules = cloud.quarantine_group_rules(group)
    isolated = found["security_groups"] == [group] and rules == {"ingress": 0, "egress": 0}
    return ProbeResult(
        ok=isolated,
        detail=f"DescribeInstances shows groups {', '.join(found['security_groups'])}; {group} has "
        f"{rules['ingress']} ingress and {rules['egress']} egress rule(s)",
    )


@action(
    "aws.isolate_instance",
    effect=Effect.changing,
    inputs=Instance,
    summary="Isolate the EC2 instance: its security groups replaced by a quarantine group of its VPC that allows "
    "no traffic in or out (the groups it had are recorded for the inverse)",
    inverse="aws.restore_instance_groups",
    probe=_probe_isolated,
)
def isolate_instance(ctx: ActionContext, inputs: Instance) -> StepOutcome:
    result = _cloud(ctx).isolate(inputs.instance_id)
    if result is None:
        return absent(f"EC2 has no instance {inputs.instance_id}")
    if result["already"]:
        return ok(f"instance {inputs.instance_id} was already isolated ({result['quarantine_group']})", **result)
    return ok(
        f"instance {inputs.instance_id} isolated behind {result['quarantine_group']} (it had "
        f"{', '.join(result['previous_groups'])})",
        **result,
    )


def _probe_groups(ctx: ActionContext, inputs: InstanceGroups, outcome: StepOutcome) -> ProbeResult:
    found = _cloud(ctx).instance(inputs.instance_id)
    if found is None:
        return ProbeResult(ok=False, detail=f"EC2 no longer knows instance {inputs.instance_id}")
    return ProbeResult(
        ok=found["security_groups"] == sorted(inputs.groups),
        detail=f"DescribeInstances shows groups {', '.join(found['security_groups'])}",
    )


@action(
    "aws.restore_instance_groups",
    effect=Effect.changing,
    inputs=InstanceGroups,
    summary="Put the EC2 instance's security groups back (the inverse of aws.isolate_instance, with the groups "
    "it recorded)",
    inverse="aws.isolate_instance",
    probe=_probe_groups,
)
def restore_instance_groups(ctx: ActionContext, inputs: InstanceGroups) -> StepOutcome:
    cloud = _cloud(ctx)
    if cloud.instance(inputs.instance_id) is None:
        return absent(f"EC2 has no instance {inputs.instance_id}")
    cloud.set_groups(inputs.instance_id, sorted(inputs.groups))
    return ok(f"instance {inputs.instance_id} back in {', '.join(sorted(inputs.groups))}")


def _probe_revoked(ctx: ActionContext, inputs: Role, outcome: StepOutcome) -> ProbeResult:
    policy = _cloud(ctx).revocation(inputs.role_name)
    stamp = outcome.output.get("revoked_before")
    conditions = [s.get("Condition", {}).get("DateLessThan", {}) for s in (policy or {}).get("Statement", [])]
    found = [c.get("aws:TokenIssueTime") for c in conditions]
    return ProbeResult(
        ok=stamp in found,
        detail=f"GetRolePolicy {inputs.role_name}/{REVOKE_POLICY}: "
        + (f"denies sessions issued before {', '.join(map(str, found))}" if policy else "no such policy"),
    )


@action(
    "aws.revoke_role_sessions",
    effect=Effect.changing,
    inputs=Role,
    summary="Cut off every session of the IAM role issued until now (an inline AWSRevokeOlderSessions policy "
    "denying credentials issued before this moment): stolen temporary keys stop working, new sessions work",
    inverse="aws.restore_role_sessions",
    probe=_probe_revoked,
)
def revoke_role_sessions(ctx: ActionContext, inputs: Role) -> StepOutcome:
    now = datetime.now(UTC).replace(microsecond=0)
    _cloud(ctx).revoke_sessions(inputs.role_name, now)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return ok(f"sessions of role {inputs.role_name} issued before {stamp} revoked", revoked_before=stamp)


def _probe_restored(ctx: ActionContext, inputs: Role, outcome: StepOutcome) -> ProbeResult:
    policy = _cloud(ctx).revocation(inputs.role_name)
    return ProbeResult(
        ok=policy is None,
        detail=f"GetRolePolicy {inputs.role_name}/{REVOKE_POLICY}: " + ("still there" if policy else "no such policy"),
    )


@action(
    "aws.restore_role_sessions",
    effect=Effect.changing,
    inputs=Role,
    summary="Delete the role's AWSRevokeOlderSessions policy (the inverse of aws.revoke_role_sessions)",
    inverse="aws.revoke_role_sessions",
    probe=_probe_restored,
)
def restore_role_sessions(ctx: ActionContext, inputs: Role) -> StepOutcome:
    removed = _cloud(ctx).restore_sessions(inputs.role_name)
    if not removed:
        return ok(f"role {inputs.role_name} had no session revocation", already=True)
    return ok(f"the session revocation of role {inputs.role_name} removed")


@action(
    "aws.collect_bucket_access_evidence",
    effect=Effect.read_only,
    inputs=Bucket,
    summary="Preserve the S3 bucket's server access logging configuration and its newest access log objects "
    "(the text of the newest few) as evidence: who read what with the stolen credentials",
    collects_evidence=True,
)
def collect_bucket_access_evidence(ctx: ActionContext, inputs: Bucket) -> StepOutcome:
    found = _cloud(ctx).access_logs(inputs.bucket)
    if found is None:
        return absent(f"S3 has no bucket {inputs.bucket}")
    document = {"collected_at": datetime.now(UTC).isoformat(), "system": "aws-s3", **found}
    sha256 = ctx.keep(document, f"S3 access logs of bucket {inputs.bucket}", asset=inputs.asset)
    if found["logging"] is None:
        return ok(
            f"bucket {inputs.bucket} has no server access logging: no access log to audit (recorded as evidence)",
            evidence_sha256=sha256,
            log_objects=0,
        )
    return ok(
        f"access logs of bucket {inputs.bucket} preserved: {len(found['objects'])} log object(s) in "
        f"s3://{found['logging']['target_bucket']}/{found['logging']['target_prefix']}, "
        f"the text of {len(found['samples'])}",
        evidence_sha256=sha256,
        log_objects=len(found["objects"]),
    )
