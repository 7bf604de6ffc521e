"""The AWS actions for instance credentials stolen through SSRF (tasks/aws_instances.py) against
the real moto server, with aisoar's principal holding exactly the actions docs/connectors.md
documents: evidence, isolation and its inverse, a role's sessions revoked and restored, the
storage's access logs; plan mode changes nothing; what AWS does not know is "No such asset";
hostile identifiers never reach AWS."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from aisoar.evidence import EvidenceStore
from aisoar.store import Store
from tasks import REGISTRY
from tasks.aws_instances import Bucket, Instance, InstanceGroups, Role
from tasks.base import ActionContext, StepOutcome
from tests.conftest import make_settings
from tests.docs import connector_section
from tests.servers.moto import Moto
from tests.test_playbooks import ssrf_scene

ACTIONS = [
    "ec2:DescribeInstances",
    "ec2:DescribeSecurityGroups",
    "ec2:CreateSecurityGroup",
    "ec2:RevokeSecurityGroupEgress",
    "ec2:ModifyInstanceAttribute",
    "iam:GetInstanceProfile",
    "iam:GetRolePolicy",
    "iam:PutRolePolicy",
    "iam:DeleteRolePolicy",
    "s3:GetBucketLogging",
    "s3:ListBucket",
    "s3:GetObject",
]


def documented_policy() -> dict[str, Any]:
    match = re.search(r"```json\n(.*?)```", connector_section("AWS EC2"), re.DOTALL)
    assert match, "docs/connectors.md's AWS EC2 section has no ```json policy block"
    policy: dict[str, Any] = json.loads(match.group(1))
    return policy


@pytest.fixture(scope="module")
def responder(moto_server: Moto) -> tuple[str, str]:
    """aisoar's key: a user holding exactly the documented actions (moto matches resources to "*" only)."""
    policy = documented_policy()
    assert sorted(a for s in policy["Statement"] for a in s["Action"]) == sorted(ACTIONS)
    for statement in policy["Statement"]:
        statement["Resource"] = "*"
    iam = moto_server.client("iam")
    iam.create_user(UserName="aisoar-instances")
    iam.put_user_policy(UserName="aisoar-instances", PolicyName="aisoar", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="aisoar-instances")["AccessKey"]
    return str(key["AccessKeyId"]), str(key["SecretAccessKey"])


@pytest.fixture()
def ctx(tmp_path: Path, moto_server: Moto, responder: tuple[str, str]) -> Iterator[ActionContext]:
    yield context(tmp_path, moto_server, responder)


def context(tmp_path: Path, moto: Moto, creds: tuple[str, str], **overrides: Any) -> ActionContext:
    env = {
        "AISOAR_AWS_ENDPOINT_URL": moto.url,
        "AISOAR_AWS_ACCESS_KEY_ID": creds[0],
        "AISOAR_AWS_SECRET_ACCESS_KEY": creds[1],
    }
    settings = make_settings(tmp_path / "data", env=env, **overrides)
    store = Store(settings.store_url)
    return ActionContext(
        "INC-ssrf-1", "ssrf", "step", None, settings, store, EvidenceStore(settings.evidence_dir, store)
    )


def run(ctx: ActionContext, name: str, inputs: Any) -> tuple[StepOutcome, tuple[bool, str] | None]:
    entry = REGISTRY[name]
    result = entry.task.fn(ctx, inputs)
    outcome = result if isinstance(result, StepOutcome) else result.data
    assert isinstance(outcome, StepOutcome), result
    probe = entry.probe(ctx, inputs, outcome) if entry.probe and outcome.status.value == "ok" else None
    return outcome, (probe.ok, probe.detail) if probe else None


def test_isolation_revocation_and_their_inverses_with_the_documented_policy(
    ctx: ActionContext, moto_server: Moto
) -> None:
    instance, group, role, bucket = ssrf_scene(moto_server)
    with moto_server.enforcing_auth():
        kept, _ = run(ctx, "aws.collect_instance_evidence", Instance(instance_id=instance))
        assert kept.status.value == "ok" and kept.output["roles"] == [role], kept
        assert "metadata service tokens optional" in kept.summary  # IMDSv1 on: how SSRF reached the role
        isolated, probe = run(ctx, "aws.isolate_instance", Instance(instance_id=instance))
        assert probe is not None and probe[0], probe
        assert isolated.output["previous_groups"] == [group]
        again, _ = run(ctx, "aws.isolate_instance", Instance(instance_id=instance))
        assert again.output["already"] is True
        _, probe = run(ctx, "aws.restore_instance_groups", InstanceGroups(instance_id=instance, groups=[group]))
        assert probe == (True, f"DescribeInstances shows groups {group}"), probe
        revoked, probe = run(ctx, "aws.revoke_role_sessions", Role(role_name=role))
        assert probe is not None and probe[0] and revoked.output["revoked_before"] in probe[1], probe
        _, probe = run(ctx, "aws.restore_role_sessions", Role(role_name=role))
        assert probe == (True, f"GetRolePolicy {role}/AWSRevokeOlderSessions: no such policy"), probe
        logs, _ = run(ctx, "aws.collect_bucket_access_evidence", Bucket(bucket=bucket))
        assert logs.status.value == "ok" and logs.output["log_objects"] >= 1, logs
    kept_items = {e.description: e for e in ctx.store.evidence_for("INC-ssrf-1")}
    document = json.loads(ctx.evidence.path_for(kept_items[f"S3 access logs of bucket {bucket}"].sha256).read_bytes())
    assert any("REST.GET.OBJECT cards.csv" in sample["text"] for sample in document["samples"])


