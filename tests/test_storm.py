"""A storm's alerts: stored in group commits, joined to their incident together, dispatched in
groups per fingerprint; on SQLite and on a real PostgreSQL (the multi-row inserts and the row
locks differ there)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from aisoar.config import Settings
from aisoar.evidence import EvidenceStore
from aisoar.ingress.accepting import InboxWriter
from aisoar.ingress.dispatch import Dispatcher
from aisoar.ingress.workers import DispatchPool, preserve_joined
from aisoar.models import Alert, IncidentStatus, Severity, utcnow
from aisoar.specs import load_specs
from aisoar.store import Store, new_id
from aisoar.store.schema import inbox, timeline
from aisoar.taxonomy import IncidentType
from tasks import catalog
from tests.hostile import Recorder

WINDOW = timedelta(hours=1)


def _alert(fingerprint: str, n: int, severity: Severity = Severity.high) -> Alert:
    raw = {"n": n, "fingerprint": fingerprint}
    return Alert(
        id=new_id("ALR"),
        source="generic",
        source_id=f"{fingerprint}-{n}",
        received_at=utcnow(),
        title=f"leaked key {fingerprint}",
        severity=severity,
        raw=raw,
        raw_sha256=hashlib.sha256(repr(raw).encode()).hexdigest(),
        fingerprint=fingerprint,
        notes=[f"note {n}"],
    )


def test_deliveries_are_stored_together_and_a_repeated_one_is_not_stored_twice(store: Store) -> None:
    before = store.accept_alerts([(_alert("fp", 0), "d-0")])
    assert before[0][1] is True
    first, again, twin, known = _alert("fp", 1), _alert("fp", 2), _alert("fp", 3), _alert("fp", 4)
    results = store.accept_alerts([(first, "d-1"), (again, "d-1"), (twin, "d-2"), (known, "d-0")])
    assert results == [(first.id, True), (first.id, False), (twin.id, True), (before[0][0], False)]
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(inbox.c.id, inbox.c.status, inbox.c.preserved)).all()
    assert {row.id for row in rows} == {before[0][0], first.id, twin.id}
    assert {(row.status, row.preserved) for row in rows} == {("pending", False)}  # the columns' defaults
    assert store.get_alert(twin.id) == twin  # the whole alert, read back as written


def test_the_inbox_writer_answers_each_delivery_with_its_own_alerts(store: Store) -> None:
    writer = InboxWriter(store)
    try:
        deliveries = [[(_alert("storm", i), f"d-{i}")] for i in range(300)]
        deliveries.append([(_alert("storm", 1000), "d-7")])  # d-7 again: not stored twice
        deliveries.append([(_alert("two", 0), "two-0"), (_alert("two", 1), "two-1")])
        with ThreadPoolExecutor(16) as senders:
            answers = list(senders.map(lambda items: writer.accept(items).result(timeout=30), deliveries))
    finally:
        writer.stop()
    for items, answer in zip(deliveries[:300], answers[:300], strict=True):
        assert answer == [(items[0][0].id, True)]
    assert answers[300] == [(deliveries[7][0][0].id, False)]
    assert [created for _, created in answers[301]] == [True, True]
    assert store.pending_count() == 302


def test_deliveries_awaited_on_an_event_loop_get_their_own_answers(store: Store) -> None:
    """The webhook's way: hundreds of deliveries awaited at once on one loop, answered per
    transaction; a refused one fails alone; a sender gone meanwhile leaves the rest answered."""
    writer = InboxWriter(store)
    bad = _alert("bad", 0).model_copy(update={"source": "x" * 100})  # longer than the column (64)

    async def storm() -> tuple[list[Any], list[tuple[str, bool]]]:
        deliveries = [[(_alert("loop", i), f"l-{i}")] for i in range(200)]
        gone = asyncio.ensure_future(writer.accept_async([(_alert("gone", 0), "gone-0")]))
        gone.cancel()  # its sender went away: its alerts may still be stored; nobody is answered
        answers = await asyncio.gather(
            *(writer.accept_async(items) for items in deliveries),
            writer.accept_async([(bad, "b-0")]),
            return_exceptions=True,
        )
        for items, answer in zip(deliveries, answers[:200], strict=True):
            assert answer == [(items[0][0].id, True)]
        again = await writer.accept_async(deliveries[5])
        return answers, again

    try:
        answers, again = asyncio.run(storm())
    finally:
        writer.stop()
    assert again == [(answers[5][0][0], False)]
    if store.shared:  # PostgreSQL checks the length; SQLite does not
        assert isinstance(answers[200], sa.exc.DataError)
    with pytest.raises(RuntimeError, match="stopping"):
        asyncio.run(writer.accept_async([(_alert("late", 0), "late-0")]))


def test_the_inbox_writer_fails_only_the_delivery_the_store_refused(store: Store) -> None:
    writer = InboxWriter(store)
    good = _alert("ok", 0)
    bad = _alert("bad", 0).model_copy(update={"source": "x" * 100})  # longer than the column (64)
    try:
        failing = writer.accept([(bad, "b-0")])
        fine = writer.accept([(good, "g-0")])
        assert fine.result(timeout=30) == [(good.id, True)]
        if store.shared:  # PostgreSQL checks the length; SQLite does not
            with pytest.raises(sa.exc.DataError):
                failing.result(timeout=30)
        else:
            failing.result(timeout=30)
    finally:
        writer.stop()
    stopped = writer.accept([(_alert("late", 0), "late-0")])
    with pytest.raises(RuntimeError, match="stopping"):
        stopped.result(timeout=5)


def test_alerts_join_their_incident_together_once(store: Store) -> None:
    first = _alert("storm", 0, Severity.medium)
    store.accept_alert(first, "d-0")
    incident_id, created = store.correlate(first, None, Severity.medium, WINDOW, [("alert", "first", None)])
    assert created
    rest = [_alert("storm", n) for n in range(1, 40)]
    for n, alert in enumerate(rest, start=1):
        store.accept_alert(alert, f"d-{n}")
    held = rest[0]
    assert store.claim_alert(held.id, "another-dispatcher", utcnow() - timedelta(seconds=8))
    notes = [(a.id, [("alert", f"alert {a.id}", {"alert_id": a.id}), ("alert", "a note", None)]) for a in rest]
    joined = store.join_incident(
        incident_id, "storm", notes, Severity.critical, WINDOW, utcnow() - timedelta(seconds=8)
    )
    assert joined == [a.id for a in rest[1:]]  # in order, without the one another dispatcher holds
    again = store.join_incident(incident_id, "storm", notes, Severity.high, WINDOW, utcnow() - timedelta(seconds=8))
    assert again == []  # joined already: nothing twice
    incident = store.get_incident(incident_id)
    assert set(incident.alert_ids) == {first.id, *joined}
    assert incident.severity is Severity.critical  # raised as correlate raises it
    entries = [e for e in incident.timeline if e.data.get("alert_id")]
    assert [e.data["alert_id"] for e in entries] == joined  # the first alert's entry has no data here
    assert store.alert_status(held.id) == ("pending", None, None)
    assert {store.alert_status(a)[0] for a in joined} == {"dispatched"}  # type: ignore[index]
    assert store.get_incident(incident_id, kinds=("incident",)).timeline == []  # only the kinds asked for

    store.set_incident_status(incident_id, IncidentStatus.closed)
    late = _alert("storm", 99)
    store.accept_alert(late, "d-99")
    assert store.join_incident(incident_id, "storm", [(late.id, [])], Severity.low, WINDOW, utcnow()) == []
    assert store.alert_status(late.id) == ("pending", None, None)


def _dispatcher(store: Store, settings: Settings) -> tuple[Dispatcher, CountingRecorder]:
    specs = [item.spec for item in load_specs(settings.specs_dir, catalog())]
    recorder = CountingRecorder(store)
    return Dispatcher(store, specs, recorder, WINDOW), recorder


class CountingRecorder(Recorder):
    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.redriven = 0

    def redrive(self, incident_id: str, playbook: str) -> bool:
        with self.lock:
            self.redriven += 1
        return False


def test_a_storm_taken_together_starts_one_run_and_checks_it_once(store: Store, settings: Settings) -> None:
    dispatcher, recorder = _dispatcher(store, settings)
    storm = [_alert("storm", n) for n in range(60)]
    other = _alert("other", 0)
    for n, alert in enumerate([*storm, other]):
        store.accept_alert(alert, f"d-{n}")
    done = dispatcher.dispatch_together([*storm[:30], other, *storm[30:]])
    assert {a.id for a in done} == {a.id for a in [*storm, other]}
    incidents = {store.alert_status(a.id)[1] for a in storm}  # type: ignore[index]
    assert len(incidents) == 1 and None not in incidents
    assert store.alert_status(other.id)[1] not in incidents  # type: ignore[index]
    assert len(recorder.launched) == 2  # one run for each incident
    more = [_alert("storm", n) for n in range(60, 90)]
    for n, alert in enumerate(more):
        store.accept_alert(alert, f"m-{n}")
    assert len(dispatcher.dispatch_together(more)) == 30
    assert recorder.redriven == 1  # the run looked at once for the thirty, not thirty times
    assert len(recorder.launched) == 2
    incident_id = incidents.pop()
    assert incident_id is not None
    assert len(store.get_incident(incident_id).alert_ids) == 90


def test_the_pool_dispatches_every_alert_once_in_groups(store: Store, settings: Settings) -> None:
    dispatcher, recorder = _dispatcher(store, settings)
    calls: list[int] = []
    guard = threading.Lock()
    together = dispatcher.dispatch_together

    def counted(alerts: list[Alert]) -> list[Alert]:
        with guard:
            calls.append(len(alerts))
        return together(alerts)

    dispatcher.dispatch_together = counted  # type: ignore[method-assign]
    pool = DispatchPool(dispatcher, workers=4, capacity=1000)
    alerts = [_alert("storm", n) for n in range(400)] + [_alert(f"fp-{n}", 0) for n in range(5)]
    for n, alert in enumerate(alerts):
        store.accept_alert(alert, f"d-{n}")
        assert pool.offer(alert)
    assert not pool.offer(alerts[0])  # queued already
    assert pool.depth == len(alerts)
    pool.start()
    try:
        deadline = utcnow() + timedelta(seconds=60)
        while store.pending_count() and utcnow() < deadline:
            threading.Event().wait(0.05)
    finally:
        pool.stop()
    assert store.pending_count() == 0
    assert sum(calls) == len(alerts)  # each alert handed to a worker once
    assert len(calls) < 60  # in groups, not one by one
    assert len(recorder.launched) == 6  # a run per fingerprint


def test_a_playbook_is_claimed_for_an_incident_once(store: Store) -> None:
    """On PostgreSQL too: its driver reports no row count for an insert that skips a conflict."""
    assert store.claim_playbook_run("INC-1", "triage", note="playbook triage selected")
    assert not store.claim_playbook_run("INC-1", "triage", note="playbook triage selected")
    assert store.claim_playbook_run("INC-1", "other")
    with store.engine.connect() as conn:
        notes = conn.execute(sa.select(timeline.c.message).where(timeline.c.incident_id == "INC-1")).scalars().all()
    assert notes == ["playbook triage selected"]  # written with the one claim that took


def test_a_run_claimed_for_its_runner_is_held_by_it_as_if_taken(store: Store) -> None:
    """The dispatcher claims a new run already held by the runtime that leads it (one
    transaction less before the block): another runner cannot take it while it is fresh, its
    holder's heartbeat keeps it, and it is free once stale."""
    assert store.claim_playbook_run("INC-1", "leaked-key", owner="replica-a")
    fresh = utcnow() - timedelta(seconds=8)
    assert not store.take_playbook_run("INC-1", "leaked-key", "replica-b", fresh)
    assert store.take_playbook_run("INC-1", "leaked-key", "replica-a", fresh)  # its own: taken again
    assert not store.claim_playbook_run("INC-1", "leaked-key", owner="replica-b")  # claimed once
    later = utcnow() + timedelta(seconds=1)  # its heartbeat older than this: stale
    assert store.take_playbook_run("INC-1", "leaked-key", "replica-b", later)


