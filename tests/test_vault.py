"""The OpenBao / Vault connector against the real OpenBao dev server: revoke a token by
accessor (the token then gets 403), revoke leases by prefix, destroy a KV v2 version; the
actions through the registry with their probes, idempotency, plan mode, hostile inputs,
and the shared checks (Retry-After, 500 storm, timeout, no secret) through a fault proxy.

aisoar's token in these tests holds exactly the policy documented in
docs/connectors.md (without the default policy), so the documentation is tested too.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from aisoar.evidence import EvidenceStore
from aisoar.models import CloudCredential
from aisoar.store import Store
from connectors.errors import ConnectorError
from connectors.vault import UnsafeIdentifier, VaultCredentials
from tasks import REGISTRY
from tasks.base import ActionContext, Outcome, StepOutcome
from tasks.vault import KvSecret, KvSecretVersion, LeasePrefixInputs, TokenAccessor
from tests import matrix
from tests.conftest import make_settings
from tests.docs import connector_section
from tests.faults import fault_proxy
from tests.servers.openbao import OpenBao
from tests.walk import walk_playbook

INCIDENT = "INC-vault-1"


def _documented_policy() -> str:
    match = re.search(r"```hcl\n(.*?)```", connector_section("OpenBao / HashiCorp Vault"), re.DOTALL)
    assert match, "docs/connectors.md has no ```hcl policy block"
    return match.group(1)


@pytest.fixture(scope="module")
def responder(openbao: OpenBao) -> str:
    """aisoar's token: an orphan with only the documented policy (no default policy)."""
    with openbao.client() as root:
        name = "aisoar-responder"
        assert root.put(f"/v1/sys/policies/acl/{name}", json={"policy": _documented_policy()}).status_code == 204
        created = root.post(
            "/v1/auth/token/create-orphan",
            json={"policies": [name], "no_default_policy": True, "ttl": "2h", "display_name": "aisoar"},
        )
        created.raise_for_status()
        return str(created.json()["auth"]["client_token"])


def _token(
    openbao: OpenBao, policies: list[str], role: str | None = None, namespace: str | None = None
) -> tuple[str, str]:
    """A fresh token (and its accessor), made by root, optionally through a token role."""
    body: dict[str, Any] = {"policies": policies, "ttl": "1h", "display_name": "agent-7", "meta": {"agent": "a7"}}
    path = f"/v1/auth/token/create/{role}" if role else "/v1/auth/token/create"
    if role:
        body = {"meta": {"agent": "a7"}}
    with openbao.client(namespace=namespace) as root:
        created = root.post(path, json=body)
        created.raise_for_status()
        auth = created.json()["auth"]
        return str(auth["client_token"]), str(auth["accessor"])


def _status_of(openbao: OpenBao, token: str, namespace: str | None = None) -> int:
    """What OpenBao answers the token itself (200 while it lives, 403 once revoked)."""
    with openbao.client(token, namespace=namespace) as client:
        return client.get("/v1/auth/token/lookup-self").status_code


def _ctx(tmp_path: Path, openbao: OpenBao, token: str, **overrides: Any) -> ActionContext:
    env = {"AISOAR_VAULT_URL": openbao.url, "AISOAR_VAULT_TOKEN": token}
    settings = make_settings(tmp_path / "data", env=env, **overrides)
    store = Store(settings.store_url)
    return ActionContext(
        INCIDENT,
        "agent-credential-compromise",
        "step",
        None,
        settings,
        store,
        EvidenceStore(settings.evidence_dir, store),
    )


def _run(ctx: ActionContext, name: str, inputs: BaseModel) -> StepOutcome:
    outcome = REGISTRY[name].task.fn(ctx, inputs)
    assert isinstance(outcome, StepOutcome), outcome
    return outcome


def _probe(ctx: ActionContext, name: str, inputs: BaseModel, outcome: StepOutcome) -> bool:
    probe = REGISTRY[name].probe
    assert probe is not None
    return probe(ctx, inputs, outcome).ok


