"""The approval record's rules, on a real store: only verified, allowed people count; quorum is
distinct people; a verified rejection rejects; codes work once, for their request and exact
action, until it expires; the directory refuses what nobody could answer."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest

from aisoar import approval_codes
from aisoar.approvers import ApproverDirectory, DirectoryError, gate_problems, load_directory
from aisoar.specs import parse_spec
from aisoar.store import ApprovalRecord, Store
from tests.conftest import SANDBOX_APPROVERS

ARGS = "a" * 64


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'aisoar.db'}")


def _open(
    store: Store, quorum: int = 1, allowed: tuple[str, ...] = ("alice", "bob"), **extra: object
) -> ApprovalRecord:
    record, created = store.open_approval(
        "INC-1",
        "pb",
        "delete",
        "openai.delete_project_key",
        ARGS,
        ["incident-commander"],
        list(allowed),
        quorum,
        timedelta(hours=1),
        "reject",
        **extra,  # type: ignore[arg-type]
    )
    assert created
    return record


def _answer(
    store: Store, record: ApprovalRecord, person: str | None, decision: str = "approve", key: str = ""
) -> object:
    return store.record_answer(
        record.id,
        channel="slack",
        claimed=person or "U0MALLORY",
        person=person,
        decision=decision,  # type: ignore[arg-type]
        reason="r",
        dedup_key=key or f"k-{person}-{decision}",
    )


def test_one_person_cannot_meet_a_quorum_of_two(store: Store) -> None:
    record = _open(store, quorum=2)
    first = store.record_answer(
        record.id, channel="slack", claimed="U0ALICE", person="alice", decision="approve", reason="ok", dedup_key="1"
    )
    again = store.record_answer(
        record.id, channel="cli", claimed="alice", person="alice", decision="approve", reason="ok", dedup_key="2"
    )
    assert first.counted and first.record.status == "pending"
    assert not again.counted and "already answered" in (again.refusal or "")
    second = store.record_answer(
        record.id, channel="slack", claimed="U0BOB", person="bob", decision="approve", reason="ok", dedup_key="3"
    )
    assert second.counted and second.decided_now
    assert (second.record.status, second.record.decided_by, second.record.wake_pending) == (
        "approved",
        "alice, bob",
        True,
    )


def test_unverified_and_outsiders_are_recorded_not_counted(store: Store) -> None:
    record = _open(store)
    nobody = store.record_answer(
        record.id,
        channel="slack",
        claimed="Slack user U0MALLORY",
        person=None,
        decision="approve",
        reason="",
        dedup_key="m",
    )
    outsider = store.record_answer(
        record.id, channel="slack", claimed="U0CAROL", person="carol", decision="approve", reason="", dedup_key="c"
    )
    assert not nobody.counted and nobody.refusal == "not a verified approver identity"
    assert not outsider.counted and "carol is not among the approvers" in (outsider.refusal or "")
    now = store.get_approval(record.id)
    assert now is not None and now.status == "pending"
    assert [(a.claimed, a.counted) for a in now.answers] == [("Slack user U0MALLORY", False), ("U0CAROL", False)]


def test_a_replay_is_recorded_once(store: Store) -> None:
    record = _open(store, quorum=2)
    store.record_answer(
        record.id,
        channel="slack",
        claimed="U0ALICE",
        person="alice",
        decision="approve",
        reason="",
        dedup_key="slack:U0ALICE:1.1",
    )
    replay = store.record_answer(
        record.id,
        channel="slack",
        claimed="U0ALICE",
        person="alice",
        decision="approve",
        reason="",
        dedup_key="slack:U0ALICE:1.1",
    )
    assert replay.duplicate and not replay.counted
    now = store.get_approval(record.id)
    assert now is not None and len(now.answers) == 1


def test_a_verified_rejection_rejects_and_a_decision_stands(store: Store) -> None:
    record = _open(store, quorum=2)
    rejected = store.record_answer(
        record.id, channel="cli", claimed="bob", person="bob", decision="reject", reason="our CI key", dedup_key="1"
    )
    assert rejected.decided_now and rejected.record.status == "rejected" and rejected.record.decided_by == "bob"
    late = store.record_answer(
        record.id, channel="slack", claimed="U0ALICE", person="alice", decision="approve", reason="", dedup_key="2"
    )
    assert not late.counted and "already rejected" in (late.refusal or "")
    assert store.decide_approval(record.id, "approved", "timeout", "x").status == "rejected"


def test_self_approval_is_refused_unless_the_gate_allows_it(store: Store) -> None:
    record = _open(store, requested_by="alice")
    refused = store.record_answer(
        record.id, channel="slack", claimed="U0ALICE", person="alice", decision="approve", reason="", dedup_key="1"
    )
    assert not refused.counted and "self-approval is forbidden" in (refused.refusal or "")
    allowed, _ = store.open_approval(
        "INC-2",
        "pb",
        "delete",
        "a",
        ARGS,
        ["x"],
        ["alice"],
        1,
        timedelta(hours=1),
        "reject",
        requested_by="alice",
        allow_self=True,
    )
    assert store.record_answer(
        allowed.id, channel="slack", claimed="U0ALICE", person="alice", decision="approve", reason="", dedup_key="1"
    ).counted


def test_codes_work_once_for_their_request_and_exact_arguments(store: Store) -> None:
    record = _open(store)
    codes = store.issue_codes(record, ["alice", "bob"])
    assert set(codes) == {"alice", "bob"} and codes["alice"] != codes["bob"]
    assert store.issue_codes(record, ["alice"]) == {}  # one code per person and request
    assert store.use_code(record.id, "b" * 64, codes["alice"])[0] is None  # the arguments changed
    assert store.use_code(record.id, ARGS, codes["alice"].lower().replace("-", " ")) == ("alice", None)
    person, problem = store.use_code(record.id, ARGS, codes["alice"])
    assert person is None and problem == "the code of alice was already used"
    other = _open_other(store)
    assert store.use_code(other.id, ARGS, codes["bob"])[0] is None  # another request's code
    assert "wrong code" in (store.use_code(record.id, ARGS, "AAAA-BBBB-CCCC")[1] or "")


def _open_other(store: Store) -> ApprovalRecord:
    record, _ = store.open_approval("INC-9", "pb", "delete", "a", ARGS, ["x"], ["bob"], 1, timedelta(hours=1), "reject")
    return record


def test_an_expired_code_is_refused(store: Store) -> None:
    record, _ = store.open_approval(
        "INC-3", "pb", "delete", "a", ARGS, ["x"], ["alice"], 1, timedelta(seconds=-1), "reject"
    )
    code = store.issue_codes(record, ["alice"])["alice"]
    assert store.use_code(record.id, ARGS, code) == (None, "the code of alice expired with the request")
    late = store.record_answer(
        record.id, channel="cli", claimed="alice", person="alice", decision="approve", reason="", dedup_key="1"
    )
    assert not late.counted and "expired" in (late.refusal or "")


def test_the_store_keeps_only_digests_of_codes(store: Store, tmp_path: Path) -> None:
    record = _open(store)
    code = store.issue_codes(record, ["alice"])["alice"]
    raw = (tmp_path / "aisoar.db").read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("aisoar.db-*"))
    assert approval_codes.normalize(code).encode() not in raw and code.encode() not in raw
    assert approval_codes.digest(record.id, ARGS, "alice", code).encode() in raw


def test_concurrent_answers_decide_once(store: Store) -> None:
    """Twenty allowed people answering at the same instant: one decision, every answer kept."""
    people = [f"p{i}" for i in range(20)]
    record = _open(store, quorum=3, allowed=tuple(people))
    outcomes = []

    def answer(person: str) -> None:
        outcomes.append(
            store.record_answer(
                record.id,
                channel="slack",
                claimed=person,
                person=person,
                decision="approve",
                reason="",
                dedup_key=person,
            )
        )

    threads = [threading.Thread(target=answer, args=(p,)) for p in people]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(o.decided_now for o in outcomes) == 1
    now = store.get_approval(record.id)
    assert now is not None and now.status == "approved" and len(now.answers) == 20
    assert len(now.decided_by.split(", ")) == 3 if now.decided_by else False
    assert sum(a.counted for a in now.answers) == 3


def test_escalation_advances_once_and_adds_the_paged_people(store: Store) -> None:
    record = _open(store, allowed=("alice",))
    first = store.advance_escalation(record.id, 1, ["dave"])
    assert first is not None and first.escalation_level == 1 and first.allowed == ["alice", "dave"]
    assert store.advance_escalation(record.id, 1, ["dave"]) is None  # a second runtime loses
    assert store.record_answer(
        record.id, channel="slack", claimed="U0DAVE", person="dave", decision="approve", reason="", dedup_key="d"
    ).counted


def test_the_sandbox_directory_covers_every_shipped_gate() -> None:
    from aisoar.config import PROJECT_ROOT
    from aisoar.specs import load_specs
    from tasks import catalog

    specs = [loaded.spec for loaded in load_specs(PROJECT_ROOT / "playbook_specs", catalog())]
    assert gate_problems(specs, load_directory(SANDBOX_APPROVERS)) == []
    example = load_directory(PROJECT_ROOT / "approvers.example.yaml")
    assert gate_problems(specs, example) == []
    problems = gate_problems(specs, ApproverDirectory())
    assert any("incident-commander" in p and "not in" in p for p in problems)


HEAD = (
    "name: tst-playbook\ntitle: T\nincident_type: api_abuse\ntriggers: [{incident_types: [api_abuse]}]\n"
    "steps:\n  - id: keep\n    action: evidence.capture_alerts\n"
)


def test_a_quorum_larger_than_the_people_is_refused() -> None:
    spec = parse_spec(HEAD + "    gate: {approval: {approvers: [incident-commander], quorum: 2}}\n", "q.yaml")
    problems = gate_problems([spec], load_directory(SANDBOX_APPROVERS))
    assert problems == [
        "playbook tst-playbook, step keep: quorum 2 needs 2 people, but incident-commander resolve to 1 in "
        f"{SANDBOX_APPROVERS}"
    ]


def test_escalation_must_be_ordered_and_before_the_timeout() -> None:
    from aisoar.specs import SpecError

    with pytest.raises(SpecError, match="in order of `after`"):
        parse_spec(
            HEAD + "    gate: {approval: {approvers: [a], escalation: [{after: 2m, remind: true}, "
            "{after: 1m, page: b}]}}\n",
            "e.yaml",
        )
    with pytest.raises(SpecError, match="at or after the timeout"):
        parse_spec(
            HEAD + "    gate: {approval: {approvers: [a], timeout: 1h, escalation: [{after: 1h, page: b}]}}\n", "e.yaml"
        )
    with pytest.raises(SpecError, match="either reminds"):
        parse_spec(HEAD + "    gate: {approval: {approvers: [a], escalation: [{after: 1m}]}}\n", "e.yaml")


def test_a_wrong_directory_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "approvers.yaml"
    bad.write_text("people:\n  alice: {name: A, slack: alice}\nroles: {}\n")
    with pytest.raises(DirectoryError, match=r"people.alice: Value error, slack: 'alice' is not a Slack user id"):
        load_directory(bad)
    bad.write_text("people:\n  alice: {name: A, slack: U0ALICE}\nroles:\n  ic: {people: [bob]}\n")
    with pytest.raises(DirectoryError, match=r"roles\.ic: 'bob' is not under people"):
        load_directory(bad)
    bad.write_text("people:\n  alice: {name: A}\n")
    with pytest.raises(DirectoryError, match="cannot be verified"):
        load_directory(bad)
