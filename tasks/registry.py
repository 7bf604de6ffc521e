"""The action registry: every action is a Prefect task with a declaration the runner enforces."""

from __future__ import annotations

import functools
import importlib
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.states import Cancelled, Completed, Failed
from pydantic import BaseModel

from aisoar.actions import ActionCatalog, ActionInfo, Effect
from connectors.errors import NotConfigured, Planned
from tasks.base import ActionContext, Outcome, ProbeResult, StepOutcome

InputsT = TypeVar("InputsT", bound=BaseModel)
Probe = Callable[[ActionContext, Any, StepOutcome], ProbeResult]


@dataclass(frozen=True)
class Action:
    info: ActionInfo
    task: Task[..., StepOutcome | State[StepOutcome]]
    probe: Probe | None
    done_name: Callable[[StepOutcome], str] | None = None

    def state_of(self, outcome: StepOutcome) -> State[StepOutcome]:
        """``state_of`` with this action's own name for a done outcome."""
        return state_of(outcome, self.done_name)

    @property
    def name(self) -> str:
        return self.info.name


# The action namespaces, each registered by the tasks module of its name: the namespaces of
# aisoar itself, then one per external system (connectors.systems).
CORE_NAMESPACES = ("incident", "evidence", "http")  # http: the endpoints in AISOAR_HTTP_ENDPOINTS__*


def namespaces() -> tuple[str, ...]:
    from connectors.systems import SYSTEMS

    return CORE_NAMESPACES + tuple(system.name for system in SYSTEMS)


class Registry(Mapping[str, Action]):
    """Every action, by name. The first read loads every namespace's module, so an entry point
    sees all actions whether or not it imported a tasks module itself."""

    def __init__(self) -> None:
        self._actions: dict[str, Action] = {}
        self._loaded = False
        self._lock = threading.RLock()

    def add(self, entry: Action) -> None:
        if entry.name in self._actions:
            raise ValueError(f"action {entry.name} is registered twice")
        self._actions[entry.name] = entry

    def load(self) -> None:
        with self._lock:
            if self._loaded:
                return
            declared = namespaces()
            for namespace in declared:
                importlib.import_module(f"tasks.{namespace}")
            for name in self._actions:
                if name.split(".", 1)[0] not in declared:
                    raise ValueError(f"action {name} is outside every declared namespace")
            self._loaded = True

    def __getitem__(self, name: str) -> Action:
        self.load()
        return self._actions[name]

    def __iter__(self) -> Iterator[str]:
        self.load()
        return iter(self._actions)

    def __len__(self) -> int:
        self.load()
        return len(self._actions)


REGISTRY = Registry()


def action(
    name: str,
    *,
    effect: Effect,
    inputs: type[InputsT],
    summary: str,
    inverse: str | None = None,
    probe: Callable[[ActionContext, InputsT, StepOutcome], ProbeResult] | None = None,
    collects_evidence: bool = False,
    ends_playbook: bool = False,
    done_name: Callable[[StepOutcome], str] | None = None,
) -> Callable[[Callable[[ActionContext, InputsT], StepOutcome]], Callable[[ActionContext, InputsT], StepOutcome]]:
    """Register ``fn`` as action ``name``.

    The task never caches (``NO_CACHE``) and never persists its result: a side effect is
    never skipped by Prefect. Re-running a finished step is prevented by the runner,
    which reads the step's recorded outcome from the incident. ``done_name``: the task run
    state's name for a done outcome, with its summary as the message (default: Prefect's own
    "Completed").
    """
    if effect is Effect.changing and inverse is None:
        raise ValueError(f"action {name}: a changing (reversible) action must name its inverse")

    def register(
        fn: Callable[[ActionContext, InputsT], StepOutcome],
    ) -> Callable[[ActionContext, InputsT], StepOutcome]:
        @functools.wraps(fn)
        def run(ctx: ActionContext, inputs: InputsT) -> StepOutcome | State[StepOutcome]:
            try:
                outcome = fn(ctx, inputs)
            except NotConfigured as exc:
                outcome = StepOutcome(
                    status=Outcome.not_configured,
                    summary=f"skipped: not configured ({exc})",
                    output={"not_configured_system": exc.system},
                )
            except Planned as exc:
                outcome = StepOutcome(status=Outcome.planned, summary=str(exc), output={"planned": exc.as_dict()})
            if outcome.status is Outcome.ok and done_name is None:
                return outcome
            return state_of(outcome, done_name)  # named after the outcome in the Prefect UI

        prefect_task: Task[..., StepOutcome | State[StepOutcome]] = task(
            name=name, cache_policy=NO_CACHE, persist_result=False, retries=0, log_prints=False
        )(run)
        info = ActionInfo(
            name=name,
            effect=effect,
            inputs=inputs,
            summary=summary,
            collects_evidence=collects_evidence,
            inverse=inverse,
            has_probe=probe is not None,
            ends_playbook=ends_playbook,
        )
        REGISTRY.add(Action(info=info, task=prefect_task, probe=probe, done_name=done_name))
        return fn

    return register


def state_of(outcome: StepOutcome, done_name: Callable[[StepOutcome], str] | None = None) -> State[StepOutcome]:
    """The task run state that shows ``outcome`` at a glance: its type is never a green
    Completed for a step that did not do its job, and its name is the outcome's (for a done
    outcome, ``done_name``'s when the action has one)."""
    label = outcome.status.label
    if outcome.status is Outcome.ok and done_name is not None:
        label = done_name(outcome)
    if outcome.status in (Outcome.failed, Outcome.refused):
        return Failed(name=label, message=outcome.summary, data=outcome)
    grey = (Outcome.rejected, Outcome.expired, Outcome.not_configured, Outcome.absent, Outcome.skipped)
    if outcome.status in grey:  # did no work: never green
        return Cancelled(name=label, message=outcome.summary, data=outcome)
    return Completed(name=label, message=outcome.summary, data=outcome)


def catalog() -> ActionCatalog:
    return {name: entry.info for name, entry in REGISTRY.items()}
