"""The playbook runtime: runs playbook flow runs in this long-lived process.

Why not a Prefect worker or ``serve()``: both poll and start a new process per run
(1.5-9 s to the first task measured here). The runtime instead uses Prefect's own
machinery in-process:

* one deployment per playbook spec (``to_deployment().apply()``), so the UI lists
  playbooks by name and its "Run" button works;
* a new incident's run is created from its deployment with the idempotency key
  ``<incident>:<playbook>`` directly in ``Pending`` (claimed) and executed at once with
  ``run_flow_sync`` in a thread;
* an approval suspends the run (``suspend_flow_run``): no thread or process waits for the
  answer, and nothing is lost if this process stops. Resuming in the UI reschedules the
  run; the sweep (every ``runner_sweep_seconds``) claims scheduled runs of the playbook
  deployments by proposing ``Pending`` (Prefect lets exactly one claimer win) and runs
  them again from the top, skipping the steps the incident already records;
* runs whose runner died mid-step are taken over: each run's owner heartbeats in the
  store, and a run whose heartbeat went stale is executed again by another runtime;
* an approval that expires wakes its run, which then applies the spec's default;
* only an answer decides an approval: a run cancelled in the UI while it waits records a
  rejection (by whoever cancelled: Prefect OSS does not say who) and runs on to its end
  state; a run suspended without its form gets the form back;
* a run that did not contain its incident runs again when a new alert for it arrives;
* an error in the engine marks the run Crashed with the reason, on the timeline and in Slack.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.responses import OrchestrationResult, SetStateStatus
from prefect.deployments.runner import RunnerDeployment
from prefect.exceptions import ObjectNotFound, Pause, PrefectHTTPStatusError
from prefect.flow_engine import run_flow_sync
from prefect.states import Crashed, Pending, Scheduled

from aisoar.bundles import Custody
from aisoar.models import utcnow
from aisoar.prefect_retries import watch_retries
from aisoar.store import ApprovalRecord
from flows.answers import AnswerDesk
from flows.clocks import remind_and_escalate
from flows.console import ensure_saved_searches
from flows.escalation import escalate_due
from flows.head_start import head_start
from flows.playbook import NOT_CONTAINED, playbook_flow, run_playbook
from flows.prefect_watch import PrefectWatch
from flows.quick_create import QuickRunCreator
from flows.replica_id import ReplicaIdLease
from flows.services import Services, use_services
from flows.tell import runner_context, tell

log = logging.getLogger("aisoar.runtime")
PRUNE_EVERY = 6 * 3600.0  # seconds between two deletions of evidence past its retention
FORM_GRACE_SECONDS = 5.0  # a Suspended run younger than this may still be writing its form
PREFECT_PAGE = 200  # the most flow runs Prefect's server returns for one read
HEAD_START_FIRST_SECONDS = 30.0  # the longest a new run waits for the head starts of a burst
HEAD_START_GAP_SECONDS = 0.3  # a burst's head starts follow each other closer than this


class PlaybookRuntime:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        # A replica id names this runtime across restarts: started again, it takes back at once
        # the runs it held (without one, a new id each time: they wait until stale).
        self.owner = svc.settings.replica_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.stale_after = timedelta(
            seconds=max(svc.settings.runner_stale_seconds, svc.settings.runner_sweep_seconds * 3)
        )
        self.deployments: dict[str, UUID] = {}
        self._active: set[str] = set()
        self._leading: set[tuple[str, str]] = set()  # (incident, playbook) whose head start runs here
        self._led_at = self._led_before = -1e9  # when the last two head starts here ended (monotonic)
        self._again: set[str] = set()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(svc.settings.runner_max_concurrent_runs)
        self._stop = threading.Event()
        self._client: SyncPrefectClient | None = None
        self._creator: QuickRunCreator | None = None
        self._sweeper: threading.Thread | None = None
        self._beater: threading.Thread | None = None
        self.watch: PrefectWatch | None = None
        self._last_slow_sweep = 0.0
        self._last_prune: float | None = None
        self._forms_seen: set[tuple[str, str]] = set()  # (run, form key) known to be up
        self.desk = AnswerDesk(svc, waker=self.wake)
        # One live process per replica id (a random owner cannot collide: nothing to hold).
        self.replica_id = ReplicaIdLease(svc.store, self.owner) if svc.settings.replica_id else None
        use_services(svc)

    # -- life cycle -----------------------------------------------------------------
    def start(self) -> None:
        if self.replica_id is not None:
            self.replica_id.hold()  # before anything is taken under the id; ReplicaIdInUse: refused
        # Beating from now on: registering the deployments can take longer than a holder may be
        # silent before another start under the id takes it over.
        self._beater = threading.Thread(target=self._beat_forever, name="aisoar-heartbeat", daemon=True)
        self._beater.start()
        try:
            self._client = get_client(sync_client=True)
            self._client.__enter__()
            self._creator = QuickRunCreator(self._client)
            watch_retries()
            self.watch = PrefectWatch().start()
            self.register_deployments()
            ensure_saved_searches(self._client)  # the UI's "Awaiting approval" runs filter (flows/console.py)
        except BaseException:
            self._stop.set()
            self._beater.join(timeout=10)
            if self.replica_id is not None:  # not started (Prefect unreachable): the next start need not wait
                self.replica_id.release()
            raise
        self._recover_orphans(own=True)  # what this replica ran before it stopped, at once
        self._sweeper = threading.Thread(target=self._sweep_forever, name="aisoar-sweep", daemon=True)
        self._sweeper.start()

    def stop(self, drain_seconds: float = 5.0) -> None:
        """Stop starting runs; give the ones executing here ``drain_seconds`` to reach a stop (an
        approval, their end), then release this runtime's runs for the others to take at once.
        A run still mid-step then is released too: the process exits right after, and waiting
        for it to go stale would hold its containment back by ``runner_stale_seconds``."""
        self._stop.set()
        for thread in (self._sweeper, self._beater):
            if thread is not None:
                thread.join(timeout=10)
        if self.watch is not None:
            self.watch.stop()
        deadline = time.monotonic() + drain_seconds
        while time.monotonic() < deadline:
            with self._lock:
                if not self._active and not self._leading:
                    break
            time.sleep(0.05)
        self.svc.store.release_runs(self.owner)
        if self.replica_id is not None:
            self.replica_id.release()
        if self._creator is not None:
            self._creator.close()
            self._creator = None
        if self._client is not None:
            self._client.__exit__(None, None, None)
            self._client = None

    def prefect_problem(self) -> str | None:
        """Why runs cannot be created now (Prefect does not answer), or None."""
        return self.watch.problem if self.watch is not None else "the playbook runtime is not started"

    @property
    def client(self) -> SyncPrefectClient:
        if self._client is None:
            raise RuntimeError("the playbook runtime is not started")
        return self._client

    def register_deployments(self) -> None:
        for name, spec in sorted(self.svc.specs.items()):
            deployment = cast(
                RunnerDeployment,
                playbook_flow(spec).to_deployment(  # type: ignore[call-arg]
                    name=name,
                    description=f"{spec.title}\n\n{spec.description}".strip(),
                    tags=["aisoar", spec.incident_type.value if spec.incident_type else "triage", *spec.atlas],
                    parameters={"playbook": name},
                    _sync=True,  # also when started from a thread that runs an event loop
                ),
            )
            self.deployments[name] = cast(UUID, deployment.apply(_sync=True))  # type: ignore[call-arg]

    # -- starting runs --------------------------------------------------------------
    def launch(self, incident_id: str, playbook: str) -> str:
        """Run the playbook's head start, then create (or find, by idempotency key) its run and
        execute it here at once.

        Only the runtime that holds the incident's playbook run in the store runs the head start
        and starts the run (if this process dies first, another one takes it over). The head
        start does not need Prefect: while Prefect is down it still contains, and the alert
        waits in the inbox for its run. The run is created already ``Pending``: no sweep or
        worker picks it up.
        """
        return self.create(incident_id, playbook, self.lead(incident_id, playbook))

    def lead(self, incident_id: str, playbook: str, taken: bool = False) -> bool:
        """The first half of ``launch``: take the incident's playbook run and run its head start;
        whether this runtime holds the run (then ``create`` starts it here). ``taken``: the
        dispatcher's claim of the run made this runtime its holder already."""
        if self._creator is None:
            raise RuntimeError("the playbook runtime is not started")
        if self._stop.is_set():
            raise RuntimeError("the playbook runtime is stopping")  # the alert waits in the inbox
        held = taken or self.svc.store.take_playbook_run(incident_id, playbook, self.owner, utcnow() - self.stale_after)
        if held:
            self._head_start(incident_id, playbook)
        return held

    def create(self, incident_id: str, playbook: str, held: bool, yielding: bool = False) -> str:
        """The second half of ``launch``: create (or find) the run and, if ``held``, execute it.
        ``yielding``: first let the head starts running here finish (containment first: in a
        burst, asking Prefect for runs took the CPU the head starts needed)."""
        if self._creator is None:
            raise RuntimeError("the playbook runtime is not started")
        if yielding:
            self._yield_to_head_starts()
        if self._stop.is_set():
            raise RuntimeError("the playbook runtime is stopping")  # the alert waits in the inbox
        if problem := self.prefect_problem():
            raise RuntimeError(problem)  # the alert waits in the inbox for Prefect
        flow_run = self._creator.create(
            self.deployments[playbook],
            parameters={"incident_id": incident_id, "playbook": playbook},
            idempotency_key=f"{incident_id}:{playbook}",
            name=f"{playbook} · {incident_id}",
            tags=["aisoar", f"incident:{incident_id}"],
            state=Pending(),
        )
        run_id = str(flow_run.id)
        self.svc.store.set_flow_run(incident_id, playbook, run_id)
        if held and flow_run.state is not None and flow_run.state.is_pending():
            self._start(flow_run, again=False)  # started here already: not a second time
        return run_id

    def _head_start(self, incident_id: str, playbook: str) -> None:
        """The spec's lead steps, held by this runtime's heartbeat while they run."""
        spec = self.svc.specs.get(playbook)
        if spec is None:
            return
        lead = (incident_id, playbook)
        with self._lock:
            if lead in self._leading:
                # Another launch here runs it now (a retry of a launch that is slow under load):
                # it creates the run when it is done; this one must not run the steps beside it.
                raise RuntimeError(f"the head start of {playbook} runs here now; its run follows it")
            self._leading.add(lead)
        try:
            head_start(self.svc, spec, incident_id)
        finally:
            with self._lock:
                self._leading.discard(lead)
                self._led_before, self._led_at = self._led_at, time.monotonic()

    def redrive(self, incident_id: str, playbook: str) -> bool:
        """A new alert for an incident whose run ended without containing it: schedule that
        run again (the runner skips the steps done, and tries the others again)."""
        run_id = self.svc.store.flow_run_of(incident_id, playbook)
        if run_id is None:
            return False
        flow_run = self.client.read_flow_run(UUID(run_id))
        state = flow_run.state
        failed = state is not None and state.type is StateType.FAILED and state.name == NOT_CONTAINED
        if not (failed or (state is not None and state.type is StateType.CRASHED)):
            return False  # running, waiting, contained, or a person decided (Rejected, Expired, triage)
        self.client.set_flow_run_state(flow_run.id, Scheduled(), force=True)
        return True

    def tell(self, incident_id: str, message: str) -> None:
        """What a source said about the incident (its alert resolved), told where its people are."""
        runs = self.svc.store.get_incident(incident_id).flow_run_ids
        playbook, run_id = next(iter(runs.items()), ("-", None))
        tell(runner_context(self.svc, incident_id, playbook, run_id, "source"), message)

    def _claim_and_start(self, flow_run: FlowRun) -> bool:
        if flow_run.state is None or flow_run.state.type is not StateType.SCHEDULED:
            return False
        if not self.svc.store.take_run(str(flow_run.id), self.owner, utcnow() - self.stale_after):
            return False
        result: OrchestrationResult[Any] = self.client.set_flow_run_state(flow_run.id, Pending())
        if result.status != SetStateStatus.ACCEPT:
            return False  # another runner claimed it first
        self._start(flow_run)
        return True

    def _start(self, flow_run: FlowRun, again: bool = True) -> None:
        """Execute the run in a thread; ``again``: if it is executing here now, once more after
        that (a resumed run whose previous execution is still winding down)."""
        run_id = str(flow_run.id)
        with self._lock:
            if run_id in self._active:
                # The previous execution is still winding down (a suspended or failed run's
                # engine exits after ~1 s); run it again as soon as that thread is done.
                if again:
                    self._again.add(run_id)
                return
            self._active.add(run_id)
        threading.Thread(target=self._execute, args=(flow_run,), name=f"playbook-{run_id[:8]}", daemon=True).start()

    def _execute(self, flow_run: FlowRun) -> None:
        run_id = str(flow_run.id)
        finished = True
        try:
            self._yield_to_head_starts()
            with self._slots:
                spec = self.svc.specs.get(str(flow_run.parameters.get("playbook", "")))
                runner = playbook_flow(spec) if spec is not None else run_playbook
                state = run_flow_sync(runner, flow_run=flow_run, parameters=flow_run.parameters, return_type="state")
            log.info("playbook run %s ended %s", run_id, getattr(state, "name", state))
        except Pause:
            finished = False  # waiting for approval; resuming reschedules it
        except BaseException as exc:  # a run must never take the runtime down, nor end unseen
            log.exception("playbook run %s raised", run_id)
            self._crashed(flow_run, exc)
        finally:
            with self._lock:
                self._active.discard(run_id)
                again = run_id in self._again
                self._again.discard(run_id)
            if again and not self._stop.is_set():
                self._start(self.client.read_flow_run(flow_run.id))
            elif not self._stop.is_set():
                if finished:
                    self.svc.store.finish_run(run_id)
                else:
                    self.svc.store.release_runs(self.owner, run_id)

    def _yield_to_head_starts(self) -> None:
        """In a burst, containment first: a run's engine costs several times the CPU of a head
        start, so a run waits to start while head starts run here (at most
        ``HEAD_START_FIRST_SECONDS``; it is held by this runtime meanwhile)."""
        deadline = time.monotonic() + HEAD_START_FIRST_SECONDS
        while (now := time.monotonic()) < deadline and not self._stop.is_set():
            with self._lock:
                # Between two head starts of a burst none may run for a moment; one alone (the
                # one before it ended long ago) holds nothing back once it is done.
                burst = self._led_at - self._led_before < HEAD_START_GAP_SECONDS
                if not self._leading and not (burst and now - self._led_at < HEAD_START_GAP_SECONDS):
                    return
            time.sleep(0.02)

    def _crashed(self, flow_run: FlowRun, exc: BaseException) -> None:
        """The engine itself failed: the run says Crashed with the reason, and people hear."""
        reason = f"the playbook runtime failed: {type(exc).__name__}: {str(exc)[:500]}"
        try:
            self.client.set_flow_run_state(flow_run.id, Crashed(message=reason), force=True)
        except Exception:
            log.exception("could not mark playbook run %s Crashed", flow_run.id)
        incident_id = str(flow_run.parameters.get("incident_id", ""))
        playbook = str(flow_run.parameters.get("playbook", ""))
        if not incident_id:
            return
        try:
            self.svc.store.add_timeline(incident_id, "error", f"playbook {playbook} crashed: {reason}")
            ctx = runner_context(self.svc, incident_id, playbook, str(flow_run.id), "runtime")
            tell(
                ctx,
                f"Playbook {playbook} CRASHED: {reason}. The incident is not contained by it; a responder must act.",
            )
        except Exception:
            log.exception("could not record the crash of playbook run %s", flow_run.id)

    # -- the sweep ------------------------------------------------------------------
    def _beat_forever(self) -> None:
        """The runs this runtime executes, and its replica id, are held: a heartbeat every second,
        in a thread of its own (a slow sweep must not make them look abandoned)."""
        every = min(1.0, self.stale_after.total_seconds() / 4)
        while not self._stop.wait(every):
            with self._lock:
                held, leading = sorted(self._active), sorted(self._leading)
            try:
                self.svc.store.heartbeat(self.owner, held, leading)
                if self.replica_id is not None:
                    self.replica_id.beat()
            except Exception:
                log.exception("heartbeat failed; trying again")

    def _sweep_forever(self) -> None:
        while not self._stop.wait(self.svc.settings.runner_sweep_seconds):
            try:
                self.sweep()
            except Exception:
                log.exception("runtime sweep failed; trying again")

    def sweep(self) -> None:
        """Start scheduled runs (resumed approvals, the UI's Run button) every time;
        recover orphans and wake expired approvals every few seconds."""
        self._start_scheduled()
        now = time.monotonic()
        slow_every = max(self.svc.settings.runner_sweep_seconds, min(2.0, self.stale_after.total_seconds() / 3))
        if now - self._last_slow_sweep >= slow_every:
            self._last_slow_sweep = now
            chores: dict[str, Callable[[], object]] = {
                "taking over orphaned runs": self._recover_orphans,
                "waking expired approvals": self._wake_expired_approvals,
                "watching the approvals that wait": self._watch_pending_approvals,
                "waking decided approvals": self._wake_decided,
                "escalating silent approvals": self._escalate,
                "telling regulatory deadlines": lambda: remind_and_escalate(self.svc, utcnow()),
                "deleting evidence past its retention": self._prune,
            }
            for what, chore in chores.items():  # one that fails does not hold back the others
                try:
                    chore()
                except Exception:
                    log.exception("runtime sweep: %s failed; trying again", what)

    def _escalate(self) -> None:
        escalate_due(self.svc, self.desk, utcnow())

    def _prune(self) -> None:
        """Every six hours: the evidence of incidents closed longer than the retention ago, and
        not on legal hold, is deleted (``aisoar prune`` does it by hand)."""
        now = time.monotonic()
        if self._last_prune is not None and now - self._last_prune < PRUNE_EVERY:
            return
        self._last_prune = now
        deleted = Custody(self.svc.settings, self.svc.store, self.svc.evidence).prune()
        if deleted:
            log.info("evidence past its retention deleted: %s", deleted)

    def _start_scheduled(self) -> None:
        if not self.deployments:
            return
        runs = self.client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=list(self.deployments.values())),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
                expected_start_time=FlowRunFilterExpectedStartTime(before_=utcnow()),
            ),
            limit=50,
        )
        for flow_run in runs:
            incident_id = str(flow_run.parameters.get("incident_id", ""))
            playbook = str(flow_run.parameters.get("playbook", ""))
            if not incident_id or playbook not in self.svc.specs:
                continue
            self.svc.store.ensure_playbook_run(incident_id, playbook, str(flow_run.id))
            self._claim_and_start(flow_run)

    def _recover_orphans(self, own: bool = False) -> None:
        """Runs whose runner stopped mid-step (Pending or Running with nobody behind); with
        ``own``, also those this replica held before a restart (silent for two heartbeats)."""
        now = utcnow()
        stale_before = now - self.stale_after
        own_silent_since = now - timedelta(seconds=2) if own else None
        for run_id in self.svc.store.orphaned_runs(self.owner, stale_before, own_silent_since=own_silent_since):
            with self._lock:
                if run_id in self._active:
                    continue
            flow_run = self._read(run_id)
            if flow_run is None:
                self.svc.store.finish_run(run_id)
                continue
            state = flow_run.state
            if state is None or state.is_final():
                self.svc.store.finish_run(run_id)
                continue
            if state.type not in (StateType.PENDING, StateType.RUNNING):
                continue  # scheduled: _start_scheduled takes it; suspended: waits for its answer
            if not self.svc.store.take_run(run_id, self.owner, stale_before):
                continue
            log.warning("taking over playbook run %s (%s) from a runner that stopped", run_id, state.type.value)
            incident_id = str(flow_run.parameters.get("incident_id", ""))
            if incident_id:
                self.svc.store.add_timeline(
                    incident_id,
                    "run",
                    f"run {run_id} taken over by {self.owner}: its runner stopped mid-step; it runs again from "
                    "the top, skipping the steps recorded as done",
                    data={"flow_run_id": run_id, "taken_over": True},
                )
            self._start(flow_run)

    def _wake_expired_approvals(self) -> None:
        for approval in self.svc.store.expired_approvals(utcnow()):
            run_id = self.svc.store.flow_run_of(approval.incident_id, approval.playbook)
            flow_run = self._read(run_id) if run_id else None
            if flow_run is not None and flow_run.state is not None and flow_run.state.is_paused():
                log.info("approval %s expired; waking run %s to apply the default", approval.id, run_id)
                self.client.set_flow_run_state(flow_run.id, Scheduled(), force=True)

    def wake(self, approval: ApprovalRecord) -> bool:
        """Reschedule the run of a decided approval so it carries on; True when nothing more
        is to be done now (woken, or not waiting), False when Prefect refused (tried again)."""
        run_id = self.svc.store.flow_run_of(approval.incident_id, approval.playbook) or approval.flow_run_id
        flow_run = self._read(run_id) if run_id else None
        if flow_run is None or flow_run.state is None or flow_run.state.is_final():
            self.svc.store.woken(approval.id)
            return True
        if not flow_run.state.is_paused():
            return True  # it runs, and reads the decision when it reaches the gate (or the sweep wakes it)
        result: OrchestrationResult[Any] = self.client.set_flow_run_state(
            flow_run.id, Scheduled(name="Resuming"), force=True
        )
        if result.status != SetStateStatus.ACCEPT:
            return False
        log.info("approval %s %s; woke run %s", approval.id, approval.status, run_id)
        self.svc.store.woken(approval.id)
        return True

    def _wake_decided(self) -> None:
        """Decided approvals whose runs still sleep (Prefect was busy when the answer came)."""
        for approval in self.svc.store.to_wake():
            try:
                self.wake(approval)
            except Exception as exc:
                log.warning("could not wake the run of approval %s yet: %s", approval.id, exc)

    def _read(self, run_id: str) -> FlowRun | None:
        """The flow run, or None when Prefect no longer has it (deleted): one missing run
        never stops the sweep."""
        try:
            return self.client.read_flow_run(UUID(run_id))
        except ObjectNotFound:
            log.warning("playbook run %s no longer exists in Prefect", run_id)
            return None

    def _watch_pending_approvals(self) -> None:
        """Only an answer decides: a cancel is a recorded rejection, a lost form is put back.
        One read per 200 runs that wait; a run Prefect no longer has is skipped."""
        waiting: dict[str, ApprovalRecord] = {}
        for approval in self.svc.store.pending_approvals():
            run_id = self.svc.store.flow_run_of(approval.incident_id, approval.playbook)
            if run_id:
                waiting[run_id] = approval
        if not waiting:
            return
        ids = [UUID(r) for r in waiting]
        runs: list[FlowRun] = []
        for start in range(0, len(ids), PREFECT_PAGE):  # Prefect answers at most 200 runs a read
            page = ids[start : start + PREFECT_PAGE]
            runs += self.client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=page)), limit=len(page)
            )
        for flow_run in runs:
            approval, state = waiting[str(flow_run.id)], flow_run.state
            if state is None:
                continue
            try:
                if state.type in (StateType.CANCELLED, StateType.CANCELLING):
                    self._cancelled_while_waiting(approval, flow_run)
                elif state.is_paused() and self._form_missing(flow_run):
                    log.warning("run %s waits for approval without its form; putting the form back", flow_run.id)
                    self.svc.store.add_timeline(
                        approval.incident_id,
                        "approval",
                        "the run was suspended without its approval form; the form is put back",
                        step_id=approval.step_id,
                    )
                    self.client.set_flow_run_state(flow_run.id, Scheduled(), force=True)
            except Exception:
                log.exception("could not look after the approval %s of run %s", approval.id, flow_run.id)

    def _cancelled_while_waiting(self, approval: ApprovalRecord, flow_run: FlowRun) -> None:
        who = "a Prefect UI user who cancelled the run (Prefect OSS does not record who)"
        decided = self.svc.store.decide_approval(approval.id, "rejected", who, "the run was cancelled while it waited")
        if decided.status != "rejected" or decided.decided_by != who:
            return  # answered in the meantime
        self.svc.store.add_timeline(
            approval.incident_id,
            "approval",
            f"rejected: the run was cancelled in the Prefect UI while {approval.action} waited for approval",
            step_id=approval.step_id,
        )
        ctx = runner_context(self.svc, approval.incident_id, approval.playbook, str(flow_run.id), approval.step_id)
        tell(ctx, f"Step {approval.step_id} ({approval.action}) REJECTED: the run was cancelled in the Prefect UI.")
        # Run on to the end: the remaining steps run and the run ends in a state that says
        # what was (not) achieved, instead of a grey Cancelled that says nothing.
        self.client.set_flow_run_state(flow_run.id, Scheduled(), force=True)

    def _form_missing(self, flow_run: FlowRun) -> bool:
        state = flow_run.state
        assert state is not None
        keyset = state.state_details.run_input_keyset
        if not keyset or "schema" not in keyset:
            return True
        if (str(flow_run.id), keyset["schema"]) in self._forms_seen:
            return False
        if state.timestamp is not None and (utcnow() - state.timestamp).total_seconds() < FORM_GRACE_SECONDS:
            return False  # the form is being written now
        try:
            self.client.read_flow_run_input(flow_run.id, keyset["schema"])
        except ObjectNotFound:
            return True
        except PrefectHTTPStatusError as exc:
            return exc.response.status_code == 404
        self._forms_seen.add((str(flow_run.id), keyset["schema"]))  # a form, once written, stays
        return False
