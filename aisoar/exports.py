"""An incident in the formats people send: a PDF a manager or a regulator reads, a STIX 2.1
bundle (``stix2``) for threat-intelligence sharing, and an AVID report (the AI Vulnerability
Database's report shape) for AI incident databases.

Everything an alert carried is attacker-controlled text: in the PDF it is drawn as text (never
markup), in STIX and AVID it is a JSON string value. Secrets never reach any of them: alerts are
stored with secrets replaced by their fingerprints.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aisoar.bundles import Signing
from aisoar.metrics import MEASURES, NAMES, Milestones, human
from aisoar.models import Alert, Incident
from aisoar.outcomes import Verdict
from aisoar.store import ApprovalRecord, Clock, EvidenceRecord
from aisoar.taxonomy import CATALOG

NAMESPACE = uuid.UUID("5d2b8e1c-3f0a-5b7e-9c41-a1505a0a1c40")  # aisoar's ids, as in the CACAO export
FONT_PATHS = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/dejavu/DejaVuSans.ttf"),
    Path("/usr/share/fonts/TTF/DejaVuSans.ttf"),
)


@dataclass
class IncidentRecord:
    """What every format is made from: the incident as the store holds it."""

    incident: Incident
    alerts: list[Alert]
    evidence: list[EvidenceRecord]
    approvals: list[ApprovalRecord]
    verdicts: list[Verdict]
    clocks: list[Clock]
    milestones: Milestones
    signing: Signing | None = None
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


# -- PDF ------------------------------------------------------------------------------------
def pdf_report(record: IncidentRecord) -> bytes:
    """The report as a PDF: summary, outcome (done and NOT done), deadlines, metrics, approvals
    with identities, the evidence manifest and the timeline."""
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=15)
    font = next((path for path in FONT_PATHS if path.is_file()), None)
    if font is not None:
        pdf.add_font("body", "", str(font))
        bold = font.with_name("DejaVuSans-Bold.ttf")
        pdf.add_font("body", "B", str(bold if bold.is_file() else font))
        family = "body"
    else:  # no Unicode font on this machine: the core font, characters outside Latin-1 replaced
        family = "Helvetica"
    clean = (lambda text: text) if font is not None else _latin1

    incident = record.incident
    pdf.set_title(f"AI incident {incident.id}")
    pdf.set_author("aisoar")
    pdf.add_page()

    def heading(text: str, size: int = 13) -> None:
        pdf.ln(2)
        pdf.set_font(family, "B", size)
        pdf.multi_cell(0, 7, clean(text), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font(family, "", 9)

    def para(text: str) -> None:
        pdf.multi_cell(0, 4.6, clean(_breakable(text)), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def pairs(rows: list[tuple[str, str]]) -> None:
        for key, value in rows:
            pdf.set_font(family, "B", 9)
            pdf.cell(44, 5, clean(key))
            pdf.set_font(family, "", 9)
            pdf.multi_cell(0, 5, clean(_breakable(value)), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    info = CATALOG.get(incident.type) if incident.type else None
    heading(f"AI incident {incident.id}", 16)
    pairs(
        [
            ("Alert", _quoted(incident.title)),
            ("Status", incident.status.value),
            ("Severity", incident.severity.value),
            ("Type", info.title if info else "unclassified"),
            ("MITRE ATLAS", ", ".join(info.atlas) if info and info.atlas else "-"),
            ("Opened", f"{incident.created_at:%Y-%m-%d %H:%M:%S} UTC"),
            ("Alerts", str(len(incident.alert_ids))),
            ("Report made", f"{record.now:%Y-%m-%d %H:%M:%S} UTC"),
        ]
    )
    for verdict in record.verdicts:
        heading(f"Outcome of playbook {verdict.playbook}: {verdict.status.value}")
        if verdict.tracked_only:
            para("This playbook declares no containment objective: nothing was contained by it.")
        for objective in verdict.objectives:
            mark = "MET" if objective.met else "NOT MET"
            para(f"{mark}: {objective.line().split(': ', 1)[1]}")
        pdf.set_font(family, "B", 9)
        para("Not done:")
        pdf.set_font(family, "", 9)
        lines = [*verdict.not_done, *(f"{step}: not run (the run stopped before it)" for step in verdict.not_run)]
        for line in lines or ["Every step did its job."]:
            para(f"- {line}")
    if record.clocks:
        heading("Regulatory deadlines (from awareness; counsel confirms what applies)")
        for clock in record.clocks:
            para(f"- {clock.line(record.now)}. Why: {clock.why}")
    heading("Metrics")
    seconds = record.milestones.seconds()
    pairs([(NAMES[m].capitalize(), human(seconds[m])) for m in MEASURES])
    if record.milestones.spend_usd is not None:
        spent = f"USD {record.milestones.spend_usd:.2f} (the gateway logs, to the evidence before any block)"
        pairs([("Key spend since leak", spent)])
    heading("Approvals")
    if not record.approvals:
        para("None.")
    for approval in record.approvals:
        para(
            f"- {approval.step_id} ({approval.action}): {approval.status}"
            + (f" by {approval.decided_by}" if approval.decided_by else "")
            + (f": {approval.reason}" if approval.reason else "")
            + f"; arguments sha256 {approval.args_sha256[:16]}"
        )
        for answer in approval.answers:
            person = answer.person or f"unverified ({answer.claimed})"
            counted = "counted" if answer.counted else f"not counted: {answer.refusal or '-'}"
            para(f"    {answer.at:%Y-%m-%d %H:%M:%S} {person} {answer.decision} via {answer.channel} ({counted})")
    heading("Evidence manifest")
    if record.signing is not None:
        para(
            f"Signed with Ed25519 key {record.signing.key_id}; `aisoar verify {incident.id}` checks it, "
            f"`aisoar export {incident.id}` writes a bundle anyone can verify."
        )
    if not record.evidence:
        para("No evidence was kept.")
    for number, item in enumerate(record.evidence, 1):
        para(
            f"{number}. {item.description} - sha256 {item.sha256}, {item.size} bytes, by {item.collected_by} "
            f"at {item.collected_at:%Y-%m-%d %H:%M:%S} UTC; custody entry {item.entry_hash[:16]}"
        )
    heading("Timeline (UTC)")
    alerts = [e for e in incident.timeline if e.kind == "alert"]
    shown = [e for e in incident.timeline if e.kind != "alert"] + alerts[:20]
    for entry in sorted(shown, key=lambda e: e.at):
        para(f"{entry.at:%H:%M:%S} {entry.kind}{f' [{entry.step_id}]' if entry.step_id else ''}: {entry.message}")
    if len(alerts) > 20:
        para(f"... and {len(alerts) - 20} more alerts joined the incident (every one is kept as evidence).")
    return bytes(pdf.output())


def _breakable(text: str) -> str:
    """Long unbroken runs (hashes, URLs) get a break opportunity every 48 characters."""
    words = []
    for word in text.split(" "):
        words.append(" ".join(word[i : i + 48] for i in range(0, len(word), 48)) if len(word) > 64 else word)
    return " ".join(words)


def _latin1(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1")


def _quoted(text: str) -> str:
    return "“" + text.replace("\n", " ")[:500] + "”"


# -- STIX 2.1 -------------------------------------------------------------------------------
def _atlas_url(technique: str) -> str:
    return f"https://atlas.mitre.org/techniques/{technique}"


def stix_bundle(record: IncidentRecord) -> str:
    """The incident as a STIX 2.1 bundle: an ``incident``, an ``attack-pattern`` per ATLAS
    technique (external reference to ATLAS), an ``indicator`` per fingerprint of what the alerts
    name (a leaked key's sha256, an address, a user account), each related to the incident."""
    import stix2

    incident = record.incident
    info = CATALOG.get(incident.type) if incident.type else None
    identity = stix2.Identity(
        id=f"identity--{uuid.uuid5(NAMESPACE, 'identity/aisoar')}", name="aisoar", identity_class="system"
    )
    stix_incident = stix2.Incident(
        id=f"incident--{uuid.uuid5(NAMESPACE, 'incident/' + incident.id)}",
        created=incident.created_at,
        modified=record.now,
        created_by_ref=identity.id,
        name=f"AI incident {incident.id}: {incident.title[:200]}",
        description=(
            f"{info.title if info else 'Unclassified AI incident'}; severity {incident.severity.value}; "
            f"status {incident.status.value}. Outcome: "
            + "; ".join(f"{v.playbook}: {v.status.value}" for v in record.verdicts)
        ),
        labels=["aisoar", incident.type.value if incident.type else "unclassified"],
        external_references=[{"source_name": "aisoar", "external_id": incident.id}],
    )
    objects: list[Any] = [identity, stix_incident]
    for technique in info.atlas if info else []:
        pattern = stix2.AttackPattern(
            id=f"attack-pattern--{uuid.uuid5(NAMESPACE, 'atlas/' + technique)}",
            created_by_ref=identity.id,
            name=f"MITRE ATLAS {technique}",
            external_references=[
                {"source_name": "mitre-atlas", "external_id": technique, "url": _atlas_url(technique)}
            ],
        )
        objects += [pattern, _related(stix2, identity, stix_incident.id, pattern.id, "related-to")]
    for name, pattern_text in sorted(_indicators(record.alerts).items()):
        indicator = stix2.Indicator(
            id=f"indicator--{uuid.uuid5(NAMESPACE, incident.id + '/' + pattern_text)}",
            created_by_ref=identity.id,
            name=name,
            pattern=pattern_text,
            pattern_type="stix",
            valid_from=incident.created_at,
            indicator_types=["compromised"],
        )
        objects += [indicator, _related(stix2, identity, indicator.id, stix_incident.id, "related-to")]
    bundle = stix2.Bundle(objects=objects, id=f"bundle--{uuid.uuid5(NAMESPACE, 'bundle/' + incident.id)}")
    text: str = bundle.serialize(pretty=True)
    return text


def _related(stix2: Any, identity: Any, source: str, target: str, kind: str) -> Any:
    return stix2.Relationship(
        id=f"relationship--{uuid.uuid5(NAMESPACE, f'{source}/{kind}/{target}')}",
        created_by_ref=identity.id,
        relationship_type=kind,
        source_ref=source,
        target_ref=target,
    )


def _stix_string(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _indicators(alerts: list[Alert]) -> dict[str, str]:
    """What the alerts name that others can look for, as STIX patterns (values quoted, never
    evaluated: an alert's text is a string literal of the pattern)."""
    found: dict[str, str] = {}
    for alert in alerts:
        for entity in alert.entities:
            data = entity.model_dump()
            fingerprint = data.get("fingerprint") or {}
            if entity.type == "llm_api_key" and fingerprint.get("sha256"):
                found[f"leaked {data.get('provider')} key {fingerprint.get('prefix')}…{fingerprint.get('last4')}"] = (
                    f"[artifact:hashes.'SHA-256' = '{fingerprint['sha256']}']"
                )
            if entity.type == "llm_api_key" and data.get("gateway_key_hash"):
                found[f"gateway key {str(data['gateway_key_hash'])[:12]}"] = (
                    f"[artifact:hashes.'SHA-256' = '{_stix_string(str(data['gateway_key_hash']))}']"
                )
            if entity.type == "user" and data.get("ip"):
                kind = "ipv6-addr" if ":" in str(data["ip"]) else "ipv4-addr"
                found[f"source address {data['ip']}"] = f"[{kind}:value = '{_stix_string(str(data['ip']))}']"
            if entity.type == "user":
                found[f"user account {data['user_id']}"] = (
                    f"[user-account:user_id = '{_stix_string(str(data['user_id']))}']"
                )
    return found


# -- AVID ------------------------------------------------------------------------------------
AVID_SEP = {
    "data_poisoning": ["S0600: Data Poisoning"],
    "data_leakage": ["S0301: Information Leak", "P0300: Privacy"],
    "data_integrity_violation": ["S0601: Ingest Poisoning"],
    "model_theft": ["S0502: Model theft"],
    "model_inversion": ["S0501: Model inversion"],
    "model_backdoor": ["S0201: Model Compromise"],
    "model_evasion": ["S0403: Adversarial Example"],
    "direct_prompt_injection": ["S0400: Model Bypass"],
    "indirect_prompt_injection": ["S0400: Model Bypass"],
    "jailbreak": ["S0400: Model Bypass"],
    "abuse_generation": ["E0301: Toxicity"],
    "rogue_agent": ["S0300: Over-permissive API"],
    "unauthorized_access": ["S0500: Exfiltration"],
    "api_abuse": ["S0302: Excessive Queries"],
    "dependency_exploitation": ["S0200: Supply Chain Compromise"],
    "malicious_code_generation": ["E0300: User actions"],
    "phishing_generation": ["E0300: User actions"],
    "output_manipulation": ["E0402: Generative Misinformation"],
    "hallucination_exploitation": ["E0402: Generative Misinformation"],
    "bias": ["E0100: Bias/ Discrimination"],
}


DOMAINS = {"S": "Security", "E": "Ethics", "P": "Performance"}


def avid_report(record: IncidentRecord) -> dict[str, Any]:
    """The incident as an AVID report (the shape of ``avidtools.datamodels.report.Report``)."""
    incident = record.incident
    info = CATALOG.get(incident.type) if incident.type else None
    kind = incident.type.value if incident.type else None
    artifacts = sorted(
        {
            ("Model", str(e.model_dump().get("name")))
            for a in record.alerts
            for e in a.entities
            if e.type in ("model",) and e.model_dump().get("name")
        }
        | {
            ("System", str(e.model_dump().get("name")))
            for a in record.alerts
            for e in a.entities
            if e.type in ("agent", "vector_index") and e.model_dump().get("name")
        }
    )
    outcome = "; ".join(f"{v.playbook}: {v.status.value}" for v in record.verdicts) or "no playbook ran"
    return {
        "data_type": "AVID",
        "data_version": "0.2",
        "metadata": {"report_id": f"aisoar-{incident.id}"},
        "affects": {
            "developer": [],
            "deployer": ["aisoar user"],
            "artifacts": [{"type": t, "name": n} for t, n in artifacts] or [{"type": "System", "name": "AI system"}],
        },
        "problemtype": {
            "classof": "AIID Incident",
            "type": "Detection",
            "description": {
                "lang": "eng",
                "value": f"{info.title if info else 'Unclassified'}: {incident.title[:500]}",
            },
        },
        "metrics": [
            {
                "name": NAMES[m],
                "detection_method": {"type": "Static Threshold", "name": "aisoar incident record"},
                "results": {"seconds": record.milestones.seconds()[m]},
            }
            for m in MEASURES
        ],
        "references": [
            {"type": "source", "label": f"MITRE ATLAS {t}", "url": _atlas_url(t)} for t in (info.atlas if info else [])
        ],
        "description": {
            "lang": "eng",
            "value": f"AI incident {incident.id}, severity {incident.severity.value}, status {incident.status.value}. "
            f"Outcome: {outcome}.",
        },
        "impact": {
            "avid": {
                "vuln_id": None,  # no AVID vulnerability is known for it yet
                "risk_domain": sorted({DOMAINS[s[0]] for s in AVID_SEP.get(kind or "", [])}),
                "sep_view": AVID_SEP.get(kind or "", []),
                "lifecycle_view": ["L06: Deployment"],
                "taxonomy_version": "0.2",
            }
        },
        "credit": [{"lang": "eng", "value": "aisoar"}],
        "reported_date": record.now.date().isoformat(),
    }