def test_a_storms_alerts_are_kept_as_evidence_each_payload_once(store: Store, tmp_path: Path) -> None:
    """The upkeep keeps joined alerts as evidence in batches: one file per incident and batch,
    each payload once with every alert that carried it, each alert marked and kept once."""
    first = _alert("storm", 0)
    store.accept_alert(first, "d-0")
    incident_id, _ = store.correlate(first, None, Severity.high, WINDOW, [("alert", "first", None)])
    twins = [_alert("storm", 1) for _ in range(30)]  # one payload, thirty deliveries
    other = _alert("storm", 2)
    for n, alert in enumerate([*twins, other], start=1):
        store.accept_alert(alert, f"d-{n}")
    notes = [(a.id, [("alert", f"alert {a.id}", None)]) for a in [*twins, other]]
    store.join_incident(incident_id, "storm", notes, Severity.high, WINDOW, utcnow())
    evidence = EvidenceStore(tmp_path / "evidence", store)

    assert preserve_joined(evidence, utcnow() + timedelta(seconds=1)) == 32
    assert preserve_joined(evidence, utcnow() + timedelta(seconds=1)) == 0  # kept once
    (record,) = store.evidence_for(incident_id)
    evidence.verify_file(record.sha256)
    kept = json.loads(evidence.path_for(record.sha256).read_bytes())
    assert kept["incident_id"] == incident_id and kept["alerts"] == 32
    by_hash = {payload["raw_sha256"]: payload for payload in kept["payloads"]}
    assert set(by_hash) == {first.raw_sha256, twins[0].raw_sha256, other.raw_sha256}
    copies = by_hash[twins[0].raw_sha256]["copies"]
    assert [c["alert_id"] for c in copies] == [a.id for a in sorted(twins, key=lambda a: (a.received_at, a.id))]
    assert Alert.model_validate(by_hash[other.raw_sha256]["alert"]) == other  # the alert as stored
    assert "32 alert(s) from generic (3 distinct payload(s))" in record.description
    assert store.unpreserved_alerts(utcnow() + timedelta(seconds=1)) == {}


