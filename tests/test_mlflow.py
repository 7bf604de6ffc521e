"""The MLflow model registry connector against the real MLflow server (tests/servers/mlflow.py):
pin the serving alias to a known-good version and put it back, the evidence collector's
digests of the version record and of every artifact file, the actions through the registry
with their probes, plan mode, hostile inputs, and the shared checks (Retry-After, 500 storm,
timeout, no secret) through a fault proxy in front of the real server.

Each test seeds its own registered model through the REST API: three versions whose files are
uploaded through the tracking server's artifact proxy, and ``production`` on the newest (the
tampered one).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.schemas.objects import State
from pydantic import ValidationError

from aisoar.evidence import EvidenceStore
from aisoar.models import Model
from aisoar.store import Store
from connectors.errors import ConnectorError
from connectors.mlflow import SYSTEM as MLFLOW
from connectors.mlflow import MlflowRegistry, UnsafeArtifactPath, artifact_path, version_digest
from tasks import REGISTRY
from tasks.base import ActionContext, Outcome, StepOutcome
from tasks.mlflow import AliasPin, AliasRestore, ModelEvidence
from tests import matrix
from tests.conftest import make_settings
from tests.faults import fault_proxy, server_error, too_many
from tests.servers.mlflow import MlflowServer
from tests.walk import walk_playbook

TOKEN = "mlflow-test-token-" + secrets.token_hex(8)
API = "/api/2.0/mlflow"


def _seed(url: str, name: str) -> dict[str, dict[str, bytes]]:
    """A registered model with versions 1-3 (files uploaded through the artifact proxy) and
    ``production`` -> 3; returns each version's files by relative path."""
    files: dict[str, dict[str, bytes]] = {}
    with httpx.Client(base_url=url, timeout=30) as client:

        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            answer = client.post(f"{API}/{path}", json=body)
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

        post("registered-models/create", {"name": name, "tags": [{"key": "team", "value": "risk"}]})
        experiment = post("experiments/create", {"name": f"train-{name}"})["experiment_id"]
        for number in (1, 2, 3):
            run = post("runs/create", {"experiment_id": experiment})["run"]["info"]
            content = {
                "MLmodel": f"flavors: {{python_function: {{}}}}\nversion: {number}\n".encode(),
                "data/weights.bin": secrets.token_bytes(2048) + (b"BACKDOOR" if number == 3 else b""),
                "data/config.json": json.dumps({"layers": number}).encode(),
            }
            root = run["artifact_uri"].removeprefix("mlflow-artifacts:/") + "/model"
            for relative, data in content.items():
                put = client.put(f"/api/2.0/mlflow-artifacts/artifacts/{root}/{relative}", content=data)
                assert put.status_code == 200, put.text
            post(
                "model-versions/create",
                {"name": name, "source": f"{run['artifact_uri']}/model", "run_id": run["run_id"]},
            )
            files[str(number)] = content
        post("registered-models/alias", {"name": name, "alias": "production", "version": "3"})
    return files


def _alias(url: str, name: str, alias: str) -> str | None:
    answer = httpx.get(f"{url}{API}/registered-models/alias", params={"name": name, "alias": alias})
    return str(answer.json()["model_version"]["version"]) if answer.status_code == 200 else None


def _context(tmp_path: Path, **settings: Any) -> ActionContext:
    config = make_settings(tmp_path / "data", **settings)
    store = Store(config.store_url)
    return ActionContext(
        "INC-mlflow-1", "tampered-model", "pin", None, config, store, EvidenceStore(config.evidence_dir, store)
    )


def _state(result: StepOutcome | State[StepOutcome]) -> tuple[str, str]:
    """The name and message of the Skipped/Planned state an action's task returned."""
    assert isinstance(result, State), result
    return str(result.name), str(result.message)


def _outcome(result: Any) -> StepOutcome:
    """What an action's task returned: the outcome, or the outcome inside a Skipped/Planned state."""
    if isinstance(result, StepOutcome):
        return result
    data = result.data
    assert isinstance(data, StepOutcome), result
    return data


