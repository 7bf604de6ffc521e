"""Actions at the LLM gateway (LiteLLM): preserve a virtual key's record and logs, block or
unblock it, rate-limit it, or pin its model route to a known-good deployment. Each change
remembers what it replaced, so its inverse can put it back.

Every input names its key by hash (``litellm:virtual-key:<sha256>``), the asset of
``litellm.collect_key_evidence``, which must run first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from aisoar.actions import Effect
from connectors.errors import ConnectorError
from connectors.litellm import MAX_LOG_ROWS, LiteLLMGateway
from connectors.litellm import SYSTEM as LITELLM
from tasks.base import ActionContext, AssetInputs, ProbeResult, StepOutcome, absent, ok
from tasks.registry import action

KeyHash = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the key (LiteLLM's key id)")]


class GatewayKey(AssetInputs):
    key_hash: KeyHash

    @property
    def asset(self) -> str:
        return f"litellm:virtual-key:{self.key_hash}"


@action(
    "litellm.collect_key_evidence",
    effect=Effect.read_only,
    inputs=GatewayKey,
    summary="Preserve the key's gateway record (spend, models, limits, status) and its request logs as evidence",
    collects_evidence=True,
)
def collect_key_evidence(ctx: ActionContext, inputs: GatewayKey) -> StepOutcome:
    gateway = LITELLM.client(ctx.settings)
    info = gateway.key_info(inputs.key_hash)
    document = {
        "collected_at": datetime.now(UTC).isoformat(),
        "system": "litellm",
        "key_sha256": inputs.key_hash,
        "found": info is not None,
        "info": {k: v for k, v in (info or {}).items() if k != "token"},
    }
    logs_document, logs = _request_logs(ctx, inputs)
    # Both kept together: their custody entries in one transaction (the key record first).
    kept = [(document, "LLM gateway record of the key", inputs.asset)]
    if logs_document is not None:
        kept.append((logs_document, "LLM gateway request logs of the key", inputs.asset))
    sha256, *logs_sha256 = ctx.keep_all(kept)
    logs["request_logs_sha256"] = logs_sha256[0] if logs_sha256 else None
    if info is None:
        return ok(
            f"the gateway has no such key (recorded as evidence); {logs['request_logs_note']}",
            found=False,
            evidence_sha256=sha256,
            **logs,
        )
    return ok(
        f"gateway record preserved: spend {info.get('spend', 0)}, blocked {bool(info.get('blocked'))}; "
        f"{logs['request_logs_note']}",
        found=True,
        spend=info.get("spend"),
        blocked=bool(info.get("blocked")),
        key_alias=info.get("key_alias"),
        evidence_sha256=sha256,
        **logs,
    )


def _request_logs(ctx: ActionContext, inputs: GatewayKey) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The key's last request log rows, as the evidence document to keep (None: not collected)
    and the step's output about them.

    The rows may hold prompts and answers: attacker-controlled text, stored as JSON data
    and never rendered; only counts go into the step's output and summary. A gateway that
    cannot serve its logs does not fail the step: the key record is kept all the same, and the
    output says why the logs are missing.
    """
    try:
        rows, total = LITELLM.client(ctx.settings).request_logs(inputs.key_hash, MAX_LOG_ROWS)
    except ConnectorError as exc:
        return None, {
            "request_logs": None,
            "request_logs_note": f"request logs not collected ({exc.status}: {exc.detail[:120]})",
        }
    rows, redacted = _without_credentials(rows)
    document = {
        "collected_at": datetime.now(UTC).isoformat(),
        "system": "litellm",
        "source": "GET /spend/logs",
        "credential_fields_redacted": redacted,
        "key_sha256": inputs.key_hash,
        "rows_returned_by_gateway": total,
        "rows_kept": len(rows),
        "truncated_to_last": MAX_LOG_ROWS if total > len(rows) else None,
        "rows": rows,  # hostile text: data only
    }
    more = f" (last {len(rows)} of {total})" if total > len(rows) else ""
    since = leak_time(ctx)
    spent = round(sum(_spend(row) for row in rows if _started(row) >= since), 6)
    return document, {
        "request_logs": len(rows),
        "request_logs_note": f"{len(rows)} request log row(s) preserved{more}; USD {spent:.2f} spent since the leak",
        "spend_since_leak_usd": spent,
        "spend_since": since.isoformat(),
    }


def leak_time(ctx: ActionContext) -> datetime:
    """When the key leaked, as far as the alerts say: the earliest time a source saw it happen,
    else the incident's first alert."""
    incident = ctx.store.get_incident(ctx.incident_id, with_timeline=False)
    alerts = ctx.store.get_alerts(incident.alert_ids)
    seen = [a.occurred_at for a in alerts if a.occurred_at is not None]
    return min(seen or [a.received_at for a in alerts] or [incident.created_at])