class GatedLauncher(Recorder):
    """A launcher in two halves whose second half waits for the test (Prefect busy with a burst)."""

    def __init__(self, store: Store, fail: bool = False) -> None:
        super().__init__(store)
        self.gate = threading.Event()
        self.fail = fail
        self.led: list[tuple[str, str]] = []
        self.created: list[tuple[str, str, bool, bool]] = []

    owner = "gated-launcher"

    def lead(self, incident_id: str, playbook: str, taken: bool = False) -> bool:
        with self.lock:
            self.led.append((incident_id, playbook))
        return True

    def create(self, incident_id: str, playbook: str, held: bool, yielding: bool = False) -> str:
        assert self.gate.wait(30)
        if self.fail:
            raise RuntimeError("Prefect answered 503")
        with self.lock:
            self.created.append((incident_id, playbook, held, yielding))
        self.store.set_flow_run(incident_id, playbook, f"run-{playbook}")
        return f"run-{playbook}"


@pytest.mark.parametrize("fail", [False, True])
def test_the_run_is_created_after_dispatch_moves_on_and_the_alert_waits_for_it(
    store: Store, settings: Settings, fail: bool
) -> None:
    """Contained first (the head start), the next alert taken at once; the alert stays pending
    and held until its run exists, then dispatched, or pending with the reason when Prefect
    refused (and let go, for the next try)."""
    specs = [item.spec for item in load_specs(settings.specs_dir, catalog())]
    launcher = GatedLauncher(store, fail)
    dispatcher = Dispatcher(store, specs, launcher, WINDOW)
    creators = ThreadPoolExecutor(2)
    dispatcher.defer = creators.submit
    alert = _alert("led", 0).model_copy(update={"incident_type": IncidentType.api_abuse})
    store.accept_alert(alert, "led-0")
    try:
        result = dispatcher.dispatch(alert)
        assert result is not None and launcher.led and not launcher.created
        assert store.alert_status(alert.id) == ("pending", result.incident_id, None)
        assert not store.claim_alert(alert.id, "another-dispatcher", utcnow() - timedelta(seconds=8))  # held
        launcher.gate.set()
    finally:
        creators.shutdown(wait=True)
    found = store.alert_status(alert.id)
    assert found is not None
    status, _, error = found
    if fail:
        assert status == "pending" and "Prefect answered 503" in (error or "")
        assert store.claim_alert(alert.id, "another-dispatcher", utcnow() - timedelta(seconds=8))  # let go
    else:
        assert status == "dispatched"
        assert launcher.created == [(result.incident_id, p, True, True) for _, p in launcher.led]
        assert set(store.get_incident(result.incident_id).flow_run_ids) == {p for _, p in launcher.led}
