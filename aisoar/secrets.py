"""Finding leaked secrets in alert payloads and replacing them with fingerprints.

A secret-scanning alert carries the very key that leaked. It is fingerprinted at the
edge (sha256, first six and last four characters) and the clear value is dropped before
anything is stored, logged or shown.

What is recognised, and by what:

* detect-secrets (Yelp) detector classes, called per string: their compiled ``denylist``
  patterns are run with ``finditer`` on the text (no file scanning, no ``get_settings()``,
  no verification requests), so each hit is an exact span that can be fingerprinted and
  replaced. AWS (``AWSKeyDetector``: the labelled, quoted secret access key; its access key
  id pattern is left out on purpose: ``AKIA...`` is an identifier containment needs),
  GitHub classic tokens, JWTs (with the detector's own ``is_formally_valid``), Slack tokens
  and webhook URLs, Stripe live keys, OpenAI legacy keys, GitLab, SendGrid, PyPI, Square,
  Discord, Telegram, Mailchimp, Azure storage account keys. Several of these patterns stop
  at a fixed length (Stripe's 24 characters, OpenAI's 20 after ``T3BlbkFJ``, a JWT without
  its signature, ``GitHubTokenDetector.analyze_string`` even yields only ``ghp``), so every
  hit is extended over the rest of the token's characters.
* Entropy (``Base64HighEntropyString``'s Shannon formula, see ``shannon_entropy``) for AWS
  secret access keys without a label, restricted to their shape: exactly 40 characters of
  ``[A-Za-z0-9/+]`` standing alone, with upper and lower case letters and a digit, not hex,
  at least 4.35 bits per character, and not the base64 of printable text.
* Small custom patterns where detect-secrets has no detector: Anthropic (``sk-ant-``),
  OpenAI project / service-account / admin keys and other ``sk-`` keys, GitHub fine-grained
  PATs (``github_pat_``), Hugging Face (``hf_``), Google API keys (``AIza``), Stripe test and
  restricted keys, npm tokens, HashiCorp Vault / OpenBao tokens (``hvs.``, legacy ``s.``),
  Slack tokens the detector's stricter pattern misses (``xapp-``), an AWS secret access key
  after an unquoted label, passwords in URLs
  (``scheme://user:password@``, 8 characters or more; detect-secrets' ``BasicAuthDetector``
  takes a port and an e-mail address in an ordinary URL for one), and whole private key
  blocks (PEM ``-----BEGIN ... PRIVATE KEY-----`` to its ``END`` line, PuTTY key files):
  ``PrivateKeyDetector`` reports only the header line, and misses ``ENCRYPTED PRIVATE KEY``.

A redaction marker never looks like a secret, and redacting is repeated until scanning the
result finds nothing (replacing one secret can make its neighbour stand alone).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector

from aisoar.models import SecretFingerprint

MIN_SECRET = 8  # no pattern below matches fewer characters: shorter strings are not scanned
AWS_SECRET_MIN_ENTROPY = 4.35  # bits per character; random 40-character keys fall below in ~0.1 %
_MAX_ROUNDS = 16
_MAX_KEY_BLOCK = 32 * 1024
WITHHELD = "[redacted text: secrets could not be separated from it]"

_HEX = re.compile(r"[0-9a-fA-F]+")
_WORD_TAIL = re.compile(r"[A-Za-z0-9_\-]*")
_ALNUM_TAIL = re.compile(r"[A-Za-z0-9]*")
_GITHUB_TAIL = re.compile(r"[A-Za-z0-9_]*")
_JWT_TAIL = re.compile(r"[A-Za-z0-9_\-+/=]*")


def _not_hex(value: str) -> bool:
    return _HEX.fullmatch(value) is None


def shannon_entropy(value: str) -> float:
    """Bits per character: detect-secrets' ``Base64HighEntropyString.calculate_shannon_entropy``,
    summed over the characters present rather than over its whole alphabet (the same value
    for base64 text, several times faster; the tests compare the two)."""
    size = len(value)
    if not size:
        return 0.0
    counts = Counter(value).values()
    return math.log2(size) - sum(map(_n_log2_n, counts)) / size


@functools.cache
def _n_log2_n(n: int) -> float:
    return n * math.log2(n)


def _decodes_to_text(value: str) -> bool:
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return data.isascii() and data.decode("ascii").isprintable()


_MIXED = re.compile(r"(?=[^0-9]*[0-9])(?=[^A-Z]*[A-Z])(?=[^a-z]*[a-z])")


def _mixed(value: str) -> bool:
    """Digits, upper and lower case letters: what a random token has and a word rarely does."""
    return _MIXED.match(value) is not None


def _looks_random(value: str) -> bool:
    """An unlabelled 40-character candidate is an AWS secret access key only if it looks random."""
    return (
        _mixed(value)
        and _not_hex(value)
        and not _decodes_to_text(value)
        and shannon_entropy(value) >= AWS_SECRET_MIN_ENTROPY
    )


_SK_KNOWN = ("sk-ant-", "sk-proj-", "sk-svcacct-", "sk-admin-")


def _sk_key(value: str) -> bool:
    # A bare ``sk-`` followed by letters and dashes is more likely a slug than a key.
    return value.startswith(_SK_KNOWN) or any(c.isdigit() for c in value[3:])


# The characters that may neither precede nor follow an unlabelled AWS secret access key, as
# "a"; every other byte (and every byte of a non-ASCII character) as a space.
_RUNS = bytes(97 if chr(b) in string.ascii_letters + string.digits + "/+_-" else 32 for b in range(256))
_FORTY = b"a" * 40


def _run_of_forty(text: str) -> bool:
    """Whether ``text`` has a run of exactly 40 such characters: what an unlabelled AWS key
    needs. Bytes searched for 40 in a row skip; a pattern would try every position."""
    runs = text.encode("utf-8", "surrogatepass").translate(_RUNS)
    at = runs.find(_FORTY)
    while at >= 0:
        end = runs.find(b" ", at + 40)
        if end < 0:
            end = len(runs)
        if end - at == 40:
            return True
        at = runs.find(_FORTY, end)
    return False


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    patterns: tuple[re.Pattern[str], ...]
    needles: tuple[str, ...] = ()  # the rule runs only on text holding one of these
    ci: bool = False  # needles are lower case, looked for in the lower-cased text
    group: int | str = 0  # the group that holds the secret
    strip: str = ""  # a label the pattern includes, not part of the secret
    valid: Callable[[str], bool] | None = None  # checked on the hit before it is extended
    tail: re.Pattern[str] | None = None  # the hit is extended over these characters
    # A test every hit passes, much cheaper than the patterns (a pattern that begins with a
    # literal is searched for by skipping; one that begins with a class of characters costs
    # as much as trying the whole rule at every position): the rule runs only where it holds.
    gate: Callable[[str], object] | None = None


def _library(detector: Any, name: str, **kwargs: Any) -> _Rule:
    return _Rule(name, tuple(detector.denylist), **kwargs)


# Instances are built once; only their compiled patterns and pure helpers are used.
_AWS = AWSKeyDetector()
_JWT = JwtTokenDetector()

_RULES: tuple[_Rule, ...] = (
    # Only the labelled secret pattern: the access key id pattern (no group) is left out.
    _Rule(
        "aws-secret-access-key (detect-secrets)",
        tuple(p for p in _AWS.denylist if p.groups),
        needles=("aws",),
        ci=True,
        group=1,
        valid=_not_hex,
    ),
    _library(GitHubTokenDetector(), "github (detect-secrets)", needles=("gh",), tail=_GITHUB_TAIL),
    _library(_JWT, "jwt (detect-secrets)", needles=("eyJ",), valid=_JWT.is_formally_valid, tail=_JWT_TAIL),
    _library(SlackDetector(), "slack (detect-secrets)", needles=("xox", "hooks.slack.com"), ci=True, tail=_WORD_TAIL),
    _library(StripeDetector(), "stripe (detect-secrets)", needles=("k_live_",), tail=_ALNUM_TAIL),
    _library(OpenAIDetector(), "openai (detect-secrets)", needles=("T3BlbkFJ",), tail=_WORD_TAIL),
    _library(GitLabTokenDetector(), "gitlab (detect-secrets)", needles=("gl", "GR1348941"), tail=_WORD_TAIL),
    _library(SendGridDetector(), "sendgrid (detect-secrets)", needles=("SG.",), tail=_WORD_TAIL),
    _library(PypiTokenDetector(), "pypi (detect-secrets)", needles=("pypi-",), tail=_WORD_TAIL),
    _library(SquareOAuthDetector(), "square (detect-secrets)", needles=("sq0csp-",), tail=_WORD_TAIL),
    _library(
        DiscordBotTokenDetector(),
        "discord (detect-secrets)",
        needles=(".",),
        tail=_WORD_TAIL,
        gate=re.compile(r"\.[a-zA-Z\d_-]{6}\.[a-zA-Z\d_-]{27}").search,
    ),
    _library(
        TelegramBotTokenDetector(),
        "telegram (detect-secrets)",
        needles=(":",),
        tail=_WORD_TAIL,
        gate=re.compile(r":[0-9A-Za-z_-]{35}").search,
    ),
    _library(MailchimpDetector(), "mailchimp (detect-secrets)", needles=("-us",), gate=re.compile(r"-us[0-9]").search),
    _library(
        AzureStorageKeyDetector(), "azure-storage (detect-secrets)", needles=("AccountKey=",), strip="AccountKey="
    ),
    # Custom patterns: kinds detect-secrets has no detector for.
    _Rule(
        "sk- keys: anthropic, openai project/service/admin, others (custom)",
        (
            # the literal first, then what may not precede it: searched by skipping to "sk-"
            re.compile(r"sk-(?<![A-Za-z0-9_\-]sk-)[A-Za-z0-9_\-]{20,}"),
            # the distinctive prefixes also where text is glued to them (after an escaped "\n")
            re.compile(r"sk-(?:ant|proj|svcacct|admin)-[A-Za-z0-9_\-]{20,}"),
        ),
        needles=("sk-",),
        valid=_sk_key,
    ),
    _Rule(
        "aws-secret-access-key after an unquoted label (custom)",
        (
            re.compile(
                r"secret[_\-]?access[_\-]?key[\"'\s:=]{1,4}(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
                re.IGNORECASE,
            ),
        ),
        needles=("access",),  # not "secret": every marker holds that word
        ci=True,
        group="secret",
        valid=_not_hex,
    ),
    _Rule("github fine-grained pat (custom)", (re.compile(r"github_pat_[A-Za-z0-9_]{22,}"),), needles=("github_pat_",)),
    _Rule("hugging face (custom)", (re.compile(r"hf_(?<![A-Za-z0-9_]hf_)[A-Za-z0-9]{30,}"),), needles=("hf_",)),
    _Rule("google api key (custom)", (re.compile(r"AIza[0-9A-Za-z_\-]{35}"),), needles=("AIza",), tail=_WORD_TAIL),
    _Rule("stripe test / restricted (custom)", (re.compile(r"[rs]k_test_[0-9A-Za-z]{16,}"),), needles=("k_test_",)),
    _Rule("npm (custom)", (re.compile(r"npm_[A-Za-z0-9]{36}"),), needles=("npm_",), tail=_ALNUM_TAIL),
    _Rule(
        "slack tokens beyond the detector's pattern (custom)",
        (re.compile(r"(?:xox[abposre]|xapp)-[A-Za-z0-9\-]{10,}"),),
        needles=("xox", "xapp-"),
    ),
    _Rule(
        "hashicorp vault / openbao tokens (custom)",
        (
            re.compile(r"hv[sbr]\.(?<![A-Za-z0-9_\-.]hv[sbr]\.)[A-Za-z0-9_\-]{24,}"),
            re.compile(r"[sb]\.(?<![A-Za-z0-9_\-.][sb]\.)[A-Za-z0-9]{24}(?![A-Za-z0-9_\-.])"),
        ),
        needles=("s.", "b.", "r."),
        valid=_mixed,
        gate=re.compile(r"\.[A-Za-z0-9_\-]{24}").search,
    ),
    _Rule(
        "password in a URL (custom)",
        (re.compile(r"://[^/?#\s:@\"'<>\[\]]{0,256}:(?P<secret>[^/?#\s@\"'<>\[\]]{8,256})@"),),
        needles=("://",),
        group="secret",
    ),
    _Rule(
        "aws secret access key without a label (custom shape, detect-secrets entropy)",
        (re.compile(r"(?<![A-Za-z0-9/+_\-])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=_\-])"),),
        valid=_looks_random,
        gate=_run_of_forty,
    ),
)

_PEM_BEGIN = re.compile(r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY( BLOCK)?-----")
_PUTTY_BEGIN = re.compile(r"PuTTY-User-Key-File-\d+:")
_PUTTY_END = re.compile(r"Private-(?:MAC|Hash):[ \t]*[0-9a-fA-F]+")
# A block without its end line (clipped by the sender) runs on over what a key body holds.
_KEY_BODY = re.compile(rf"[A-Za-z0-9+/=\s:,.\\\-]{{0,{_MAX_KEY_BLOCK}}}")


def _key_blocks(text: str) -> list[tuple[int, int]]:
    """Whole private key blocks: detect-secrets' PrivateKeyDetector flags only the header line."""
    spans: list[tuple[int, int]] = []
    if "PRIVATE KEY" in text:
        position = 0
        while (begin := _PEM_BEGIN.search(text, position)) is not None:
            footer = f"-----END {begin.group(1)}PRIVATE KEY{begin.group(2) or ''}-----"
            found = text.find(footer, begin.end(), begin.end() + _MAX_KEY_BLOCK)
            end = found + len(footer) if found >= 0 else _body_end(text, begin.end())
            spans.append((begin.start(), end))
            position = end
    if "PuTTY-User-Key-File-" in text:
        position = 0
        while (begin := _PUTTY_BEGIN.search(text, position)) is not None:
            last = _PUTTY_END.search(text, begin.end(), begin.end() + _MAX_KEY_BLOCK)
            end = last.end() if last is not None else _body_end(text, begin.end())
            spans.append((begin.start(), end))
            position = end
    return spans