def _evidence_text(ctx: ActionContext, asset: str) -> str:
    records = ctx.store.evidence_for(INCIDENT, asset=asset)
    assert records, f"no evidence about {asset}"
    return "\n".join(ctx.evidence.path_for(r.sha256).read_text() for r in records)


def test_revoke_a_token_by_accessor_and_the_token_gets_403(
    openbao: OpenBao, responder: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with openbao.client() as root:
        policy = 'path "secret/data/agent/*" { capabilities = ["read"] }'
        assert root.put("/v1/sys/policies/acl/agent-reader", json={"policy": policy}).status_code == 204
        assert root.post("/v1/secret/data/agent/db", json={"data": {"password": "hunter2"}}).status_code == 200
    token, accessor = _token(openbao, ["agent-reader"])
    with openbao.client(token) as agent:
        assert agent.get("/v1/secret/data/agent/db").status_code == 200  # the agent's token works
    ctx = _ctx(tmp_path, openbao, responder)
    inputs = TokenAccessor(accessor=accessor)
    assert inputs.asset == f"vault:token-accessor:{accessor}"

    evidence = _run(ctx, "vault.collect_token_evidence", inputs)
    assert evidence.status is Outcome.ok and evidence.output["found"] is True
    assert evidence.output["display_name"] == "token-agent-7"
    assert evidence.output["policies"] == ["agent-reader", "default"]
    assert evidence.output["path"] == "auth/token/create"
    kept = json.loads(_evidence_text(ctx, inputs.asset))
    assert kept["token"]["meta"] == {"agent": "a7"} and kept["token"]["creation_time"] > 0
    assert "id" not in kept["token"]

    entry = REGISTRY["vault.revoke_token_accessor"]
    assert entry.info.effect.value == "destructive" and entry.info.inverse is None
    assert not _probe(ctx, "vault.revoke_token_accessor", inputs, evidence)  # still alive: the probe says so
    revoked = _run(ctx, "vault.revoke_token_accessor", inputs)
    assert revoked.status is Outcome.ok and revoked.output["already"] is False
    assert _probe(ctx, "vault.revoke_token_accessor", inputs, revoked)
    assert _status_of(openbao, token) == 403  # OpenBao itself refuses the revoked token
    with openbao.client(token) as agent:
        assert agent.get("/v1/secret/data/agent/db").status_code == 403

    again = _run(ctx, "vault.revoke_token_accessor", inputs)  # twice is harmless, and says so
    assert again.status is Outcome.ok and again.output["already"] is True and "already revoked" in again.summary
    gone = _run(ctx, "vault.collect_token_evidence", inputs)
    assert gone.output["found"] is False

    texts = [caplog.text, _evidence_text(ctx, inputs.asset)]
    texts += [o.model_dump_json() for o in (evidence, revoked, again, gone)]
    matrix.secret_absent(token, *texts)
    matrix.secret_absent(responder, *texts)


def test_revoke_every_lease_under_a_prefix(openbao: OpenBao, responder: str, tmp_path: Path) -> None:
    role = f"agent-{secrets.token_hex(4)}"
    with openbao.client() as root:
        assert root.post(f"/v1/auth/token/roles/{role}", json={"token_ttl": "1h"}).status_code == 204
    tokens = [_token(openbao, [], role=role)[0] for _ in range(2)]
    bystander, _ = _token(openbao, ["default"])  # issued elsewhere: must survive
    assert all(_status_of(openbao, t) == 200 for t in tokens)
    ctx = _ctx(tmp_path, openbao, responder)
    inputs = LeasePrefixInputs(prefix=f"auth/token/create/{role}")

    evidence = _run(ctx, "vault.collect_lease_evidence", inputs)
    assert evidence.output["lease_count"] == 2 and evidence.output["truncated"] is False
    kept = json.loads(_evidence_text(ctx, inputs.asset))
    assert all(lease.startswith(f"auth/token/create/{role}/") for lease in kept["lease_ids"])
    assert len(kept["details"]) == 2 and all(d["issue_time"] for d in kept["details"])

    assert not _probe(ctx, "vault.revoke_lease_prefix", inputs, evidence)
    revoked = _run(ctx, "vault.revoke_lease_prefix", inputs)
    assert revoked.status is Outcome.ok and revoked.output == {"already": False, "revoked": 2}
    assert _probe(ctx, "vault.revoke_lease_prefix", inputs, revoked)
    assert [_status_of(openbao, t) for t in tokens] == [403, 403]
    assert _status_of(openbao, bystander) == 200 and _status_of(openbao, openbao.root_token) == 200

    again = _run(ctx, "vault.revoke_lease_prefix", inputs)
    assert again.status is Outcome.ok and again.output["already"] is True
    matrix.secret_absent(responder, *(o.model_dump_json() for o in (evidence, revoked, again)))


def test_aisoar_never_revokes_its_own_token(openbao: OpenBao, responder: str) -> None:
    as_root = VaultCredentials(openbao.url, openbao.root_token)  # the dev root token was issued on auth/token/create
    for prefix in ("auth/token/create", "auth/token", "auth/"):
        with pytest.raises(ConnectorError) as caught:
            as_root.revoke_lease_prefix(prefix)
        assert caught.value.status == "refused" and "aisoar's own token" in str(caught.value)
    assert _status_of(openbao, openbao.root_token) == 200
    as_responder = VaultCredentials(openbao.url, responder)
    own = as_responder.own_token().accessor
    with pytest.raises(ConnectorError, match=r"failed \(refused\): this is aisoar's own token"):
        as_responder.revoke_accessor(own)
    assert _status_of(openbao, responder) == 200


def test_destroy_one_version_of_a_kv_secret(openbao: OpenBao, responder: str, tmp_path: Path) -> None:
    path = f"agents/a7/{secrets.token_hex(4)}"
    values = [f"first-{secrets.token_hex(8)}", f"second-{secrets.token_hex(8)}"]
    with openbao.client() as root:
        for value in values:
            assert root.post(f"/v1/secret/data/{path}", json={"data": {"api_key": value}}).status_code == 200
    ctx = _ctx(tmp_path, openbao, responder)
    secret = KvSecret(path=path)  # the configured mount (AISOAR_VAULT_KV_MOUNT, "secret")
    assert secret.asset == f"vault:kv:@default/{path}"

    evidence = _run(ctx, "vault.collect_secret_metadata", secret)
    assert evidence.output["found"] is True and evidence.output["versions"] == [1, 2]
    kept = _evidence_text(ctx, secret.asset)
    assert json.loads(kept)["metadata"]["versions"]["1"]["destroyed"] is False
    matrix.secret_absent(values[0], kept, evidence.model_dump_json())  # metadata only, never the data
    matrix.secret_absent(values[1], kept, evidence.model_dump_json())

    inputs = KvSecretVersion(path=path, version=1)
    assert inputs.asset == secret.asset  # the evidence is about the asset the destroy step changes
    assert not _probe(ctx, "vault.destroy_secret_version", inputs, evidence)
    destroyed = _run(ctx, "vault.destroy_secret_version", inputs)
    assert destroyed.status is Outcome.ok and destroyed.output["already"] is False
    assert _probe(ctx, "vault.destroy_secret_version", inputs, destroyed)
    with openbao.client() as root:
        read = root.get(f"/v1/secret/data/{path}", params={"version": "1"})
        assert read.status_code == 404 and read.json()["data"]["data"] is None  # the data is gone
        assert read.json()["data"]["metadata"]["destroyed"] is True
        assert root.get(f"/v1/secret/data/{path}").json()["data"]["data"] == {"api_key": values[1]}

    again = _run(ctx, "vault.destroy_secret_version", inputs)
    assert again.status is Outcome.ok and again.output["already"] is True
    with pytest.raises(ConnectorError, match=r"failed \(not found\): the secret has no version 9"):
        _run(ctx, "vault.destroy_secret_version", KvSecretVersion(path=path, version=9))
    missing = _run(ctx, "vault.collect_secret_metadata", KvSecret(path="agents/none", mount="secret"))
    assert missing.output["found"] is False
    with pytest.raises(ConnectorError, match=r"HTTP 404\): no handler for route"):  # no such mount: an error
        VaultCredentials(openbao.url, openbao.root_token).secret_metadata(path, mount="nomount")


def test_plan_mode_changes_nothing(openbao: OpenBao, responder: str, tmp_path: Path) -> None:
    token, accessor = _token(openbao, ["default"])
    role = f"plan-{secrets.token_hex(4)}"
    path = f"plan/{secrets.token_hex(4)}"
    with openbao.client() as root:
        assert root.post(f"/v1/auth/token/roles/{role}", json={"token_ttl": "1h"}).status_code == 204
        assert root.post(f"/v1/secret/data/{path}", json={"data": {"k": "v"}}).status_code == 200
    leased, _ = _token(openbao, [], role=role)

    ctx = _ctx(tmp_path, openbao, responder, plan_mode=True)
    planned = REGISTRY["vault.revoke_token_accessor"].task.fn(ctx, TokenAccessor(accessor=accessor))
    assert not isinstance(planned, StepOutcome)
    assert planned.name == "Planned" and "would revoke token accessor" in str(planned.message)
    assert _status_of(openbao, token) == 200
    evidence = _run(ctx, "vault.collect_token_evidence", TokenAccessor(accessor=accessor))  # reads still run
    assert evidence.output["found"] is True

    vault = VaultCredentials(openbao.url, responder, plan=True)
    matrix.plan_changes_nothing(
        lambda: vault.revoke_accessor(accessor), lambda: _status_of(openbao, token), "revoke token accessor"
    )
    matrix.plan_changes_nothing(
        lambda: vault.revoke_lease_prefix(f"auth/token/create/{role}"),
        lambda: (_status_of(openbao, leased), vault.list_leases(f"auth/token/create/{role}")),
        "revoke lease prefix",
    )
    matrix.plan_changes_nothing(
        lambda: vault.destroy_version(path, 1), lambda: vault.secret_metadata(path), "destroy secret version"
    )
    assert _status_of(openbao, leased) == 200


def test_retries_storm_timeout_and_no_secret(
    openbao: OpenBao, responder: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    role = f"faults-{secrets.token_hex(4)}"
    with openbao.client() as root:
        assert root.post(f"/v1/auth/token/roles/{role}", json={"token_ttl": "1h"}).status_code == 204
    errors: list[ConnectorError] = []
    with fault_proxy(openbao.url) as (proxy, proxy_url):
        vault = VaultCredentials(proxy_url, responder, backoff=0.01, attempts=3, timeout=5.0)
        slow = VaultCredentials(proxy_url, responder, backoff=0.01, attempts=3, timeout=0.5)  # timeout checks only
        vault.own_token()  # looked up once (the self-protection guard), before the faults
        slow.own_token()

        # revoke by accessor
        token, accessor = _token(openbao, ["default"])
        match = "POST /v1/auth/token/revoke-accessor"
        result = matrix.retry_after_then_success(proxy, match, lambda: vault.revoke_accessor(accessor))
        assert result.already is False and _status_of(openbao, token) == 403
        _, other = _token(openbao, ["default"])
        errors.append(
            matrix.storm_exhausts_retries(
                proxy,
                match,
                lambda: vault.revoke_accessor(other),
                attempts=3,
                starts_with=f"Vault revoke token accessor on vault:token-accessor:{other} failed (HTTP 500)",
            )
        )
        matrix.times_out(proxy, match, lambda: slow.revoke_accessor(other), attempts=3, delay=1.0)

        # revoke by lease prefix
        leased, _ = _token(openbao, [], role=role)
        prefix = f"auth/token/create/{role}"
        match = "PUT /v1/sys/leases/revoke-prefix/"
        matrix.retry_after_then_success(proxy, match, lambda: vault.revoke_lease_prefix(prefix))
        assert _status_of(openbao, leased) == 403
        errors.append(
            matrix.storm_exhausts_retries(
                proxy,
                match,
                lambda: vault.revoke_lease_prefix(prefix),
                attempts=3,
                starts_with=f"Vault revoke lease prefix on vault:lease-prefix:{prefix} failed (HTTP 500)",
            )
        )
        matrix.times_out(proxy, match, lambda: slow.revoke_lease_prefix(prefix), attempts=3, delay=1.0)

        # destroy a KV version
        path = f"faults/{secrets.token_hex(4)}"
        with openbao.client() as root:
            for n in range(3):
                assert root.post(f"/v1/secret/data/{path}", json={"data": {"n": n}}).status_code == 200
        match = "PUT /v1/secret/destroy/"
        matrix.retry_after_then_success(proxy, match, lambda: vault.destroy_version(path, 1))
        assert (vault.secret_metadata(path) or {})["versions"]["1"]["destroyed"] is True
        errors.append(
            matrix.storm_exhausts_retries(
                proxy,
                match,
                lambda: vault.destroy_version(path, 2),
                attempts=3,
                starts_with=f"Vault destroy secret version on vault:kv:secret/{path} failed (HTTP 500)",
            )
        )
        matrix.times_out(proxy, match, lambda: slow.destroy_version(path, 3), attempts=3, delay=1.0)

        # the evidence reads
        errors.append(
            matrix.storm_exhausts_retries(
                proxy,
                "POST /v1/auth/token/lookup-accessor",
                lambda: vault.lookup_accessor(other),
                attempts=3,
                starts_with=f"Vault look up token accessor on vault:token-accessor:{other} failed (HTTP 500)",
            )
        )
        sent = {s.headers.get("x-vault-token") for s in proxy.seen}
        assert sent == {responder}  # the token went to the configured server only, on every request
    texts = [caplog.text] + [str(e) for e in errors] + [repr(e.__dict__) for e in errors]
    matrix.secret_absent(responder, *texts)


def test_check_and_a_wrong_token(openbao: OpenBao, responder: str) -> None:
    description = VaultCredentials(openbao.url, responder).check()
    assert description.startswith("Vault reachable, token accepted (policies aisoar-responder")
    assert responder not in description
    wrong = "s." + secrets.token_hex(12)
    with pytest.raises(ConnectorError) as caught:
        VaultCredentials(openbao.url, wrong, backoff=0.01).check()
    assert str(caught.value) == "Vault look up own token on the aisoar token failed (HTTP 403): permission denied"
    matrix.secret_absent(wrong, str(caught.value), repr(caught.value.__dict__))


def test_the_namespace_header_is_sent(openbao: OpenBao, tmp_path: Path) -> None:
    namespace = f"team-{secrets.token_hex(3)}"
    with openbao.client() as root:
        assert root.post(f"/v1/sys/namespaces/{namespace}").status_code == 200
    token, accessor = _token(openbao, ["default"], namespace=namespace)
    assert "." in accessor  # a namespaced accessor ("<id>.<namespace id>") fits the input pattern
    ctx = _ctx(tmp_path, openbao, openbao.root_token, vault_namespace=namespace)
    inputs = TokenAccessor(accessor=accessor)
    assert _run(ctx, "vault.collect_token_evidence", inputs).output["found"] is True
    assert _run(ctx, "vault.revoke_token_accessor", inputs).output["already"] is False
    assert _status_of(openbao, token, namespace=namespace) == 403
    outside = VaultCredentials(openbao.url, openbao.root_token, attempts=1)
    with pytest.raises(ConnectorError, match="different namespace"):  # without the header: the root namespace
        outside.lookup_accessor(accessor)


SAMPLES: dict[str, BaseModel] = {
    "vault.collect_token_evidence": TokenAccessor(accessor="Q9LVQkelO5U64a0Ohw27yWwZ"),
    "vault.revoke_token_accessor": TokenAccessor(accessor="Q9LVQkelO5U64a0Ohw27yWwZ"),
    "vault.collect_lease_evidence": LeasePrefixInputs(prefix="database/creds/agent"),
    "vault.revoke_lease_prefix": LeasePrefixInputs(prefix="database/creds/agent"),
    "vault.collect_secret_metadata": KvSecret(path="agents/a7"),
    "vault.destroy_secret_version": KvSecretVersion(path="agents/a7", version=1),
}


def test_without_settings_every_step_is_skipped(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    store = Store(settings.store_url)
    ctx = ActionContext(INCIDENT, "p", "s", None, settings, store, EvidenceStore(settings.evidence_dir, store))
    assert {name for name in REGISTRY if name.startswith("vault.")} == set(SAMPLES)
    for name, inputs in SAMPLES.items():
        skipped = REGISTRY[name].task.fn(ctx, inputs)
        assert not isinstance(skipped, StepOutcome)
        assert skipped.name == "Not configured", name
        assert "AISOAR_VAULT_URL" in str(skipped.message) and "AISOAR_VAULT_TOKEN" in str(skipped.message)


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        (TokenAccessor, "accessor", "../../sys/seal"),
        (TokenAccessor, "accessor", "abc"),
        (TokenAccessor, "accessor", "Q9LVQkelO5U64a0Ohw27yWwZ\n"),
        (TokenAccessor, "accessor", "Q9LVQkelO5U64a0O hw27yWwZ"),
        (LeasePrefixInputs, "prefix", "/sys/seal"),
        (LeasePrefixInputs, "prefix", "database/../sys"),
        (LeasePrefixInputs, "prefix", "database/./creds"),
        (LeasePrefixInputs, "prefix", "database//creds"),
        (LeasePrefixInputs, "prefix", "database/creds%2F.."),
        (LeasePrefixInputs, "prefix", "database/creds?x=1"),
        (LeasePrefixInputs, "prefix", ""),
        (KvSecret, "path", "agents/../../sys/policies"),
        (KvSecret, "path", "agents/a7/"),
        (KvSecret, "path", "agents\\a7"),
        (KvSecret, "mount", "../sys"),
    ],
)
def test_hostile_identifiers_are_refused(model: type[BaseModel], field: str, value: str) -> None:
    base: dict[str, Any] = {"path": "agents/a7"} if model is KvSecret else {}
    with pytest.raises(ValidationError):
        model.model_validate({**base, field: value})


def test_the_connector_checks_identifiers_too() -> None:
    vault = VaultCredentials("http://127.0.0.1:9", "t")  # nothing is sent: the check comes first
    for call in (
        lambda: vault.lookup_accessor("../x"),
        lambda: vault.list_leases("a/../b"),
        lambda: vault.revoke_lease_prefix("/sys"),
        lambda: vault.secret_metadata("a/..", mount="secret"),
        lambda: vault.destroy_version("a", 1, mount="x/../y"),
    ):
        with pytest.raises(UnsafeIdentifier):
            call()


@pytest.fixture(autouse=True)
def _fresh_connectors() -> Iterator[None]:
    """Connectors are cached per configuration; each test builds its own."""
    from connectors.vault import SYSTEM as VAULT

    VAULT.clear_cache()
    yield
    VAULT.clear_cache()


def _walk_playbook(ctx: ActionContext, credential: CloudCredential) -> dict[str, dict[str, Any]]:
    entities = {"cloud_credential": credential.model_dump(mode="json")}
    return walk_playbook(ctx, "agent-credential-compromise.yaml", "vault.", entities=entities)


def test_the_playbook_revokes_the_agent_token(openbao: OpenBao, responder: str, tmp_path: Path) -> None:
    token, accessor = _token(openbao, ["default"])
    ctx = _ctx(tmp_path, openbao, responder)
    steps = _walk_playbook(ctx, CloudCredential(provider="openbao", credential_id=accessor, principal="agent-7"))
    assert steps["preserve-token-metadata"]["found"] is True
    assert steps["revoke-token"]["status"] == "ok" and _status_of(openbao, token) == 403
    message = steps["notify-oncall"]["inputs"]["message"]
    assert f"openbao token {accessor} (principal agent-7, policies default)" in message and "revoked" in message

    other = _walk_playbook(ctx, CloudCredential(provider="aws", credential_id="AKIAIOSFODNN7EXAMPLE"))
    assert other["revoke-token"]["status"] == "skipped" and other["close"]["status"] == "ok"
