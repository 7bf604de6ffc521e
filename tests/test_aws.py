"""The AWS IAM access key connector against the real moto server: a workload user's key is
used, deactivated, reactivated and deleted, after which moto refuses it; the actions through
the registry with their probes, idempotency, plan mode, hostile inputs, the owner check, the
playbook; and the shared checks (Retry-After, throttling, 500 storm, timeout, no secret)
through a fault proxy in front of moto.

Where moto checks credentials (``enforcing_auth``), aisoar acts as a user holding exactly the
actions of the policy documented in docs/connectors.md, so the documentation is tested
too (with ``"Resource": "*"``: moto evaluates policies by action only).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from prefect.client.schemas.objects import State
from pydantic import ValidationError

from aisoar.config import PROJECT_ROOT
from aisoar.evidence import EvidenceStore
from aisoar.models import CloudCredential
from aisoar.store import Store
from connectors.aws import SYSTEM as AWS
from connectors.aws import AwsIam
from connectors.errors import ConnectorError
from tasks import REGISTRY
from tasks.aws import AwsAccessKey
from tasks.base import ActionContext, Outcome, StepOutcome
from tests import matrix
from tests.conftest import make_settings
from tests.docs import connector_section
from tests.faults import Fault, fault_proxy
from tests.servers.moto import REGION, Moto
from tests.walk import walk_playbook

INCIDENT = "INC-aws-1"
THROTTLED = (
    '<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender</Type>'
    "<Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>7a62c49f</RequestId></ErrorResponse>"
)


def _documented_policy() -> dict[str, Any]:
    match = re.search(r"```json\n(.*?)```", connector_section("AWS IAM"), re.DOTALL)
    assert match, "docs/connectors.md has no ```json policy block"
    policy: dict[str, Any] = json.loads(match.group(1))
    return policy


@pytest.fixture(scope="module")
def responder(moto_server: Moto) -> tuple[str, str]:
    """aisoar's own key: a user with exactly the documented actions and nothing else."""
    policy = _documented_policy()
    actions = sorted(a for s in policy["Statement"] for a in s["Action"])
    reads = ["iam:ListAccessKeys", "iam:GetAccessKeyLastUsed", "iam:ListAttachedUserPolicies"]
    assert actions == sorted([*reads, "iam:UpdateAccessKey", "iam:DeleteAccessKey"])
    for statement in policy["Statement"]:
        statement["Resource"] = "*"  # moto matches resources against "*" only
    iam = moto_server.client("iam")
    iam.create_user(UserName="aisoar-responder")
    iam.put_user_policy(UserName="aisoar-responder", PolicyName="aisoar", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="aisoar-responder")["AccessKey"]
    return str(key["AccessKeyId"]), str(key["SecretAccessKey"])


@pytest.fixture()
def auth(moto_server: Moto) -> Iterator[None]:
    with moto_server.enforcing_auth():
        yield


def _workload(moto: Moto, name: str | None = None) -> tuple[str, str, str]:
    """A workload user under /workloads/ with a managed policy ``<user>-bedrock`` and one access key."""
    user = name or f"svc-{secrets.token_hex(4)}"
    iam = moto.client("iam")
    iam.create_user(UserName=user, Path="/workloads/")
    document = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "bedrock:*", "Resource": "*"}]}
    arn = iam.create_policy(PolicyName=f"{user}-bedrock", PolicyDocument=json.dumps(document))["Policy"]["Arn"]
    iam.attach_user_policy(UserName=user, PolicyArn=arn)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return user, str(key["AccessKeyId"]), str(key["SecretAccessKey"])


def _use(moto: Moto, key_id: str, secret: str) -> str:
    """A call signed with the key (what an attacker holding it would do)."""
    return str(moto.client("sts", key_id, secret).get_caller_identity()["Arn"])


def _refused_code(moto: Moto, key_id: str, secret: str) -> str:
    with pytest.raises(ClientError) as caught:
        _use(moto, key_id, secret)
    return str(caught.value.response["Error"]["Code"])