def _spend(row: Any) -> float:
    try:
        return float(row.get("spend") or 0) if isinstance(row, dict) else 0.0
    except (TypeError, ValueError):
        return 0.0


def _started(row: Any) -> datetime:
    """A log row's start (LiteLLM's ``startTime``); a row without a readable one counts as
    before the leak (it is not counted as damage)."""
    try:
        started = datetime.fromisoformat(str(row.get("startTime"))) if isinstance(row, dict) else None
    except ValueError:
        started = None
    if started is None:
        return datetime.min.replace(tzinfo=UTC)
    return started if started.tzinfo else started.replace(tzinfo=UTC)


CREDENTIAL_FIELDS = frozenset({"authorization", "x-api-key", "api-key", "x-litellm-api-key", "proxy-authorization"})


def _without_credentials(value: Any) -> tuple[Any, int]:
    """The value with credential-carrying fields (request headers a proxy may log) replaced,
    and how many were; everything else is kept as it was, hostile text included."""
    if isinstance(value, dict):
        count = 0
        clean: dict[str, Any] = {}
        for key, item in value.items():
            if str(key).lower() in CREDENTIAL_FIELDS and item:
                clean[key] = "[redacted by aisoar]"
                count += 1
            else:
                clean[key], found = _without_credentials(item)
                count += found
        return clean, count
    if isinstance(value, list):
        items = [_without_credentials(item) for item in value]
        return [item for item, _ in items], sum(found for _, found in items)
    return value, 0


def _probe_blocked(expected: bool) -> Callable[[ActionContext, GatewayKey, StepOutcome], ProbeResult]:
    def probe(ctx: ActionContext, inputs: GatewayKey, outcome: StepOutcome) -> ProbeResult:
        info = LITELLM.client(ctx.settings).key_info(inputs.key_hash)
        if info is None:
            return ProbeResult(ok=False, detail="the gateway no longer knows the key")
        blocked = bool(info.get("blocked"))
        word = "refused (blocked)" if blocked else "accepted (not blocked)"
        return ProbeResult(ok=blocked is expected, detail=f"the gateway reports the key as {word}")

    return probe


def _set_blocked(ctx: ActionContext, inputs: GatewayKey, blocked: bool) -> StepOutcome:
    gateway = LITELLM.client(ctx.settings)
    verb = "block" if blocked else "unblock"
    try:  # doing it twice is harmless, so there is no read first
        (gateway.block_key if blocked else gateway.unblock_key)(inputs.key_hash)
    except ConnectorError as exc:
        if exc.status == 404:
            return absent(f"the gateway has no such key; nothing to {verb}")
        raise
    return ok(f"key {verb}ed at the gateway")


@action(
    "litellm.block_key",
    effect=Effect.changing,
    inputs=GatewayKey,
    summary="Block the key at the LLM gateway so every request with it is refused",
    inverse="litellm.unblock_key",
    probe=_probe_blocked(True),
)
def block_key(ctx: ActionContext, inputs: GatewayKey) -> StepOutcome:
    return _set_blocked(ctx, inputs, blocked=True)


@action(
    "litellm.unblock_key",
    effect=Effect.changing,
    inputs=GatewayKey,
    summary="Unblock the key at the LLM gateway (the inverse of litellm.block_key)",
    inverse="litellm.block_key",
    probe=_probe_blocked(False),
)
def unblock_key(ctx: ActionContext, inputs: GatewayKey) -> StepOutcome:
    return _set_blocked(ctx, inputs, blocked=False)


# -- limits and model routes -----------------------------------------------------------
LIMITS = ("rpm_limit", "tpm_limit", "max_budget")
_NONE_WORDS = {"", "none", "null"}


def _none_word(value: Any) -> Any:
    """Step outputs reach inputs through templates, as text: ``None``/``null``/empty is no limit."""
    if isinstance(value, str) and value.strip().lower() in _NONE_WORDS:
        return None
    return value


def _json_text(value: Any) -> Any:
    """A mapping or list may arrive as JSON text (a template over ``previous_*_json``)."""
    if isinstance(value, str):
        if value.strip().lower() in _NONE_WORDS:
            return None
        try:
            return json.loads(value)
        except ValueError as exc:
            raise ValueError("expected JSON text") from exc
    return value