def test_pin_and_unpin_restore_the_alias_and_doing_it_twice_is_harmless(mlflow_server: MlflowServer) -> None:
    _seed(mlflow_server.url, "fraud-pin")
    registry = MlflowRegistry(mlflow_server.url, TOKEN, backoff=0.01)
    assert registry.pin("fraud-pin", "production", "1") == {"previous_version": "3", "version": "1", "changed": True}
    assert registry.get_alias("fraud-pin", "production") == "1" == _alias(mlflow_server.url, "fraud-pin", "production")
    again = registry.pin("fraud-pin", "production", "1")
    assert again == {"previous_version": "1", "version": "1", "changed": False}
    restored = registry.unpin("fraud-pin", "production", "3", pinned_version="1")
    assert restored["changed"] and _alias(mlflow_server.url, "fraud-pin", "production") == "3"
    assert not registry.unpin("fraud-pin", "production", "3", pinned_version="1")["changed"]
    # an alias that was not set: the pin creates it, the unpin deletes it (twice: harmless)
    assert registry.get_alias("fraud-pin", "canary") is None
    assert registry.pin("fraud-pin", "canary", "2")["previous_version"] is None
    assert _alias(mlflow_server.url, "fraud-pin", "canary") == "2"
    assert registry.unpin("fraud-pin", "canary", None)["changed"]
    assert registry.get_alias("fraud-pin", "canary") is None
    assert not registry.unpin("fraud-pin", "canary", None)["changed"]
    registry.delete_alias("fraud-pin", "canary")  # MLflow: deleting an unset alias is harmless
    # someone re-pointed the alias since the pin: the unpin leaves it alone
    registry.pin("fraud-pin", "production", "2")
    registry.set_alias("fraud-pin", "production", "1")
    left = registry.unpin("fraud-pin", "production", "3", pinned_version="2")
    assert left["left_as_is"] and not left["changed"] and _alias(mlflow_server.url, "fraud-pin", "production") == "1"


def test_pinning_a_version_that_does_not_exist_is_a_clear_error(mlflow_server: MlflowServer) -> None:
    _seed(mlflow_server.url, "fraud-missing")
    registry = MlflowRegistry(mlflow_server.url, TOKEN, backoff=0.01)
    with pytest.raises(ConnectorError) as caught:
        registry.pin("fraud-missing", "production", "9")
    assert str(caught.value).startswith("MLflow pin alias on fraud-missing@production failed (HTTP 404)")
    assert "has no version 9" in str(caught.value)
    assert _alias(mlflow_server.url, "fraud-missing", "production") == "3"
    with pytest.raises(ConnectorError) as gone:
        registry.pin("no-such-model", "production", "1")
    assert gone.value.status == 404
    assert registry.get_model("no-such-model") is None and registry.get_alias("no-such-model", "production") is None
    assert registry.check().startswith("MLflow registry reachable")


def test_model_evidence_digests_the_version_record_and_every_file(mlflow_server: MlflowServer) -> None:
    files = _seed(mlflow_server.url, "fraud-evidence")
    registry = MlflowRegistry(mlflow_server.url, TOKEN, backoff=0.01)
    record = registry.get_version("fraud-evidence", "3")
    assert record is not None and record["status"] == "READY"
    canonical = json.dumps({k: v for k, v in record.items() if k != "aliases"}, sort_keys=True, separators=(",", ":"))
    assert version_digest(record) == hashlib.sha256(canonical.encode()).hexdigest()
    root, note = registry.artifact_root(record)
    assert root is not None and note.startswith("mlflow-artifacts:/")
    digests = registry.artifact_digests(root)
    expected = {path: hashlib.sha256(data).hexdigest() for path, data in files["3"].items()}
    assert {f["path"]: f["sha256"] for f in digests["files"]} == expected
    assert digests["truncated"] is False and digests["bytes_digested"] == sum(len(d) for d in files["3"].values())
    few = MlflowRegistry(mlflow_server.url, TOKEN, max_files=2, backoff=0.01).artifact_digests(root)
    assert few["truncated"] and few["files_digested"] == 2 and few["truncated_reasons"] == ["more than 2 files"]
    small = MlflowRegistry(mlflow_server.url, TOKEN, max_bytes=100, backoff=0.01).artifact_digests(root)
    assert small["truncated"] and small["bytes_digested"] <= 100
    assert [f["sha256"] for f in small["files"] if f["path"] == "data/weights.bin"] == [None]  # listed, not digested
    assert any("100-byte limit" in reason for reason in small["truncated_reasons"])
    assert registry.artifact_root({"source": "s3://bucket/model"})[0] is None  # not served by the tracking server


