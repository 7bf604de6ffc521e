"""``aisoar verify`` and ``aisoar export``: an incident's evidence, signed and checkable anywhere
(aisoar/manifest.py, aisoar/bundles.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.terminal import Failure, say

if TYPE_CHECKING:
    from aisoar.bundles import Custody
    from aisoar.exports import IncidentRecord
    from aisoar.manifest import Verification
    from aisoar.models import Incident
    from aisoar.store import Store


def custody(store: Store) -> Custody:
    from aisoar.bundles import Custody
    from aisoar.config import get_settings
    from aisoar.evidence import EvidenceStore

    settings = get_settings()
    return Custody(settings, store, EvidenceStore(settings.evidence_dir, store))


def incident_of(store: Store, incident_id: str) -> Incident:
    try:
        return store.get_incident(incident_id)
    except KeyError:
        raise Failure(f"no incident {incident_id}; `aisoar incidents` lists them", code=2) from None


def record_of(store: Store, incident: Incident) -> IncidentRecord:
    """The incident as every report format needs it (outcomes judged from the store)."""
    from aisoar.config import get_settings
    from aisoar.exports import IncidentRecord
    from aisoar.metrics import milestones
    from aisoar.outcomes import judge
    from aisoar.specs import SpecError, load_specs
    from tasks import catalog

    try:
        specs = {item.spec.name: item.spec for item in load_specs(get_settings().specs_dir, catalog())}
    except SpecError as exc:
        raise Failure(f"the playbook specs have {len(exc.problems)} problem(s); `aisoar validate` lists them") from exc
    verdicts = [judge(store, specs[name], incident.id) for name in sorted(incident.flow_run_ids) if name in specs]
    return IncidentRecord(
        incident=incident,
        alerts=store.get_alerts(incident.alert_ids),
        evidence=store.evidence_for(incident.id),
        approvals=store.approvals_for(incident.id),
        verdicts=[v for v in verdicts if v.outcomes],
        clocks=store.clocks_for(incident.id),
        milestones=milestones(store, incident),
        signing=custody(store).signing(),
    )


def report_markdown(record: IncidentRecord) -> str:
    from aisoar.report import incident_report

    return incident_report(
        record.incident,
        record.evidence,
        record.approvals,
        None,
        record.verdicts,
        signing=record.signing,
        clocks=record.clocks,
    )


def report(
    incident: Annotated[str, typer.Argument(help="the incident's id (`aisoar incidents` lists them)")],
    pdf: Annotated[Path | None, typer.Option(help="write it as a PDF here (for a manager or a regulator)")] = None,
    stix: Annotated[Path | None, typer.Option(help="write the incident as a STIX 2.1 bundle here")] = None,
    avid: Annotated[Path | None, typer.Option(help="write the incident as an AVID report (JSON) here")] = None,
) -> int:
    """Print an incident's report, or write it as a PDF, a STIX 2.1 bundle or an AVID report."""
    import json

    from aisoar.exports import avid_report, pdf_report, stix_bundle
    from cli.main import _store
    from cli.terminal import markdown

    store = _store()
    record = record_of(store, incident_of(store, incident))
    makers: list[tuple[Path | None, Callable[[], bytes]]] = [
        (pdf, lambda: pdf_report(record)),
        (stix, lambda: stix_bundle(record).encode()),
        (avid, lambda: json.dumps(avid_report(record), indent=2, ensure_ascii=False).encode()),
    ]
    written = {path: make for path, make in makers if path is not None}
    if not written:
        markdown(report_markdown(record))
        return 0
    for path, make in written.items():
        path.write_bytes(make())
        say(f"{path}: written")
    return 0


