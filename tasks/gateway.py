"""Containment at the LLM gateway (LiteLLM) short of blocking a key: rate-limit it, or pin
its model route to a known-good deployment. Each change remembers what it replaced, so
its inverse can put it back.

Every input names its key by hash (``litellm:virtual-key:<sha256>``), the same asset as
``gateway.collect_key_evidence``, which must run first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from aisoar.actions import Effect
from connectors.errors import ConnectorError
from connectors.litellm import LiteLLMGateway
from tasks import connect
from tasks.base import ActionContext, AssetInputs, ProbeResult, StepOutcome, absent, ok
from tasks.keys import KeyHash
from tasks.registry import action

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
    ``previous_rpm_limit``, ``previous_tpm_limit``, ``previous_max_budget`` of gateway.limit_key."""

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
    and ``previous_models_json`` of gateway.pin_model_route."""

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
        info = _info(connect.gateway(ctx.settings), inputs.key_hash)
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
    "gateway.limit_key",
    effect=Effect.changing,
    inputs=KeyLimits,
    summary="Rate-limit the key at the LLM gateway (rpm/tpm/budget) instead of blocking it",
    inverse="gateway.restore_key_limits",
    probe=_probe_limits(lambda i: {n: getattr(i, n) for n in LIMITS if getattr(i, n) is not None}),
)
def limit_key(ctx: ActionContext, inputs: KeyLimits) -> StepOutcome:
    gateway = connect.gateway(ctx.settings)
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
    "gateway.restore_key_limits",
    effect=Effect.changing,
    inputs=PreviousLimits,
    summary="Put the key's previous limits back at the LLM gateway (the inverse of gateway.limit_key)",
    inverse="gateway.limit_key",
    probe=_probe_limits(lambda i: {n: getattr(i, n) for n in LIMITS}),
)
def restore_key_limits(ctx: ActionContext, inputs: PreviousLimits) -> StepOutcome:
    gateway = connect.gateway(ctx.settings)
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
    info = _info(connect.gateway(ctx.settings), inputs.key_hash)
    if info is None:
        return ProbeResult(ok=False, detail="the gateway no longer knows the key")
    aliases, models = _routes(info)
    routed = aliases.get(inputs.model)
    good = routed == inputs.deployment and (inputs.allowed_models is None or models == inputs.allowed_models)
    return ProbeResult(
        ok=good, detail=f"the gateway routes {inputs.model} to {routed or inputs.model}; allowed models {models}"
    )


def _probe_route_restored(ctx: ActionContext, inputs: PreviousRoute, outcome: StepOutcome) -> ProbeResult:
    info = _info(connect.gateway(ctx.settings), inputs.key_hash)
    if info is None:
        return ProbeResult(ok=False, detail="the gateway no longer knows the key")
    aliases, models = _routes(info)
    good = aliases == inputs.aliases and (inputs.models is None or models == inputs.models)
    return ProbeResult(ok=good, detail=f"the gateway reports aliases {aliases}; allowed models {models}")


@action(
    "gateway.pin_model_route",
    effect=Effect.changing,
    inputs=PinRoute,
    summary="Pin the model the key requests to a known-good deployment at the LLM gateway (per-key alias)",
    inverse="gateway.restore_model_route",
    probe=_probe_pinned,
)
def pin_model_route(ctx: ActionContext, inputs: PinRoute) -> StepOutcome:
    gateway = connect.gateway(ctx.settings)
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
    "gateway.restore_model_route",
    effect=Effect.changing,
    inputs=PreviousRoute,
    summary="Put the key's previous model aliases (and allowed models) back (the inverse of gateway.pin_model_route)",
    inverse="gateway.pin_model_route",
    probe=_probe_route_restored,
)
def restore_model_route(ctx: ActionContext, inputs: PreviousRoute) -> StepOutcome:
    gateway = connect.gateway(ctx.settings)
    try:
        gateway.set_routes(inputs.key_hash, dict(inputs.aliases), inputs.models)
    except ConnectorError as exc:
        if exc.status == 404:
            return absent("the gateway has no such key; nothing to restore")
        raise
    return ok(f"model routes restored at the gateway: {len(inputs.aliases)} alias(es)")