def test_hostile_inputs_are_refused() -> None:
    for bad in ("../x", "a/b", "fraud scorer", "", "x" * 300, "name?alias=x"):
        with pytest.raises(ValidationError):
            AliasPin(name=bad, version="1")
    for bad in ("1 OR 1", "0", "-1", "1.0", "../2", "99999999999"):
        with pytest.raises(ValidationError):
            AliasPin(name="fraud", version=bad)
    for bad in ("latest", "v3", "prod/../x", "9lives", "a b"):
        with pytest.raises(ValidationError):
            AliasPin(name="fraud", alias=bad, version="1")
    assert AliasRestore(name="fraud", previous_version="").previous_version is None
    assert ModelEvidence(name="fraud", version="").version is None
    for path in ("1/run/../../etc/passwd", "1//x", "./x", "a/\x00b"):
        with pytest.raises(UnsafeArtifactPath):
            artifact_path(path)
    assert artifact_path("1/run id/a%b") == "1/run%20id/a%25b"
    registry = MlflowRegistry("http://127.0.0.1:9", None)
    assert registry.artifact_root({"source": "mlflow-artifacts:/1/../../secrets"})[0] is None


def test_the_actions_collect_pin_verify_and_unpin(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    files = _seed(mlflow_server.url, "fraud-actions")
    ctx = _context(tmp_path, env={"AISOAR_MLFLOW_URL": mlflow_server.url, "AISOAR_MLFLOW_TOKEN": TOKEN})
    evidence = _outcome(REGISTRY["mlflow.collect_model_evidence"].task.fn(ctx, ModelEvidence(name="fraud-actions")))
    assert evidence.status is Outcome.ok and evidence.output["version"] == "3"
    assert evidence.output["alias_version"] == "3" and evidence.output["artifact_files"] == len(files["3"])
    assert evidence.output["version_status"] == "READY" and not evidence.output["artifacts_truncated"]
    kept = ctx.store.evidence_for(ctx.incident_id, asset="mlflow:model:fraud-actions")
    assert [record.sha256 for record in kept] == [evidence.output["evidence_sha256"]]
    document = json.loads(ctx.evidence.path_for(kept[0].sha256).read_text())
    assert document["version_digest"]["sha256"] == evidence.output["version_digest"]
    assert {f["path"] for f in document["artifacts"]["files"]} == set(files["3"])
    pin_inputs = AliasPin(name="fraud-actions", version="1")
    pinned = _outcome(REGISTRY["mlflow.pin_alias"].task.fn(ctx, pin_inputs))
    assert pinned.status is Outcome.ok and pinned.output["previous_version"] == "3" and not pinned.output["already"]
    probe = REGISTRY["mlflow.pin_alias"].probe
    assert probe is not None
    verdict = probe(ctx, pin_inputs, pinned)
    assert verdict.ok and "points to version 1" in verdict.detail
    twice = _outcome(REGISTRY["mlflow.pin_alias"].task.fn(ctx, pin_inputs))
    assert twice.output["already"] and probe(ctx, pin_inputs, twice).ok
    restore = AliasRestore(name="fraud-actions", previous_version=pinned.output["previous_version"], pinned_version="1")
    unpinned = _outcome(REGISTRY["mlflow.unpin_alias"].task.fn(ctx, restore))
    assert unpinned.status is Outcome.ok and unpinned.output["restored_version"] == "3"
    unprobe = REGISTRY["mlflow.unpin_alias"].probe
    assert unprobe is not None and unprobe(ctx, restore, unpinned).ok
    assert not probe(ctx, pin_inputs, pinned).ok  # the pin's probe now sees version 3 again
    again = _outcome(REGISTRY["mlflow.unpin_alias"].task.fn(ctx, restore))
    assert again.output["already"] and _alias(mlflow_server.url, "fraud-actions", "production") == "3"
    with pytest.raises(ConnectorError, match="has no version 7"):
        REGISTRY["mlflow.pin_alias"].task.fn(ctx, AliasPin(name="fraud-actions", version="7"))
    missing = _outcome(REGISTRY["mlflow.collect_model_evidence"].task.fn(ctx, ModelEvidence(name="nobody")))
    assert missing.status is Outcome.ok and missing.output["found"] is False


def test_the_actions_in_plan_mode_change_nothing(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    _seed(mlflow_server.url, "fraud-plan")
    ctx = _context(tmp_path, env={"AISOAR_MLFLOW_URL": mlflow_server.url}, plan_mode=True)
    evidence = _outcome(REGISTRY["mlflow.collect_model_evidence"].task.fn(ctx, ModelEvidence(name="fraud-plan")))
    assert evidence.status is Outcome.ok  # reads still run in plan mode
    name, message = _state(REGISTRY["mlflow.pin_alias"].task.fn(ctx, AliasPin(name="fraud-plan", version="1")))
    assert name == "Planned" and "pin alias" in message and "nothing was changed" in message
    assert _alias(mlflow_server.url, "fraud-plan", "production") == "3"
    undo = _state(REGISTRY["mlflow.unpin_alias"].task.fn(ctx, AliasRestore(name="fraud-plan", previous_version=None)))
    assert undo[0] == "Planned" and _alias(mlflow_server.url, "fraud-plan", "production") == "3"


def test_without_an_mlflow_url_the_steps_are_skipped(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    for name, inputs in (
        ("mlflow.collect_model_evidence", ModelEvidence(name="m")),
        ("mlflow.pin_alias", AliasPin(name="m", version="1")),
        ("mlflow.unpin_alias", AliasRestore(name="m", previous_version="2")),
    ):
        state, message = _state(REGISTRY[name].task.fn(ctx, inputs))
        assert state == "Not configured" and "AISOAR_MLFLOW_URL" in message


def test_mlflow_matrix_through_a_fault_proxy(mlflow_server: MlflowServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    _seed(mlflow_server.url, "fraud-matrix")
    with fault_proxy(mlflow_server.url) as (proxy, url):
        registry = MlflowRegistry(url, TOKEN, timeout=5.0, attempts=3, backoff=0.01)
        slow = MlflowRegistry(url, TOKEN, timeout=0.5, attempts=3, backoff=0.01)  # for the timeout check only
        pin = matrix.retry_after_then_success(
            proxy, "POST .*/registered-models/alias", lambda: registry.pin("fraud-matrix", "production", "2")
        )
        assert pin["changed"] and _alias(mlflow_server.url, "fraud-matrix", "production") == "2"
        assert all(s.headers.get("authorization") == f"Bearer {TOKEN}" for s in proxy.seen)
        storm = matrix.storm_exhausts_retries(
            proxy,
            "POST .*/registered-models/alias",
            lambda: registry.pin("fraud-matrix", "production", "1"),
            attempts=3,
            starts_with="MLflow pin alias on fraud-matrix@production failed (HTTP 500)",
        )
        assert _alias(mlflow_server.url, "fraud-matrix", "production") == "2"
        matrix.times_out(
            proxy, "GET .*/registered-models/alias", lambda: slow.get_alias("fraud-matrix", "production"), 3, 1.0
        )
        proxy.script(*[server_error() for _ in range(5)], match="DELETE .*/registered-models/alias")
        with pytest.raises(ConnectorError) as unpin_storm:
            registry.unpin("fraud-matrix", "production", None)
        assert str(unpin_storm.value).startswith("MLflow unpin alias on fraud-matrix@production failed (HTTP 500)")
        proxy.script(too_many("1"), match="GET /api/2.0/mlflow-artifacts/artifacts/")
        record = registry.get_version("fraud-matrix", "2")
        assert record is not None
        root, _ = registry.artifact_root(record)
        assert root is not None and registry.artifact_digests(root)["files_digested"] == 3
        faulted = proxy.matching()[0].fault
        assert faulted is not None and faulted.status == 429  # a download was refused once, then retried
        proxy.script()
        restored = registry.unpin("fraud-matrix", "production", "3", pinned_version="2")
        assert restored["changed"] and _alias(mlflow_server.url, "fraud-matrix", "production") == "3"
    plan = MlflowRegistry(mlflow_server.url, TOKEN, plan=True)
    planned = matrix.plan_changes_nothing(
        lambda: plan.pin("fraud-matrix", "production", "1"),
        lambda: _alias(mlflow_server.url, "fraud-matrix", "production"),
        "pin alias",
    )
    matrix.secret_absent(TOKEN, caplog.text, str(storm), str(unpin_storm.value), str(planned), json.dumps(pin))


@pytest.fixture(autouse=True)
def _fresh_connectors() -> Iterator[None]:
    """Connectors are cached per configuration; each test builds its own."""
    MLFLOW.clear_cache()
    yield
    MLFLOW.clear_cache()


def _walk_playbook(ctx: ActionContext, model: Model, labels: dict[str, str]) -> dict[str, dict[str, Any]]:
    entities = {"model": model.model_dump(mode="json")}
    return walk_playbook(ctx, "tampered-model.yaml", "mlflow.", entities=entities, labels=labels)


def test_the_playbook_pins_the_known_good_version(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    _seed(mlflow_server.url, "fraud-playbook")
    ctx = _context(tmp_path, env={"AISOAR_MLFLOW_URL": mlflow_server.url})
    steps = _walk_playbook(ctx, Model(name="fraud-playbook", version="3"), {"known_good_version": "2"})
    assert steps["preserve-model"]["version"] == "3" and steps["preserve-model"]["artifact_files"] == 3
    assert steps["pin-known-good"]["previous_version"] == "3"
    assert _alias(mlflow_server.url, "fraud-playbook", "production") == "2"
    assert "previous_version 3" in steps["open-ticket"]["inputs"]["details"]
    with pytest.raises(ValidationError):  # the label is alert data: only a version number passes
        _walk_playbook(ctx, Model(name="fraud-playbook"), {"known_good_version": "2 OR 1=1"})
    assert _alias(mlflow_server.url, "fraud-playbook", "production") == "2"
    without = _walk_playbook(ctx, Model(name="fraud-playbook"), {})
    assert without["pin-known-good"]["status"] == "skipped" and without["close"]["status"] == "ok"


def test_evidence_is_kept_when_the_artifacts_cannot_be_read(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    _seed(mlflow_server.url, "fraud-noartifacts")
    with fault_proxy(mlflow_server.url) as (proxy, url):
        proxy.script(*[server_error() for _ in range(10)], match="GET /api/2.0/mlflow-artifacts/")
        ctx = _context(tmp_path, env={"AISOAR_MLFLOW_URL": url}, http_timeout_seconds=2.0)
        outcome = _outcome(
            REGISTRY["mlflow.collect_model_evidence"].task.fn(ctx, ModelEvidence(name="fraud-noartifacts"))
        )
    assert outcome.status is Outcome.ok and outcome.output["version_digest"] and outcome.output["artifact_files"] == 0
    assert "artifact files not digested (500" in outcome.output["artifacts_note"]
    assert ctx.store.evidence_for(ctx.incident_id, asset="mlflow:model:fraud-noartifacts")
