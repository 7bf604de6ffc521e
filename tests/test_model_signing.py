"""Model versions checked against their OpenSSF model signatures (mlflow.verify_model_signature,
the `model-signing` package, a publisher key made locally) on the real MLflow tracking server:
a signed version verifies, one changed after signing and an unsigned one do not, each result kept
as evidence; the tampered-model playbook pins the known-good version only when its signature
holds."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import httpx

from aisoar.evidence import EvidenceStore
from aisoar.store import Store
from sandbox.signing import publisher_keys, signed
from tasks import REGISTRY
from tasks.base import ActionContext, StepOutcome
from tasks.mlflow import ModelEvidence
from tests import prefect_api
from tests.conftest import make_settings
from tests.servers.mlflow import MlflowServer
from tests.test_mlflow import _alias

API = "/api/2.0/mlflow"


def seed(url: str, name: str, private_key: Path) -> None:
    """Versions 1-3 of ``name``: 1 signed, 2 signed then its weights changed, 3 unsigned;
    ``production`` -> 2."""
    with httpx.Client(base_url=url, timeout=30) as client:

        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            answer = client.post(f"{API}/{path}", json=body)
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

        post("registered-models/create", {"name": name})
        experiment = post("experiments/create", {"name": f"train-{name}"})["experiment_id"]
        for number in (1, 2, 3):
            run = post("runs/create", {"experiment_id": experiment})["run"]["info"]
            files = {"MLmodel": b"flavors: {}\n", "data/weights.bin": secrets.token_bytes(4096)}
            if number in (1, 2):
                files = signed(files, private_key)
            if number == 2:
                files["data/weights.bin"] += b"BACKDOOR"  # after signing
            root = run["artifact_uri"].removeprefix("mlflow-artifacts:/") + "/model"
            for relative, data in files.items():
                put = client.put(f"/api/2.0/mlflow-artifacts/artifacts/{root}/{relative}", content=data)
                assert put.status_code == 200, put.text
            post(
                "model-versions/create",
                {"name": name, "source": f"{run['artifact_uri']}/model", "run_id": run["run_id"]},
            )
        post("registered-models/alias", {"name": name, "alias": "production", "version": "2"})


def context(tmp_path: Path, url: str, public_key: Path | None) -> ActionContext:
    env = {"AISOAR_MLFLOW_URL": url}
    if public_key is not None:
        env["AISOAR_MLFLOW_SIGNING_PUBLIC_KEY"] = str(public_key)
    settings = make_settings(tmp_path / "data", env=env)
    store = Store(settings.store_url)
    return ActionContext(
        "INC-sig-1", "tampered-model", "step", None, settings, store, EvidenceStore(settings.evidence_dir, store)
    )


def check(ctx: ActionContext, name: str, version: str) -> StepOutcome:
    result = REGISTRY["mlflow.verify_model_signature"].task.fn(ctx, ModelEvidence(name=name, version=version))
    outcome = result if isinstance(result, StepOutcome) else result.data
    assert isinstance(outcome, StepOutcome), result
    return outcome


def test_signed_tampered_and_unsigned_versions(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    private, public = publisher_keys(tmp_path / "keys")
    name = f"scorer-{secrets.token_hex(3)}"
    seed(mlflow_server.url, name, private)
    ctx = context(tmp_path, mlflow_server.url, public)
    good = check(ctx, name, "1")
    assert (good.status.value, good.output["signature_valid"]) == ("ok", True), good
    assert good.summary == f"version 1 of {name}: signature VALID for its 3 file(s)"
    tampered = check(ctx, name, "2")
    assert tampered.output["signature_valid"] is False and "signature NOT valid" in tampered.summary, tampered
    assert "weights.bin" in tampered.output["problem"], tampered.output["problem"]
    unsigned = check(ctx, name, "3")
    assert unsigned.output["signature_valid"] is False and unsigned.output["problem"] == "no model.sig"
    kept = {e.description: e for e in ctx.store.evidence_for("INC-sig-1")}
    record = json.loads(ctx.evidence.path_for(kept[f"Model signature check of {name} version 2"].sha256).read_bytes())
    assert record["signature_valid"] is False and record["public_key_sha256"] and record["signature_sha256"]
    assert {f["path"] for f in record["files"]} == {"MLmodel", "data/weights.bin", "model.sig"}
    other = publisher_keys(tmp_path / "other")[1]  # another publisher's key: the good version fails too
    assert check(context(tmp_path / "o", mlflow_server.url, other), name, "1").output["signature_valid"] is False
    none = REGISTRY["mlflow.verify_model_signature"].task.fn(
        context(tmp_path / "n", mlflow_server.url, None), ModelEvidence(name=name, version="1")
    )
    assert none.name == "Not configured" and "AISOAR_MLFLOW_SIGNING_PUBLIC_KEY" in none.message


def test_the_playbook_does_not_pin_a_known_good_version_whose_signature_fails(
    tmp_path: Path,
    mlflow_server: MlflowServer,
    stack_for: Any,
) -> None:
    """The alert names version 2 as known-good, but version 2 was changed after it was signed."""
    from tests.test_playbooks import steps_of

    private, public = publisher_keys(tmp_path / "keys")
    name = f"scorer-{secrets.token_hex(3)}"
    seed(mlflow_server.url, name, private)
    httpx.post(
        f"{mlflow_server.url}{API}/registered-models/alias", json={"name": name, "alias": "production", "version": "3"}
    )
    stack = stack_for((), mlflow_url=mlflow_server.url, mlflow_signing_public_key=str(public))
    alert = {
        "id": f"supply-chain-{name}",
        "title": f"Unsigned version 3 of {name} deployed from a mirror",
        "severity": "critical",
        "incident_type": "dependency_exploitation",
        "labels": {"known_good_version": "2"},
        "entities": [{"type": "model", "name": name, "version": "3"}],
    }
    status = stack.dispatched(stack.fire(alert))
    incident_id = status["incident_id"]
    state = prefect_api.wait_for_state(status["flow_runs"]["tampered-model"], "FAILED", "COMPLETED", timeout=90)
    assert state["state"]["name"] == "Not contained", state["state"]
    steps = steps_of(stack, incident_id, "tampered-model", "verify-signature", "verify-known-good", "pin-known-good")
    assert steps == {"verify-signature": "ok", "verify-known-good": "ok", "pin-known-good": "skipped"}
    assert _alias(mlflow_server.url, name, "production") == "3"  # nothing unverified is served
    verdict = stack.svc.store.step_result(incident_id, "tampered-model", "verify-known-good")
    assert verdict is not None and verdict.output["signature_valid"] is False
    assert stack.svc.store.get_incident(incident_id).status.value == "not contained"