def _status(moto: Moto, user: str, key_id: str) -> str | None:
    keys = moto.client("iam").list_access_keys(UserName=user)["AccessKeyMetadata"]
    return next((str(k["Status"]) for k in keys if k["AccessKeyId"] == key_id), None)


def _iam(moto: Moto, creds: tuple[str, str], url: str | None = None, **kwargs: Any) -> AwsIam:
    return AwsIam(REGION, url or moto.url, creds[0], creds[1], **kwargs)


def _ctx(tmp_path: Path, moto: Moto, creds: tuple[str, str], **overrides: Any) -> ActionContext:
    env = {
        "AISOAR_AWS_ENDPOINT_URL": moto.url,
        "AISOAR_AWS_ACCESS_KEY_ID": creds[0],
        "AISOAR_AWS_SECRET_ACCESS_KEY": creds[1],
    }
    settings = make_settings(tmp_path / "data", env=env, **overrides)
    store = Store(settings.store_url)
    evidence = EvidenceStore(settings.evidence_dir, store)
    return ActionContext(INCIDENT, "leaked-cloud-access-key", "step", None, settings, store, evidence)


def _run(ctx: ActionContext, name: str, inputs: AwsAccessKey) -> StepOutcome:
    outcome = REGISTRY[name].task.fn(ctx, inputs)
    if isinstance(outcome, State):  # not done: the outcome is the state's data
        assert outcome.name in ("No such asset", "Refused", "Failed", "Planned"), outcome
        outcome = outcome.data
    assert isinstance(outcome, StepOutcome), outcome
    return outcome


def _probe(ctx: ActionContext, name: str, inputs: AwsAccessKey, outcome: StepOutcome) -> tuple[bool, str]:
    probe = REGISTRY[name].probe
    assert probe is not None
    result = probe(ctx, inputs, outcome)
    return result.ok, result.detail


def test_a_key_is_deactivated_reactivated_and_deleted_then_refused(
    moto_server: Moto, responder: tuple[str, str], auth: None, caplog: pytest.LogCaptureFixture
) -> None:
    user, key_id, secret = _workload(moto_server)
    # Only from here: creating the key logs its secret at DEBUG (botocore logs the answer), which
    # would otherwise sit in the captured log that a failing test prints.
    caplog.set_level(logging.DEBUG)
    iam = _iam(moto_server, responder, backoff=0.01)
    assert "aisoar-responder" in iam.check()
    assert _use(moto_server, key_id, secret).endswith(f"user/workloads/{user}")
    key = iam.access_key(user, key_id)
    assert key is not None and key["status"] == "Active" and str(key["created"]).startswith("20")
    used = iam.last_used(key_id)
    assert used is not None and used["user_name"] == user and used["service_name"] == "sts"
    assert used["region"] == REGION and used["last_used_date"]
    assert iam.attached_policies(user) == [
        {"name": f"{user}-bedrock", "arn": f"arn:aws:iam::123456789012:policy/{user}-bedrock"}
    ]

    iam.set_status(user, key_id, "Inactive")
    iam.set_status(user, key_id, "Inactive")  # twice is harmless
    assert _status(moto_server, user, key_id) == "Inactive"
    assert _use(moto_server, key_id, secret)  # moto still accepts an Inactive key (AWS refuses it)
    iam.set_status(user, key_id, "Active")
    assert _status(moto_server, user, key_id) == "Active"

    assert iam.delete_access_key(user, key_id) is True
    assert iam.delete_access_key(user, key_id) is False  # NoSuchEntity: already deleted
    assert iam.access_key(user, key_id) is None and iam.last_used(key_id) is None
    assert _refused_code(moto_server, key_id, secret) == "InvalidClientTokenId"
    assert iam.list_access_keys("no-such-user") is None and iam.attached_policies("no-such-user") is None
    matrix.secret_absent(responder[1], caplog.text)
    matrix.secret_absent(secret, caplog.text)


