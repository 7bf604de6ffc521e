"""AWS beyond IAM users' keys, for the SSRF cloud-credential pattern (an instance's role
credentials stolen through its metadata service, as at Capital One): read and isolate an EC2
instance, cut off the sessions of the role it runs as, read the access logs of the S3 bucket
the stolen credentials could reach.

- isolation swaps the instance's security groups for a quarantine group in its VPC that
  allows nothing in or out (created once, named ``aisoar-quarantine``); the groups it had are
  recorded so the inverse puts them back;
- a role's sessions are cut off the way AWS documents it: an inline policy
  ``AWSRevokeOlderSessions`` that denies everything to credentials issued before a moment
  (``aws:TokenIssueTime``), so the stolen temporary keys stop working while new sessions work;
  the inverse deletes that policy;
- a bucket's server access logging configuration and its newest log objects are read as
  evidence (keys, sizes, ETags, and the text of the newest few, capped).

Every call goes through ``AwsIam._call`` (our retries, errors from AWS's code and message).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from functools import partial
from typing import Any

from connectors.aws import TITLE, AwsIam, NoSuchEntity, _iso

INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8}([0-9a-f]{9})?$")
ROLE_NAME = re.compile(r"^[A-Za-z0-9+=,.@_\-]{1,64}$")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
QUARANTINE_GROUP = "aisoar-quarantine"
REVOKE_POLICY = "AWSRevokeOlderSessions"
LOG_OBJECTS = 200  # newest log objects listed
LOG_SAMPLES = 5  # of which the text is kept
LOG_SAMPLE_BYTES = 64 * 1024


def _check(pattern: re.Pattern[str], value: str, what: str) -> None:
    if not pattern.match(value):
        raise ValueError(f"not a valid {what}: {value[:80]!r}")


def instance_asset(instance_id: str) -> str:
    return f"aws:instance:{instance_id}"


def role_asset(role_name: str) -> str:
    return f"aws:role:{role_name}"


def bucket_asset(bucket: str) -> str:
    return f"aws:bucket:{bucket}"


def revoke_policy(before: datetime) -> dict[str, Any]:
    """The policy AWS's console attaches to revoke a role's active sessions."""
    stamp = before.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Action": ["*"],
                "Resource": ["*"],
                "Condition": {"DateLessThan": {"aws:TokenIssueTime": stamp}},
            }
        ],
    }


class AwsCloud(AwsIam):
    """The AWS connector: IAM users' keys (``AwsIam``), EC2 instances, roles' sessions, S3 logs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ec2: Any = self._client(self._session, "ec2", self._endpoint_url, self._config)
        self._s3: Any = self._client(self._session, "s3", self._endpoint_url, self._config)

    def close(self) -> None:
        super().close()
        self._ec2.close()
        self._s3.close()

    # -- EC2 --------------------------------------------------------------------------------
    def instance(self, instance_id: str) -> dict[str, Any] | None:
        """The instance's state, network, security groups and instance profile; None when EC2
        does not know it."""
        _check(INSTANCE_ID, instance_id, "EC2 instance id")
        try:
            found = self._call(
                "describe instance",
                instance_asset(instance_id),
                lambda: self._ec2.describe_instances(InstanceIds=[instance_id]),
            )
        except NoSuchEntity:
            return None
        items = [i for r in found.get("Reservations", []) for i in r.get("Instances", [])]
        if not items:
            return None
        item = items[0]
        profile = (item.get("IamInstanceProfile") or {}).get("Arn")
        return {
            "instance_id": item.get("InstanceId"),
            "state": (item.get("State") or {}).get("Name"),
            "vpc_id": item.get("VpcId"),
            "subnet_id": item.get("SubnetId"),
            "private_ip": item.get("PrivateIpAddress"),
            "public_ip": item.get("PublicIpAddress"),
            "launched": _iso(item.get("LaunchTime")),
            "security_groups": sorted(g["GroupId"] for g in item.get("SecurityGroups", [])),
            "instance_profile_arn": profile,
            "metadata_options": item.get("MetadataOptions") or {},
        }

    def _quarantine_group(self, vpc_id: str, instance_id: str) -> str:
        """The VPC's quarantine group (no ingress, no egress), created on first use."""
        asset = instance_asset(instance_id)
        found = self._call(
            "find quarantine group",
            asset,
            lambda: self._ec2.describe_security_groups(
                Filters=[
                    {"Name": "group-name", "Values": [QUARANTINE_GROUP]},
                    {"Name": "vpc-id", "Values": [vpc_id]},
                ]
            ),
        )
        groups = found.get("SecurityGroups", [])
        if groups:
            return str(groups[0]["GroupId"])
        created = self._call(
            "create quarantine group",
            asset,
            lambda: self._ec2.create_security_group(
                GroupName=QUARANTINE_GROUP,
                Description="aisoar: isolated instances, no traffic in or out",
                VpcId=vpc_id,
            ),
        )
        group_id = str(created["GroupId"])
        described = self._call(
            "read quarantine group", asset, lambda: self._ec2.describe_security_groups(GroupIds=[group_id])
        )
        egress = described["SecurityGroups"][0].get("IpPermissionsEgress", [])
        if egress:  # a new group allows all egress: revoke it
            self._call(
                "close quarantine group egress",
                asset,
                lambda: self._ec2.revoke_security_group_egress(GroupId=group_id, IpPermissions=egress),
            )
        return group_id

    def quarantine_group_rules(self, group_id: str) -> dict[str, int]:
        found = self._call(
            "read quarantine group", group_id, lambda: self._ec2.describe_security_groups(GroupIds=[group_id])
        )
        group = found["SecurityGroups"][0]
        return {"ingress": len(group.get("IpPermissions", [])), "egress": len(group.get("IpPermissionsEgress", []))}

    def isolate(self, instance_id: str) -> dict[str, Any] | None:
        """Swap the instance's security groups for the quarantine group; None when EC2 does not
        know the instance. ``previous_groups`` are what the inverse puts back."""
        current = self.instance(instance_id)
        if current is None:
            return None
        vpc = str(current["vpc_id"])
        asset = instance_asset(instance_id)
        self._guard("isolate instance", asset, f"ModifyInstanceAttribute Groups=[{QUARANTINE_GROUP} in {vpc}]")
        group = self._quarantine_group(vpc, instance_id)
        if current["security_groups"] == [group]:
            return {"previous_groups": None, "quarantine_group": group, "already": True}
        self.set_groups(instance_id, [group])
        return {"previous_groups": current["security_groups"], "quarantine_group": group, "already": False}

    def set_groups(self, instance_id: str, groups: list[str]) -> None:
        _check(INSTANCE_ID, instance_id, "EC2 instance id")
        asset = instance_asset(instance_id)
        self._guard("set security groups", asset, f"ModifyInstanceAttribute Groups={groups}")
        self._call(
            "set security groups",
            asset,
            lambda: self._ec2.modify_instance_attribute(InstanceId=instance_id, Groups=groups),
        )

    # -- IAM roles --------------------------------------------------------------------------
    def profile_roles(self, profile_arn: str) -> list[str]:
        """The roles of an instance profile (by its ARN), as IAM lists them."""
        name = profile_arn.rsplit("/", 1)[-1]
        _check(ROLE_NAME, name, "instance profile name")
        try:
            found = self._call(
                "get instance profile",
                f"aws:instance-profile:{name}",
                lambda: self._iam.get_instance_profile(InstanceProfileName=name),
            )
        except NoSuchEntity:
            return []
        return sorted(str(r["RoleName"]) for r in found["InstanceProfile"].get("Roles", []))

    def revocation(self, role_name: str) -> dict[str, Any] | None:
        """The role's ``AWSRevokeOlderSessions`` policy, or None (no such policy, or no such role)."""
        _check(ROLE_NAME, role_name, "IAM role name")
        try:
            found = self._call(
                "get role policy",
                role_asset(role_name),
                lambda: self._iam.get_role_policy(RoleName=role_name, PolicyName=REVOKE_POLICY),
            )
        except NoSuchEntity:
            return None
        document = found.get("PolicyDocument")
        parsed: dict[str, Any] = json.loads(document) if isinstance(document, str) else dict(document or {})
        return parsed

    def revoke_sessions(self, role_name: str, before: datetime) -> None:
        """Deny everything to the role's credentials issued before ``before`` (the stolen ones)."""
        _check(ROLE_NAME, role_name, "IAM role name")
        policy = json.dumps(revoke_policy(before))
        self._guard("revoke role sessions", role_asset(role_name), f"PutRolePolicy {role_name}/{REVOKE_POLICY}")
        self._call(
            "revoke role sessions",
            role_asset(role_name),
            lambda: self._iam.put_role_policy(RoleName=role_name, PolicyName=REVOKE_POLICY, PolicyDocument=policy),
        )

    def restore_sessions(self, role_name: str) -> bool:
        """Delete the revocation policy; False when the role had none."""
        _check(ROLE_NAME, role_name, "IAM role name")
        self._guard("restore role sessions", role_asset(role_name), f"DeleteRolePolicy {role_name}/{REVOKE_POLICY}")
        try:
            self._call(
                "restore role sessions",
                role_asset(role_name),
                lambda: self._iam.delete_role_policy(RoleName=role_name, PolicyName=REVOKE_POLICY),
            )
        except NoSuchEntity:
            return False
        return True

    # -- S3 ---------------------------------------------------------------------------------
    def access_logs(self, bucket: str) -> dict[str, Any] | None:
        """The bucket's server access logging and its newest log objects (the text of a few);
        None when S3 does not know the bucket."""
        _check(BUCKET, bucket, "S3 bucket name")
        asset = bucket_asset(bucket)
        try:
            logging = self._call("get bucket logging", asset, lambda: self._s3.get_bucket_logging(Bucket=bucket))
        except NoSuchEntity:
            return None
        enabled = logging.get("LoggingEnabled")
        if not enabled:
            return {"bucket": bucket, "logging": None, "objects": [], "samples": []}
        target, prefix = str(enabled["TargetBucket"]), str(enabled.get("TargetPrefix") or "")
        listed = self._call(
            "list access logs",
            bucket_asset(target),
            partial(self._s3.list_objects_v2, Bucket=target, Prefix=prefix, MaxKeys=1000),
        )
        objects = sorted(listed.get("Contents", []), key=lambda o: o.get("LastModified"), reverse=True)[:LOG_OBJECTS]
        samples = []
        for item in objects[:LOG_SAMPLES]:
            body = self._call(
                "read access log",
                bucket_asset(target),
                partial(self._s3.get_object, Bucket=target, Key=item["Key"], Range=f"bytes=0-{LOG_SAMPLE_BYTES - 1}"),
            )
            samples.append({"key": item["Key"], "text": body["Body"].read().decode("utf-8", "replace")})
        return {
            "bucket": bucket,
            "logging": {"target_bucket": target, "target_prefix": prefix},
            "objects": [
                {
                    "key": o["Key"],
                    "size": o.get("Size"),
                    "etag": str(o.get("ETag", "")).strip('"'),
                    "last_modified": _iso(o.get("LastModified")),
                }
                for o in objects
            ],
            "samples": samples,
        }


__all__ = ["TITLE", "AwsCloud"]