def _body_end(text: str, start: int) -> int:
    end = _KEY_BODY.match(text, start)
    assert end is not None  # the pattern matches the empty string
    return len(text[: end.end()].rstrip())


def _outermost(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans by position, without those inside another (a part of a key is not another key)."""
    kept: list[tuple[int, int]] = []
    reach = -1
    for start, end in sorted(set(spans), key=lambda s: (s[0], -s[1])):
        if end <= reach:
            continue
        kept.append((start, end))
        reach = end
    return kept


# Which rules a text needs is decided by plain substring tests, once per text.
_CASED_NEEDLES = tuple(sorted({n for rule in _RULES if not rule.ci for n in rule.needles}))
_LOWER_NEEDLES = tuple(sorted({n for rule in _RULES if rule.ci for n in rule.needles}))
_ALWAYS = frozenset(i for i, rule in enumerate(_RULES) if not rule.needles)
_BY_NEEDLE: dict[tuple[bool, str], frozenset[int]] = {
    (ci, needle): frozenset(i for i, rule in enumerate(_RULES) if rule.ci == ci and needle in rule.needles)
    for ci, needles in ((False, _CASED_NEEDLES), (True, _LOWER_NEEDLES))
    for needle in needles
}


def _rules_for(text: str) -> list[_Rule]:
    wanted = set(_ALWAYS)
    for needle in _CASED_NEEDLES:
        if needle in text:
            wanted |= _BY_NEEDLE[False, needle]
    lower = text.lower()
    for needle in _LOWER_NEEDLES:
        if needle in lower:
            wanted |= _BY_NEEDLE[True, needle]
    return [_RULES[i] for i in sorted(wanted)]


# Short texts found to hold no secret: alerts repeat their keys and most of their values (a
# storm repeats nearly all), so most strings of a delivery were scanned before. Only texts
# without a secret are remembered: a secret is never kept here.
_CLEAN_MAX_LENGTH = 256
_CLEAN_MAX_ENTRIES = 50_000
_clean: dict[str, None] = {}


def _spans(text: str) -> list[tuple[int, int]]:
    if len(text) < MIN_SECRET:
        return []
    short = len(text) <= _CLEAN_MAX_LENGTH
    if short and text in _clean:
        return []
    spans = _scan(text)
    if short and not spans:
        if len(_clean) >= _CLEAN_MAX_ENTRIES:
            _clean.clear()  # a fresh start now and then is cheaper than keeping an order
        _clean[text] = None
    return spans


def _scan(text: str, rules: Iterable[_Rule] | None = None) -> list[tuple[int, int]]:
    """The secrets' spans in ``text``, by ``rules`` (default: those its needles and gates let run)."""
    spans: list[tuple[int, int]] = []
    for rule in _rules_for(text) if rules is None else rules:
        if rules is None and rule.gate is not None and not rule.gate(text):
            continue
        for pattern in rule.patterns:
            for match in pattern.finditer(text):
                start, end = match.span(rule.group)
                if start < 0:
                    continue
                if rule.strip and text.startswith(rule.strip, start):
                    start += len(rule.strip)
                if rule.valid is not None and not rule.valid(text[start:end]):
                    continue
                if rule.tail is not None:
                    tail = rule.tail.match(text, end)
                    end = tail.end() if tail is not None else end
                if end - start >= MIN_SECRET:
                    spans.append((start, end))
    if "PRIVATE KEY" in text or "PuTTY-User-Key-File-" in text:
        spans += _key_blocks(text)
    return _outermost(spans) if len(spans) > 1 else spans


# A marker as it reads in JSON (its prefix and last four characters may be escaped there).
_MARKER = re.compile(r"\[redacted secret .{0,60}? sha256:[0-9a-f]{16}\]")


def redaction_marker(fingerprint: SecretFingerprint) -> str:
    return f"[redacted secret {fingerprint.prefix}…{fingerprint.last4} sha256:{fingerprint.sha256[:16]}]"


def find_secrets(text: str) -> list[str]:
    """Every secret in ``text``, each once, in order of appearance."""
    return list(dict.fromkeys(text[start:end] for start, end in _spans(text)))


def _replace(text: str, spans: list[tuple[int, int]], found: dict[str, SecretFingerprint]) -> str:
    # Every occurrence of a secret goes, not only where a pattern saw it.
    everywhere = list(spans)
    for secret in {text[start:end] for start, end in spans}:
        at = text.find(secret)
        while at >= 0:
            everywhere.append((at, at + len(secret)))
            at = text.find(secret, at + 1)
    parts: list[str] = []
    done = 0
    group: list[tuple[int, int]] = []
    for start, end in [*_outermost(everywhere), (len(text) + 1, len(text) + 1)]:
        if group and start >= max(e for _, e in group):
            # Overlapping secrets go together; each keeps its own marker.
            parts.append(text[done : group[0][0]])
            secrets = dict.fromkeys(text[s:e] for s, e in group)
            parts.extend(redaction_marker(found.setdefault(s, SecretFingerprint.of(s))) for s in secrets)
            done = max(e for _, e in group)
            group = []
        group.append((start, end))
    parts.append(text[done:])
    return "".join(parts)


def redact_text(text: str, found: dict[str, SecretFingerprint]) -> str:
    """``text`` with every secret replaced by its marker; ``found`` collects fingerprints."""
    for _ in range(_MAX_ROUNDS):
        spans = _spans(text)
        if not spans:
            return text
        if spans[0] == (0, len(text)):  # the text is one secret: only its marker is left
            return redaction_marker(found.setdefault(text, SecretFingerprint.of(text)))
        text = _replace(text, spans, found)
    return WITHHELD  # not reached: each round removes clear characters that markers never match


# A marker in text: "[redacted secret " + up to 6 + "…" + up to 4 + " sha256:" + 16 hex + "]".
_MARKER_TEXT = re.compile(r"\[redacted secret .{0,11}? sha256:[0-9a-f]{16}\]", re.DOTALL)
_MARKER_MAX = 53


def _cut_before_marker(text: str, cut: int) -> int:
    """``cut``, or the start of the marker it would fall inside."""
    for marker in _MARKER_TEXT.finditer(text, max(0, cut - _MARKER_MAX), cut + _MARKER_MAX):
        if marker.start() < cut < marker.end():
            return marker.start()
    return cut


def redact_clipped(text: str, found: dict[str, SecretFingerprint], limit: int) -> str:
    """``text`` redacted, then clipped to ``limit`` characters (ending with "…").

    A marker the limit would cut is dropped whole. Clipping can leave a secret-shaped run
    standing alone (a key whose next character was cut off), so the result is scanned again.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    text = redact_text(text, found)
    for _ in range(_MAX_ROUNDS):
        if len(text) <= limit:
            return text
        cut = _cut_before_marker(text, limit - 1)
        text = redact_text(text[:cut] + "…", found)
    return WITHHELD[: limit - 1] + "…"  # not reached in practice: each round cuts a marker or a new secret off


def _walk(value: Any, found: dict[str, SecretFingerprint]) -> Any:
    if isinstance(value, str):
        return redact_text(value, found)
    if isinstance(value, dict):
        return {redact_text(str(k), found): _walk(v, found) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, found) for v in value]
    return value


def _replace_everywhere(value: Any, secrets: list[str], found: dict[str, SecretFingerprint]) -> Any:
    if isinstance(value, str):
        replaced = value
        for secret in secrets:
            if secret in replaced:
                marker = redaction_marker(found.setdefault(secret, SecretFingerprint.of(secret)))
                replaced = replaced.replace(secret, marker)
        # A replacement can leave a neighbour standing alone: scan what changed again.
        return value if replaced is value else redact_text(replaced, found)
    if isinstance(value, dict):
        return {
            _replace_everywhere(k, secrets, found): _replace_everywhere(v, secrets, found) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_replace_everywhere(v, secrets, found) for v in value]
    return value


def _json_forms(secret: str) -> list[str]:
    forms = [secret]
    try:
        decoded = json.loads(f'"{secret}"')
    except ValueError:
        return forms
    if isinstance(decoded, str) and decoded != secret and len(decoded) >= MIN_SECRET:
        forms.append(decoded)
    return forms


def _as_in_json(text: str) -> str:
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)[1:-1]


def redact(value: Any, found: dict[str, SecretFingerprint]) -> Any:
    """Return ``value`` with every secret replaced; ``found`` collects fingerprints.

    ``found`` maps each clear secret to its fingerprint so the caller can build
    entities; it must be dropped as soon as that is done.

    Strings are scanned one by one. A mapping or list is then scanned once more as compact
    JSON, for secrets recognisable only across strings (``{"aws_secret_access_key": "..."}``:
    the label in a key, the secret in its value), and for secrets found in one string that
    another holds where no pattern sees them (a key that is also the end of a URL); those
    are replaced wherever they occur.
    """
    result = _walk(value, found)
    if not isinstance(result, dict | list):
        return result
    for _ in range(2):
        try:
            document = json.dumps(result, ensure_ascii=False, separators=(",", ":"), default=str)
        except (TypeError, ValueError):
            return result
        across = [form for secret in find_secrets(document) for form in _json_forms(secret)]
        if found:
            rest = _MARKER.sub("\x00", document)  # what is left in clear, searched for each secret found
            across += [secret for secret in found if _as_in_json(secret) in rest]
        if not across:
            break
        result = _replace_everywhere(result, across, found)
    return result


# For JSON-schema validation where aisoar cannot redact before storage (a Prefect form: the
# Prefect server stores the answer as typed once it validates): the shapes of the kinds of
# secret above, as one pattern in the dialect both JSON schema (ECMA 262) and Python read. A
# field with ``{"not": {"pattern": FORM_SECRET_PATTERN}}`` refuses an answer holding one.
FORM_SECRET_PATTERN = "|".join(
    (
        r"sk-[A-Za-z0-9_\-]{20,}",
        r"(sk|rk)_(live|test)_[A-Za-z0-9]{16,}",
        r"gh[pousr]_[A-Za-z0-9]{30,}",
        r"github_pat_[A-Za-z0-9_]{30,}",
        r"AIza[0-9A-Za-z_\-]{30,}",
        r"xox[abposr]-[A-Za-z0-9\-]{10,}",
        r"hooks\.slack\.com/services/",
        r"hf_[A-Za-z0-9]{30,}",
        r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.",
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY",
        r"(hvs|s)\.[A-Za-z0-9]{24,}",
        # an AWS secret access key: 40 base64 characters with upper, lower case and digits
        r"(^|[^A-Za-z0-9/+=])(?=[A-Za-z0-9/+]{0,39}[A-Z])(?=[A-Za-z0-9/+]{0,39}[a-z])"
        r"(?=[A-Za-z0-9/+]{0,39}[0-9])[A-Za-z0-9/+]{40}([^A-Za-z0-9/+=]|$)",
    )
)