def test_without_the_permission_the_step_fails_clearly(tmp_path: Path, moto_server: Moto) -> None:
    instance, _, _, _ = ssrf_scene(moto_server)
    iam = moto_server.client("iam")
    iam.create_user(UserName="aisoar-readonly")
    reads = {"Effect": "Allow", "Action": ["ec2:DescribeInstances", "ec2:DescribeSecurityGroups"], "Resource": "*"}
    iam.put_user_policy(
        UserName="aisoar-readonly",
        PolicyName="reads",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [reads]}),
    )
    key = iam.create_access_key(UserName="aisoar-readonly")["AccessKey"]
    ctx = context(tmp_path, moto_server, (key["AccessKeyId"], key["SecretAccessKey"]))
    from connectors.errors import ConnectorError

    with moto_server.enforcing_auth(), pytest.raises(ConnectorError) as refused:
        REGISTRY["aws.isolate_instance"].task.fn(ctx, Instance(instance_id=instance))
    # The first change it lacks: creating the quarantine group, or (the group made by an earlier
    # test in this VPC) moving the instance into it.
    assert re.fullmatch(
        rf"AWS IAM (create quarantine group|set security groups) on aws:instance:{instance} failed \(HTTP 403\): "
        r"AccessDenied: User: arn:aws:iam::\d{12}:user/aisoar-readonly is not authorized to perform: "
        r"ec2:(CreateSecurityGroup|ModifyInstanceAttribute)",
        str(refused.value),
    ), refused.value
    described = moto_server.client("ec2").describe_instances(InstanceIds=[instance])["Reservations"][0]
    groups = [g["GroupName"] for g in described["Instances"][0]["SecurityGroups"]]
    assert len(groups) == 1 and groups[0].startswith("web-"), groups  # untouched


def test_plan_mode_reads_but_changes_nothing_and_unknown_assets_are_absent(tmp_path: Path, moto_server: Moto) -> None:
    instance, group, role, _ = ssrf_scene(moto_server)
    ctx = context(tmp_path, moto_server, (moto_server.admin_key_id, moto_server.admin_secret), plan_mode=True)
    planned, _ = run(ctx, "aws.isolate_instance", Instance(instance_id=instance))
    assert planned.status.value == "planned", planned
    described = moto_server.client("ec2").describe_instances(InstanceIds=[instance])
    assert [g["GroupId"] for g in described["Reservations"][0]["Instances"][0]["SecurityGroups"]] == [group]
    revoke, _ = run(ctx, "aws.revoke_role_sessions", Role(role_name=role))
    assert revoke.status.value == "planned"
    assert moto_server.client("iam").list_role_policies(RoleName=role)["PolicyNames"] == []
    live = context(tmp_path / "live", moto_server, (moto_server.admin_key_id, moto_server.admin_secret))
    missing, _ = run(live, "aws.collect_instance_evidence", Instance(instance_id="i-0123456789abcdef0"))
    assert (missing.status.value, missing.summary) == ("absent", "EC2 has no instance i-0123456789abcdef0")
    nobucket, _ = run(live, "aws.collect_bucket_access_evidence", Bucket(bucket="no-such-bucket-here"))
    assert (nobucket.status.value, nobucket.summary) == ("absent", "S3 has no bucket no-such-bucket-here")


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (Instance, {"instance_id": "i-123; rm -rf /"}),
        (Instance, {"instance_id": "../../i-0123456789abcdef0"}),
        (Role, {"role_name": "admin role"}),
        (Bucket, {"bucket": "Bucket_With_Caps"}),
        (InstanceGroups, {"instance_id": "i-0123456789abcdef0", "groups": ["sg-<script>"]}),
    ],
)
def test_hostile_identifiers_are_refused_before_aws(model: Any, fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(fields)