def test_what_the_documented_policy_does_not_allow_is_refused_with_a_clear_error(
    moto_server: Moto, responder: tuple[str, str], auth: None, caplog: pytest.LogCaptureFixture
) -> None:
    user, key_id, _ = _workload(moto_server)
    caplog.set_level(logging.DEBUG)  # after the arrangement: creating the key logs its secret at DEBUG
    iam = _iam(moto_server, responder, backoff=0.01)
    with pytest.raises(ClientError):  # the responder cannot create keys (nor anything else)
        moto_server.client("iam", *responder).create_access_key(UserName=user)
    wrong = _iam(moto_server, (responder[0], "not-the-secret-" + secrets.token_hex(8)), backoff=0.01)
    with pytest.raises(ConnectorError) as caught:
        wrong.set_status(user, key_id, "Inactive")
    message = str(caught.value)
    assert message.startswith(f"AWS IAM deactivate access key on access key {key_id} failed (HTTP 403)"), message
    assert "SignatureDoesNotMatch" in message
    assert _status(moto_server, user, key_id) == "Active" and iam.access_key(user, key_id) is not None
    matrix.secret_absent(responder[1], message, caplog.text)


def test_the_actions_with_their_probes_through_the_registry(
    moto_server: Moto, responder: tuple[str, str], auth: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    user, key_id, secret = _workload(moto_server)
    _use(moto_server, key_id, secret)
    caplog.set_level(logging.DEBUG)  # after the arrangement: creating the key logs its secret at DEBUG
    ctx = _ctx(tmp_path, moto_server, responder)
    inputs = AwsAccessKey(access_key_id=key_id, user_name=user)
    assert inputs.asset == f"aws:access-key:{key_id}"

    evidence = _run(ctx, "aws.collect_access_key_evidence", inputs)
    assert evidence.status is Outcome.ok and evidence.output["found"] is True
    assert evidence.output["key_status"] == "Active" and evidence.output["last_used_service"] == "sts"
    assert evidence.output["attached_policies"] == [f"{user}-bedrock"] and evidence.output["owner_mismatch"] is False
    records = ctx.store.evidence_for(INCIDENT, asset=inputs.asset)
    assert len(records) == 1
    kept = json.loads(ctx.evidence.path_for(records[0].sha256).read_text())
    assert kept["key"]["status"] == "Active" and kept["last_used"]["region"] == REGION
    assert kept["user_attached_policies"][0]["arn"].endswith(f"policy/{user}-bedrock")

    done = _run(ctx, "aws.deactivate_access_key", inputs)
    assert done.status is Outcome.ok and done.output["already"] is False and done.output["previous_status"] == "Active"
    assert _probe(ctx, "aws.deactivate_access_key", inputs, done) == (
        True,
        f"ListAccessKeys shows access key {key_id} of user {user} as Inactive",
    )
    again = _run(ctx, "aws.deactivate_access_key", inputs)
    assert again.status is Outcome.ok and again.output["already"] is True
    assert _probe(ctx, "aws.activate_access_key", inputs, again)[0] is False  # not Active: the probe says so

    back = _run(ctx, "aws.activate_access_key", inputs)
    assert back.status is Outcome.ok and back.output["previous_status"] == "Inactive"
    assert _probe(ctx, "aws.activate_access_key", inputs, back)[0] is True
    assert _status(moto_server, user, key_id) == "Active"

    assert _probe(ctx, "aws.delete_access_key", inputs, back)[0] is False  # still there
    deleted = _run(ctx, "aws.delete_access_key", inputs)
    assert deleted.status is Outcome.ok and deleted.output["already"] is False
    ok, detail = _probe(ctx, "aws.delete_access_key", inputs, deleted)
    assert ok and "no longer lists nor knows" in detail
    assert _refused_code(moto_server, key_id, secret) == "InvalidClientTokenId"
    twice = _run(ctx, "aws.delete_access_key", inputs)
    assert twice.status is Outcome.ok and twice.output["already"] is True and "already deleted" in twice.summary
    gone = _run(ctx, "aws.deactivate_access_key", inputs)
    assert gone.status is Outcome.absent and "nothing to deactivate" in gone.summary

    texts = [caplog.text, *(o.model_dump_json() for o in (evidence, done, again, back, deleted, twice, gone))]
    texts.append(ctx.evidence.path_for(records[0].sha256).read_text())
    matrix.secret_absent(responder[1], *texts)
    matrix.secret_absent(secret, *texts)


def test_the_owner_comes_from_iam_and_a_wrong_user_is_refused(
    moto_server: Moto, responder: tuple[str, str], auth: None, tmp_path: Path
) -> None:
    user, key_id, _ = _workload(moto_server)
    other, _, _ = _workload(moto_server)
    ctx = _ctx(tmp_path, moto_server, responder)

    by_id = AwsAccessKey(access_key_id=key_id, user_name="")  # a scanner finding: the key id only
    assert by_id.user_name is None
    collected = _run(ctx, "aws.collect_access_key_evidence", by_id)
    assert collected.output["found"] is True and collected.output["user_name"] == user
    wrong = AwsAccessKey(access_key_id=key_id, user_name=other)
    mismatch = _run(ctx, "aws.collect_access_key_evidence", wrong)
    assert mismatch.output["owner_mismatch"] is True and mismatch.output["owner"] == user
    for name in ("aws.deactivate_access_key", "aws.delete_access_key"):
        refused = _run(ctx, name, wrong)
        assert refused.status is Outcome.failed and f"belongs to user {user}, not {other}" in refused.summary
    assert _status(moto_server, user, key_id) == "Active"

    done = _run(ctx, "aws.deactivate_access_key", by_id)
    assert done.status is Outcome.ok and done.output["user_name"] == user
    assert _probe(ctx, "aws.deactivate_access_key", by_id, done)[0] is True

    unknown = AwsAccessKey(access_key_id="AKIA" + "Z" * 16)
    missing = _run(ctx, "aws.collect_access_key_evidence", unknown)
    assert missing.status is Outcome.ok and missing.output["found"] is False
    assert _run(ctx, "aws.deactivate_access_key", unknown).status is Outcome.absent
    temporary = _run(ctx, "aws.deactivate_access_key", AwsAccessKey(access_key_id="ASIA" + "Q" * 16))
    assert temporary.status is Outcome.absent and "temporary STS credentials" in temporary.summary
    already = _run(ctx, "aws.delete_access_key", unknown)
    assert already.status is Outcome.ok and already.output["already"] is True


@pytest.mark.parametrize(
    "fields",
    [
        {"access_key_id": "AKIA' OR 1=1"},
        {"access_key_id": "akiaiosfodnn7example"},
        {"access_key_id": "AKIAIOSFODNN7EXAMPLE&Action=DeleteUser"},
        {"access_key_id": "AKIA1234"},
        {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "user_name": "alice&UserName=admin"},
        {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "user_name": "../admin"},
        {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "user_name": "x" * 65},
        {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "extra": "field"},
    ],
)
def test_hostile_inputs_are_refused(fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        AwsAccessKey.model_validate(fields)


def test_the_connector_checks_identifiers_itself(moto_server: Moto, responder: tuple[str, str]) -> None:
    iam = _iam(moto_server, responder)
    with pytest.raises(ValueError, match="not an AWS access key id"):
        iam.last_used("AKIA\nX")
    with pytest.raises(ValueError, match="not an IAM user name"):
        iam.delete_access_key("bob/../admin", "AKIAIOSFODNN7EXAMPLE")
    with pytest.raises(ValueError, match="not an access key status"):
        iam.set_status("bob", "AKIAIOSFODNN7EXAMPLE", "Deleted")  # type: ignore[arg-type]


def test_plan_mode_reads_but_changes_nothing(moto_server: Moto, responder: tuple[str, str], tmp_path: Path) -> None:
    user, key_id, _ = _workload(moto_server)
    plan = _iam(moto_server, responder, plan=True)
    assert plan.access_key(user, key_id) is not None  # reads still run

    def state() -> Any:
        return _status(moto_server, user, key_id)

    planned = matrix.plan_changes_nothing(
        lambda: plan.set_status(user, key_id, "Inactive"), state, "deactivate access key"
    )
    assert f"UpdateAccessKey {user}/{key_id} Status=Inactive" in str(planned)
    matrix.plan_changes_nothing(lambda: plan.delete_access_key(user, key_id), state, "delete access key")

    ctx = _ctx(tmp_path, moto_server, responder, plan_mode=True)
    inputs = AwsAccessKey(access_key_id=key_id, user_name=user)
    for name in ("aws.deactivate_access_key", "aws.delete_access_key"):
        result = REGISTRY[name].task.fn(ctx, inputs)
        assert result.name == "Planned" and "nothing was changed" in result.message, result
    assert _status(moto_server, user, key_id) == "Active"
    matrix.secret_absent(responder[1], str(planned))


def test_without_configuration_the_steps_are_skipped(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    store = Store(settings.store_url)
    ctx = ActionContext(INCIDENT, "p", "s", None, settings, store, EvidenceStore(settings.evidence_dir, store))
    inputs = AwsAccessKey(access_key_id="AKIAIOSFODNN7EXAMPLE", user_name="bob")
    for name in ("aws.collect_access_key_evidence", "aws.deactivate_access_key", "aws.delete_access_key"):
        skipped = REGISTRY[name].task.fn(ctx, inputs)
        assert skipped.name == "Not configured", skipped
        assert "AISOAR_AWS_ACCESS_KEY_ID" in skipped.message and "AISOAR_AWS_USE_DEFAULT_CREDENTIALS" in skipped.message


def test_without_boto3_the_error_says_what_to_install() -> None:
    """In a child interpreter where boto3 cannot be imported (this one keeps it)."""
    code = (
        "import sys; sys.modules['boto3'] = None\n"
        "from connectors.aws import AwsIam\n"
        "from connectors.errors import NotConfigured\n"
        "try:\n    AwsIam('us-east-1')\n"
        "except NotConfigured as exc:\n    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert "AWS IAM needs boto3, which is not installed: install aisoar[aws]" in done.stdout


def test_aws_matrix_through_a_fault_proxy(
    moto_server: Moto, responder: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """moto does not check signatures here: the proxy changes the Host header that is signed."""
    user, key_id, workload_secret = _workload(moto_server)
    caplog.set_level(logging.DEBUG)  # after the arrangement: creating the key logs its secret at DEBUG
    with fault_proxy(moto_server.url) as (proxy, url):
        iam = _iam(moto_server, responder, url, timeout=5.0, attempts=3, backoff=0.01)
        slow = _iam(moto_server, responder, url, timeout=0.5, attempts=3, backoff=0.01)  # timeout check only
        matrix.retry_after_then_success(proxy, "POST /", lambda: iam.set_status(user, key_id, "Inactive"))
        assert _status(moto_server, user, key_id) == "Inactive"

        proxy.script(Fault(status=429, retry_after="1", body=THROTTLED), match="POST /")  # as AWS words it
        assert iam.last_used(key_id) is not None
        seen = proxy.matching()
        assert len(seen) == 2 and seen[1].at - seen[0].at >= 0.9, "Retry-After: 1 was not honoured"

        proxy.script(Fault(status=400, body=THROTTLED), match="POST /")  # IAM's own throttling: HTTP 400
        iam.set_status(user, key_id, "Inactive")  # and doing it twice is harmless
        assert len(proxy.matching()) == 2 and _status(moto_server, user, key_id) == "Inactive"

        storm = matrix.storm_exhausts_retries(
            proxy,
            "POST /",
            lambda: iam.set_status(user, key_id, "Active"),
            attempts=3,
            starts_with=f"AWS IAM activate access key on access key {key_id} failed (HTTP 500)",
        )
        assert _status(moto_server, user, key_id) == "Inactive"
        matrix.times_out(proxy, "POST /", lambda: slow.last_used(key_id), attempts=3, delay=1.5)
        proxy.script()
        iam.set_status(user, key_id, "Active")  # the inverse
        assert _status(moto_server, user, key_id) == "Active"
        deleted = iam.delete_access_key(user, key_id)
        assert deleted is True and iam.delete_access_key(user, key_id) is False
    matrix.secret_absent(responder[1], caplog.text, str(storm))
    matrix.secret_absent(workload_secret, caplog.text, str(storm))


def _walk_playbook(ctx: ActionContext, credential: CloudCredential) -> dict[str, Any]:
    entities = {"cloud_credential": credential.model_dump(mode="json")}
    return walk_playbook(ctx, "leaked-cloud-access-key.yaml", "aws.", entities=entities)


def test_the_playbook_deactivates_then_deletes_the_leaked_key(
    moto_server: Moto, responder: tuple[str, str], auth: None, tmp_path: Path
) -> None:
    user, key_id, secret = _workload(moto_server)
    _use(moto_server, key_id, secret)
    ctx = _ctx(tmp_path, moto_server, responder)
    steps = _walk_playbook(ctx, CloudCredential(provider="aws", credential_id=key_id))  # no principal
    assert steps["preserve-key-record"]["found"] is True and steps["preserve-key-record"]["user_name"] == user
    assert steps["deactivate-key"]["status"] == "ok" and "deactivated" in steps["deactivate-key"]["summary"]
    assert steps["delete-key"]["status"] == "ok" and steps["delete-key"]["already"] is False
    assert _refused_code(moto_server, key_id, secret) == "InvalidClientTokenId"
    message = steps["notify-oncall"]["inputs"]["message"]
    assert f"AWS access key {key_id} of {user} (last used 20" in message and "deactivated in IAM" in message
    details = steps["open-ticket"]["inputs"]["details"]
    assert "Key status at detection: Active" in details and f"Attached policies: {user}-bedrock" in details

    _, other_key, _ = _workload(moto_server)
    stranger, _, _ = _workload(moto_server)
    wrong = _walk_playbook(ctx, CloudCredential(provider="aws", credential_id=other_key, principal=stranger))
    assert wrong["preserve-key-record"]["owner_mismatch"] is True
    assert wrong["deactivate-key"]["status"] == "skipped" and wrong["delete-key"]["status"] == "skipped"
    vault = _walk_playbook(ctx, CloudCredential(provider="vault", credential_id="hmac-accessor-1"))
    assert vault["preserve-key-record"]["status"] == "skipped" and vault["close"]["status"] == "ok"


def test_default_credentials_come_from_boto3s_chain(
    moto_server: Moto, responder: tuple[str, str], auth: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AISOAR_AWS_USE_DEFAULT_CREDENTIALS: boto3 finds the key (here in the environment, as an
    ECS task or a profile would give it); with nothing to find, a clear error, no hang."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", responder[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", responder[1])
    env = {"AISOAR_AWS_ENDPOINT_URL": moto_server.url, "AISOAR_AWS_USE_DEFAULT_CREDENTIALS": "true"}
    settings = make_settings(tmp_path / "data", env=env)
    assert AWS.settings_of(settings).access_key_id is None
    assert "user/aisoar-responder" in AWS.client(settings).check()

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ConnectorError) as caught:
        AwsIam(REGION, moto_server.url, backoff=0.01).check()
    assert str(caught.value).startswith("AWS IAM get caller identity on the credentials failed (no credentials)")
