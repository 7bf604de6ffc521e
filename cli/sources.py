"""``aisoar sources``: the detection sources, and what a payload would become."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.terminal import Failure, say, table

if TYPE_CHECKING:
    from aisoar.config import Settings
    from aisoar.ingress.sources import Source

app = typer.Typer(help="The detection sources: list them, try a payload on one.", no_args_is_help=True)


def load(settings: Settings) -> dict[str, Source]:
    """Every source, or a Failure that names each wrong file."""
    from aisoar.ingress.sources import SourceError, load_sources

    try:
        return load_sources(settings)
    except SourceError as exc:
        raise Failure(f"the sources are not valid:\n{exc}", code=2) from None


def generated_secrets(settings: Settings) -> dict[str, str]:
    """A secret for every source that has none, and the API token, for a local run."""
    from aisoar.ingress.sources import secret_env_names

    made = {secret_env_names(s.name)[0]: secrets.token_urlsafe(32) for s in load(settings).values() if s.missing}
    if settings.api_token is None:
        made["AISOAR_API_TOKEN"] = secrets.token_urlsafe(32)
    return made


@app.command("list")
def cmd_list() -> int:
    """Each source: its format, how it authenticates, and whether it can take alerts."""
    from aisoar.config import get_settings

    settings = get_settings()
    rows = [
        (
            s.name,
            s.format.name,
            s.spec.auth.scheme.value,
            "ready" if s.missing is None else s.missing,
        )
        for s in load(settings).values()
    ]
    table(("source", "format", "auth", "state"), rows)
    say("each source posts to /webhooks/<source>; its secret: AISOAR_SOURCE_<SOURCE>_SECRET")
    return 0


@app.command("test")
def cmd_test(
    source: Annotated[str, typer.Argument(help="the source's name (aisoar sources list)", show_default=False)],
    file: Annotated[Path, typer.Argument(help="a payload as the source sends it (JSON)", show_default=False)],
    event: Annotated[
        str | None, typer.Option(help="the event header's value, for sources that take one (GitHub: X-GitHub-Event)")
    ] = None,
) -> int:
    """Read FILE as SOURCE would and print the normalised alerts and the playbooks they would
    start. Nothing is stored, sent or started."""
    from aisoar.config import get_settings
    from aisoar.ingress.adapters import PayloadError, read
    from aisoar.ingress.limits import BodyError
    from aisoar.specs import load_specs, route
    from tasks import catalog

    settings = get_settings()
    found = load(settings).get(source)
    if found is None:
        raise Failure(f"no source '{source}'; `aisoar sources list` shows them", code=2)
    try:
        body = file.read_bytes()
    except OSError as exc:
        raise Failure(f"cannot read {file}: {exc.strerror or exc}", code=2) from exc
    headers = {}
    mapping = found.format.mapping
    if mapping is not None and mapping.event is not None:
        headers[mapping.event.header.lower()] = event or mapping.event.accept[0]
    try:
        reading = read(found.format, found.name, body, headers)
    except BodyError as exc:
        raise Failure(f"{file}: {exc}") from None
    except PayloadError as exc:
        problems = "\n".join(f"  {'.'.join(map(str, e['loc'])) or '(body)'}: {e['msg']}" for e in exc.errors)
        raise Failure(f"{file} does not fit source '{source}':\n{problems}") from None
    if reading.ignored is not None:
        say(f"ignored: {reading.ignored}")
        return 0
    specs = [item.spec for item in load_specs(settings.specs_dir, catalog())]
    for alert in reading.alerts:
        routing = route(specs, alert)
        starts = "resolved: no playbook starts" if alert.state == "resolved" else None
        shown = alert.model_dump(mode="json", exclude={"raw", "id", "received_at", "raw_sha256"})
        say(json.dumps(shown, indent=2, ensure_ascii=False))
        if starts is None:
            starts = "would start: " + (", ".join(routing.names) or "nothing")
            note = routing.note(alert)
            if note is not None:
                starts += f" ({note})"
        say(starts)
    return 0