Rpm = Annotated[Annotated[int, Field(ge=0, le=10_000_000)] | None, BeforeValidator(_none_word)]
Tpm = Annotated[Annotated[int, Field(ge=0, le=10_000_000_000)] | None, BeforeValidator(_none_word)]
Budget = Annotated[Annotated[float, Field(ge=0, le=10_000_000)] | None, BeforeValidator(_none_word)]
ModelName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@\-]*$",
        description="a model name as the gateway knows it, e.g. support-bot or openai/gpt-4o",
    ),
]
AliasMap = Annotated[dict[ModelName, ModelName], BeforeValidator(_json_text), Field(max_length=256)]
ModelList = Annotated[list[ModelName] | None, BeforeValidator(_json_text), Field(max_length=256)]


class _OnGatewayKey(AssetInputs):
    key_hash: KeyHash

    @property
    def asset(self) -> str:
        return f"litellm:virtual-key:{self.key_hash}"


class KeyLimits(_OnGatewayKey):
    """The limits to set; at least one. A limit not given is left as it is."""

    rpm_limit: Rpm = Field(None, description="requests per minute")
    tpm_limit: Tpm = Field(None, description="tokens per minute")
    max_budget: Budget = Field(None, description="total spend allowed, in USD")

    @model_validator(mode="after")
    def _one_limit(self) -> KeyLimits:
        if self.rpm_limit is None and self.tpm_limit is None and self.max_budget is None:
            raise ValueError("give at least one of rpm_limit, tpm_limit, max_budget")
        return self


class PreviousLimits(_OnGatewayKey):
    """The limits to put back, all three (empty/None: no limit), e.g. the outputs
    ``previous_rpm_limit``, ``previous_tpm_limit``, ``previous_max_budget`` of litellm.limit_key."""

    rpm_limit: Rpm
    tpm_limit: Tpm
    max_budget: Budget


class PinRoute(_OnGatewayKey):
    model: ModelName = Field(description="the model name clients request, e.g. support-bot")
    deployment: ModelName = Field(description="the known-good deployment to route it to, e.g. support-bot-v3")
    allowed_models: ModelList = Field(
        None, description="if given, the key may request only these model names from now on"
    )


class PreviousRoute(_OnGatewayKey):
    """The alias map (and allowed models) to put back, e.g. the outputs ``previous_aliases_json``
    and ``previous_models_json`` of litellm.pin_model_route."""

    aliases: AliasMap
    models: ModelList = Field(None, description="if given, the allowed models to put back; else left as they are")


def _info(gateway: LiteLLMGateway, key_hash: str) -> dict[str, Any] | None:
    return gateway.key_info(key_hash)


def _limits_of(info: dict[str, Any]) -> dict[str, Any]:
    return {name: info.get(name) for name in LIMITS}


def _probe_limits(
    wanted: Callable[[Any], dict[str, Any]],
) -> Callable[[ActionContext, Any, StepOutcome], ProbeResult]:
    def probe(ctx: ActionContext, inputs: Any, outcome: StepOutcome) -> ProbeResult:
        info = _info(LITELLM.client(ctx.settings), inputs.key_hash)
        if info is None:
            return ProbeResult(ok=False, detail="the gateway no longer knows the key")
        expected = wanted(inputs)
        actual = {name: info.get(name) for name in expected}
        same = all(_same_number(actual[name], value) for name, value in expected.items())
        shown = ", ".join(f"{name} {actual[name]}" for name in expected)
        return ProbeResult(ok=same, detail=f"the gateway reports {shown}" + ("" if same else f"; wanted {expected}"))

    return probe


