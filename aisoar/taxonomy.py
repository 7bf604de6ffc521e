"""Incident types of the CoSAI AI Incident Response Framework v1.0 with MITRE ATLAS and
OWASP LLM ids.

ATLAS ids are real ``AML.T*`` ids checked against ATLAS data 5.6.0 (the paper's own
``AT*``/``TA*`` aliases are deprecated and never emitted). OWASP LLM ids carry their
edition, since the 2025 and 2026 editions number differently.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

ATLAS_EDITION = "5.6.0"
OWASP_LLM_EDITION = "2025"

_ATLAS_ID = re.compile(r"^AML\.T\d{4}(\.\d{3})?$")
_OWASP_ID = re.compile(r"^LLM(0[1-9]|10):20(25|26)$")


class IncidentType(enum.StrEnum):
    data_poisoning = "data_poisoning"
    data_leakage = "data_leakage"
    data_integrity_violation = "data_integrity_violation"
    model_theft = "model_theft"
    model_inversion = "model_inversion"
    model_backdoor = "model_backdoor"
    model_evasion = "model_evasion"
    direct_prompt_injection = "direct_prompt_injection"
    indirect_prompt_injection = "indirect_prompt_injection"
    jailbreak = "jailbreak"
    abuse_generation = "abuse_generation"
    rogue_agent = "rogue_agent"
    unauthorized_access = "unauthorized_access"
    api_abuse = "api_abuse"
    dependency_exploitation = "dependency_exploitation"
    malicious_code_generation = "malicious_code_generation"
    phishing_generation = "phishing_generation"
    output_manipulation = "output_manipulation"
    hallucination_exploitation = "hallucination_exploitation"
    bias = "bias"


@dataclass(frozen=True)
class TypeInfo:
    domain: str
    title: str
    atlas: tuple[str, ...]
    owasp: tuple[str, ...]


T = IncidentType
CATALOG: dict[IncidentType, TypeInfo] = {
    T.data_poisoning: TypeInfo("data", "Data poisoning", ("AML.T0020", "AML.T0070", "AML.T0059"), ("LLM04:2025",)),
    T.data_leakage: TypeInfo("data", "Data leakage", ("AML.T0057", "AML.T0024"), ("LLM02:2025",)),
    T.data_integrity_violation: TypeInfo("data", "Data integrity violation", ("AML.T0043", "AML.T0015"), ()),
    T.model_theft: TypeInfo("model", "Model theft / extraction", ("AML.T0024.002", "AML.T0025"), ()),
    T.model_inversion: TypeInfo(
        "model", "Model inversion / membership inference", ("AML.T0024.001", "AML.T0024.000"), ()
    ),
    T.model_backdoor: TypeInfo(
        "model", "Model backdoor", ("AML.T0018", "AML.T0020", "AML.T0010.003"), ("LLM03:2025", "LLM04:2025")
    ),
    T.model_evasion: TypeInfo("model", "Model fooling (evasion)", ("AML.T0015", "AML.T0043"), ()),
    T.direct_prompt_injection: TypeInfo("deployment", "Direct prompt injection", ("AML.T0051.000",), ("LLM01:2025",)),
    T.indirect_prompt_injection: TypeInfo(
        "deployment", "Indirect prompt injection", ("AML.T0051.001", "AML.T0070", "AML.T0066"), ("LLM01:2025",)
    ),
    T.jailbreak: TypeInfo("deployment", "Jailbreak", ("AML.T0054", "AML.T0068"), ("LLM01:2025",)),
    T.abuse_generation: TypeInfo("deployment", "Abuse generation", ("AML.T0048",), ()),
    T.rogue_agent: TypeInfo("deployment", "Rogue agentic AI", ("AML.T0053", "AML.T0086", "AML.T0101"), ("LLM06:2025",)),
    T.unauthorized_access: TypeInfo(
        "infrastructure", "Unauthorized access", ("AML.T0012", "AML.T0049", "AML.T0055"), ()
    ),
    T.api_abuse: TypeInfo(
        "infrastructure",
        "API / service abuse (LLMjacking)",
        ("AML.T0029", "AML.T0034", "AML.T0040"),
        ("LLM10:2025",),
    ),
    T.dependency_exploitation: TypeInfo(
        "infrastructure", "Dependency exploitation", ("AML.T0010.001",), ("LLM03:2025",)
    ),
    T.malicious_code_generation: TypeInfo("user_interaction", "Malicious code generation", ("AML.T0102",), ()),
    T.phishing_generation: TypeInfo("user_interaction", "Phishing content generation", ("AML.T0052",), ()),
    T.output_manipulation: TypeInfo("user_interaction", "Output manipulation", ("AML.T0067",), ()),
    T.hallucination_exploitation: TypeInfo(
        "user_interaction", "Hallucination exploitation", ("AML.T0062",), ("LLM09:2025",)
    ),
    T.bias: TypeInfo("user_interaction", "Bias (regional / cultural)", (), ()),
}


def is_atlas_id(value: str) -> bool:
    return bool(_ATLAS_ID.match(value))


def is_owasp_llm_id(value: str) -> bool:
    """OWASP LLM ids must carry their edition: ``LLM10:2025``, never bare ``LLM10``."""
    return bool(_OWASP_ID.match(value))