def verify(
    incident: Annotated[str | None, typer.Argument(help="the incident's id (checks this machine's store)")] = None,
    bundle: Annotated[Path | None, typer.Option(help="a bundle `aisoar export` wrote, checked on its own")] = None,
    public_key: Annotated[
        Path | None,
        typer.Option("--public-key", help="the signer's public key (PEM) to check the signature with"),
    ] = None,
) -> int:
    """Check an incident's evidence: every file re-hashed, the custody chain recomputed, the
    manifest's signature checked. Says exactly which item fails; exit status 1 when one does."""
    from aisoar.manifest import ManifestError, key_id, load_public_key, verify_bundle

    if (incident is None) == (bundle is None):
        raise Failure("give an incident id, or --bundle FILE", code=2)
    pinned = None
    if public_key is not None:
        try:
            pinned = load_public_key(public_key.read_text())
        except (OSError, ManifestError) as exc:
            raise Failure(f"{public_key}: {exc}", code=2) from None
    if bundle is not None:
        try:
            result = verify_bundle(bundle, pinned)
        except (OSError, ManifestError) as exc:
            raise Failure(f"{bundle}: {exc}", code=2) from None
        return _said(result, str(bundle))
    assert incident is not None
    from cli.main import _store

    store = _store()
    incident_of(store, incident)
    signer = custody(store)
    if pinned is not None and signer.key_id != key_id(pinned):
        raise Failure(f"this machine signs with key {signer.key_id}, not {key_id(pinned)}", code=1)
    return _said(signer.verify(incident), incident)


def _said(result: Verification, what: str) -> int:
    for note in result.notes:
        say(note, style="dim")
    if result.ok:
        say(
            f"{what}: intact: {result.items} evidence item(s) re-hashed, the custody chain and the signature "
            f"(key {result.key_id}) check",
            style="green",
        )
        return 0
    say(f"{what}: {len(result.problems)} problem(s):", style="red")
    for problem in result.problems:
        say(f"  - {problem}", style="red")
    return 1


def export(
    incident: Annotated[str, typer.Argument(help="the incident's id")],
    out: Annotated[Path | None, typer.Option(help="the bundle to write (default: <incident>.tar.gz here)")] = None,
) -> int:
    """Write a portable bundle of the incident: its signed evidence manifest, the evidence files,
    the report and the public key. `aisoar verify --bundle FILE` checks it on any machine."""
    import json

    from aisoar.exports import avid_report, pdf_report, stix_bundle
    from aisoar.manifest import ManifestError
    from cli.main import _store

    store = _store()
    found = incident_of(store, incident)
    target = out or Path(f"{found.id}.tar.gz")
    signer = custody(store)
    record = record_of(store, found)
    formats = {
        "report.pdf": pdf_report(record),
        "incident.stix.json": stix_bundle(record).encode(),
        "incident.avid.json": json.dumps(avid_report(record), indent=2, ensure_ascii=False).encode(),
    }
    try:
        manifest = signer.export(found.id, target, report_markdown(record), formats)
    except ManifestError as exc:
        raise Failure(f"{found.id}: {exc}", code=1) from None
    say(f"{target}: {len(manifest['items'])} evidence item(s), signed with {signer.key_line()}")
    return 0


def hold(
    incident: Annotated[str, typer.Argument(help="the incident's id")],
    reason: Annotated[str, typer.Option(help="why (a case number, counsel's instruction)")],
    by: Annotated[str, typer.Option(help="who puts it on hold (or releases it)")] = "",
    release: Annotated[bool, typer.Option("--release", help="release the hold")] = False,
) -> int:
    """Put an incident on legal hold (its evidence is never deleted by the retention), or release it."""
    import getpass

    from cli.main import _store

    store = _store()
    found = incident_of(store, incident)
    who = by or getpass.getuser()
    if release:
        store.release_legal_hold(found.id, who, reason)
        say(f"{found.id}: legal hold released by {who}; its evidence follows the retention again")
    else:
        store.set_legal_hold(found.id, who, reason)
        say(f"{found.id}: on legal hold by {who}: its evidence is kept until the hold is released")
    return 0


def prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would be deleted; delete nothing")] = False,
) -> int:
    """Delete the evidence files of incidents closed longer ago than AISOAR_EVIDENCE_RETENTION_DAYS
    that are not on legal hold (the runtime does it every six hours)."""
    from cli.main import _store

    signer = custody(_store())
    deleted = signer.prune(dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    for incident_id, count in deleted.items():
        say(f"{incident_id}: {verb} {count} evidence file(s)")
    if not deleted:
        say(f"nothing is past the retention ({signer.settings.evidence_retention_days} days after the close)")
    return 0


def clock(
    incident: Annotated[str, typer.Argument(help="the incident's id")],
    key: Annotated[
        str | None, typer.Argument(help="the clock (gdpr-art33, nis2-early-warning ...); none: list them")
    ] = None,
    notified: Annotated[
        str | None, typer.Option(help="the authority was notified: the reference (case number, mail)")
    ] = None,
    not_applicable: Annotated[
        str | None, typer.Option("--not-applicable", help="the clock does not apply: why (e.g. no personal data left)")
    ] = None,
    by: Annotated[str, typer.Option(help="who records it")] = "",
) -> int:
    """List an incident's regulatory deadlines, or record one as notified or not applicable."""
    import getpass

    from aisoar.models import utcnow
    from aisoar.store.clocks import NOT_APPLICABLE, NOTIFIED
    from cli.main import _store

    store = _store()
    found = incident_of(store, incident)
    clocks = store.clocks_for(found.id)
    if key is None:
        if notified or not_applicable:
            raise Failure("name the clock to record (`aisoar clock INCIDENT` lists them)", code=2)
        now = utcnow()
        for item in clocks:
            say(f"{item.key:20} {item.line(now)}")
        if not clocks:
            say(f"{found.id} started no regulatory clock", style="dim")
        return 0
    if (notified is None) == (not_applicable is None):
        raise Failure("give --notified REFERENCE or --not-applicable REASON", code=2)
    if key not in {item.key for item in clocks}:
        known = ", ".join(item.key for item in clocks) or "none"
        raise Failure(f"{found.id} has no clock {key}; its clocks: {known}", code=2)
    status, reason = (NOTIFIED, notified) if notified is not None else (NOT_APPLICABLE, not_applicable)
    assert reason is not None
    recorded = store.record_clock(found.id, key, status, by or getpass.getuser(), reason)
    say(f"{found.id}: {recorded.line(utcnow())}")
    return 0


def metrics(
    by: Annotated[str, typer.Option(help="aggregate by: type, severity or playbook")] = "type",
    limit: Annotated[int, typer.Option(min=1, help="the newest incidents to count")] = 500,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per incident, in seconds")] = False,
) -> int:
    """Incident metrics: time to detect, acknowledge, contain (verified) and recover, per incident
    and averaged by type, severity or playbook; and what leaked keys burned before their block."""
    from aisoar.metrics import MEASURES, NAMES, aggregate, all_milestones, human, table_rows
    from aisoar.metrics import as_json as dump
    from cli.main import _store
    from cli.terminal import is_terminal, table

    if by not in ("type", "severity", "playbook"):
        raise Failure("--by is type, severity or playbook", code=2)
    found = all_milestones(_store(), limit)
    if as_json:
        say(dump(found))
        return 0
    if not found:
        say("no incidents yet", style="dim")
        return 0
    rows = table_rows(found)
    averaged = aggregate(found, by)
    if not is_terminal():  # piped: one line each, every value whole
        for row in rows:
            say("  ".join(f"{key}={value}" for key, value in row.items()))
        for r in averaged:
            means = "  ".join(f"mean {NAMES[m]}={human(r.means[m])} (n={r.counts[m]})" for m in MEASURES)
            say(f"{by}={r.group}  incidents={r.incidents}  {means}")
        return 0
    table(list(rows[0]), [list(map(str, row.values())) for row in rows])
    headers = [by, "incidents", *(f"mean {NAMES[m]} (n)" for m in MEASURES)]
    table(
        headers,
        [[r.group, str(r.incidents), *(f"{human(r.means[m])} ({r.counts[m]})" for m in MEASURES)] for r in averaged],
    )
    return 0


def ack(
    incident: Annotated[str, typer.Argument(help="the incident's id")],
    by: Annotated[str, typer.Option(help="who acknowledges it")] = "",
) -> int:
    """Acknowledge an incident: a responder has it (its time to acknowledge stops here, if no one
    answered an approval or recorded a clock before)."""
    import getpass

    from cli.main import _store

    store = _store()
    found = incident_of(store, incident)
    who = by or getpass.getuser()
    store.add_timeline(found.id, "incident", f"acknowledged by {who}", data={"ack": who})
    say(f"{found.id}: acknowledged by {who}")
    return 0