def _same_number(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    try:
        return abs(float(a) - float(b)) < 1e-9
    except (TypeError, ValueError):
        return False


@action(
    "litellm.limit_key",
    effect=Effect.changing,
    inputs=KeyLimits,
    summary="Rate-limit the key at the LLM gateway (rpm/tpm/budget) instead of blocking it",
    inverse="litellm.restore_key_limits",
    probe=_probe_limits(lambda i: {n: getattr(i, n) for n in LIMITS if getattr(i, n) is not None}),
)
def limit_key(ctx: ActionContext, inputs: KeyLimits) -> StepOutcome:
    gateway = LITELLM.client(ctx.settings)
    info = _info(gateway, inputs.key_hash)
    if info is None:
        return absent("the gateway has no such key; nothing to limit")
    previous = _limits_of(info)
    wanted = {n: getattr(inputs, n) for n in LIMITS if getattr(inputs, n) is not None}
    remembered = {f"previous_{name}": value for name, value in previous.items()}
    if all(_same_number(previous[n], v) for n, v in wanted.items()):
        return ok(f"the key already has {_describe(wanted)}", already=True, **remembered)
    gateway.set_limits(inputs.key_hash, wanted)
    return ok(
        f"key limited at the gateway to {_describe(wanted)} (was {_describe(previous)})",
        already=False,
        limits=wanted,
        **remembered,
    )


@action(
    "litellm.restore_key_limits",
    effect=Effect.changing,
    inputs=PreviousLimits,
    summary="Put the key's previous limits back at the LLM gateway (the inverse of litellm.limit_key)",
    inverse="litellm.limit_key",
    probe=_probe_limits(lambda i: {n: getattr(i, n) for n in LIMITS}),
)
def restore_key_limits(ctx: ActionContext, inputs: PreviousLimits) -> StepOutcome:
    gateway = LITELLM.client(ctx.settings)
    wanted: dict[str, int | float | None] = {n: getattr(inputs, n) for n in LIMITS}
    try:
        gateway.set_limits(inputs.key_hash, wanted)
    except ConnectorError as exc:
        if exc.status == 404:
            return absent("the gateway has no such key; nothing to restore")
        raise
    return ok(f"key limits restored at the gateway: {_describe(wanted)}")


def _describe(limits: dict[str, Any]) -> str:
    return ", ".join(f"{name} {'none' if value is None else value}" for name, value in limits.items())


def _routes(info: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    aliases = info.get("aliases") if isinstance(info.get("aliases"), dict) else {}
    models = info.get("models") if isinstance(info.get("models"), list) else []
    return dict(aliases or {}), list(models or [])


def _probe_pinned(ctx: ActionContext, inputs: PinRoute, outcome: StepOutcome) -> ProbeResult:
    info = _info(LITELLM.client(ctx.settings), inputs.key_hash)
    if info is None:
        return ProbeResult(ok=False, detail="the gateway no longer knows the key")
    aliases, models = _routes(info)
    routed = aliases.get(inputs.model)
    good = routed == inputs.deployment and (inputs.allowed_models is None or models == inputs.allowed_models)
    return ProbeResult(
        ok=good, detail=f"the gateway routes {inputs.model} to {routed or inputs.model}; allowed models {models}"
    )


def _probe_route_restored(ctx: ActionContext, inputs: PreviousRoute, outcome: StepOutcome) -> ProbeResult:
    info = _info(LITELLM.client(ctx.settings), inputs.key_hash)
    if info is None:
        return ProbeResult(ok=False, detail="the gateway no longer knows the key")
    aliases, models = _routes(info)
    good = aliases == inputs.aliases and (inputs.models is None or models == inputs.models)
    return ProbeResult(ok=good, detail=f"the gateway reports aliases {aliases}; allowed models {models}")


@action(
    "litellm.pin_model_route",
    effect=Effect.changing,
    inputs=PinRoute,
    summary="Pin the model the key requests to a known-good deployment at the LLM gateway (per-key alias)",
    inverse="litellm.restore_model_route",
    probe=_probe_pinned,
)
def pin_model_route(ctx: ActionContext, inputs: PinRoute) -> StepOutcome:
    gateway = LITELLM.client(ctx.settings)
    info = _info(gateway, inputs.key_hash)
    if info is None:
        return absent("the gateway has no such key; nothing to pin")
    previous_aliases, previous_models = _routes(info)
    remembered = {
        "previous_aliases": previous_aliases,
        "previous_aliases_json": json.dumps(previous_aliases, sort_keys=True),
        "previous_models": previous_models,
        "previous_models_json": json.dumps(previous_models),
    }
    aliases = previous_aliases | {inputs.model: inputs.deployment}
    models = inputs.allowed_models
    if aliases == previous_aliases and (models is None or models == previous_models):
        return ok(f"{inputs.model} was already routed to {inputs.deployment}", already=True, **remembered)
    gateway.set_routes(inputs.key_hash, aliases, models)
    return ok(
        f"{inputs.model} pinned to {inputs.deployment} at the gateway "
        f"(was {previous_aliases.get(inputs.model, inputs.model)})",
        already=False,
        aliases=aliases,
        **remembered,
    )


@action(
    "litellm.restore_model_route",
    effect=Effect.changing,
    inputs=PreviousRoute,
    summary="Put the key's previous model aliases (and allowed models) back (the inverse of litellm.pin_model_route)",
    inverse="litellm.pin_model_route",
    probe=_probe_route_restored,
)
def restore_model_route(ctx: ActionContext, inputs: PreviousRoute) -> StepOutcome:
    gateway = LITELLM.client(ctx.settings)
    try:
        gateway.set_routes(inputs.key_hash, dict(inputs.aliases), inputs.models)
    except ConnectorError as exc:
        if exc.status == 404:
            return absent("the gateway has no such key; nothing to restore")
        raise
    return ok(f"model routes restored at the gateway: {len(inputs.aliases)} alias(es)")


from tasks import litellm_permissions as litellm_permissions  # noqa: E402 - registers the gateway permission actions
