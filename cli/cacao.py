"""``aisoar cacao``: playbook specs as OASIS CACAO 2.0 playbooks, and back (aisoar/cacao.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cli.terminal import Failure, say

app = typer.Typer(help="Playbook specs as OASIS CACAO 2.0 playbooks: export them, import one.", no_args_is_help=True)


@app.command("export")
def cmd_export(
    names: Annotated[list[str] | None, typer.Argument(help="playbook names (default: every playbook)")] = None,
    out: Annotated[
        Path | None, typer.Option(help="write <name>.cacao.json files into this folder (default: print one)")
    ] = None,
) -> int:
    """Export playbook specs as CACAO 2.0 JSON."""
    from aisoar.cacao import export_spec
    from aisoar.config import get_settings
    from aisoar.specs import SpecError, load_specs
    from tasks import catalog

    try:
        specs = {item.spec.name: item.spec for item in load_specs(get_settings().specs_dir, catalog())}
    except SpecError as exc:
        raise Failure(f"the playbook specs do not validate (`aisoar validate`):\n{exc}", code=2) from None
    wanted = names or sorted(specs)
    unknown = [name for name in wanted if name not in specs]
    if unknown:
        raise Failure(f"no playbook named {', '.join(unknown)}; known: {', '.join(sorted(specs))}", code=2)
    if out is None and len(wanted) > 1:
        raise Failure("several playbooks: give --out DIR (or name one playbook to print it)", code=2)
    for name in wanted:
        text = json.dumps(export_spec(specs[name], catalog()), indent=2, ensure_ascii=False)
        if out is None:
            say(text)
            continue
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.cacao.json").write_text(text + "\n", encoding="utf-8")
        say(f"{out / f'{name}.cacao.json'}")
    return 0


@app.command("import")
def cmd_import(
    file: Annotated[Path, typer.Argument(help="a CACAO 2.0 playbook (JSON)", show_default=False)],
    out: Annotated[
        Path | None, typer.Option(help="write <name>.yaml into this folder, e.g. playbook_specs (default: print it)")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="replace a spec file of the same name")] = False,
) -> int:
    """Import a CACAO 2.0 playbook as a spec, refusing (with the reasons) what aisoar cannot run."""
    import yaml

    from aisoar.cacao import CacaoRefused, import_playbook
    from tasks import catalog

    try:
        document = json.loads(file.read_bytes())
    except OSError as exc:
        raise Failure(f"cannot read {file}: {exc.strerror or exc}", code=2) from None
    except ValueError as exc:
        raise Failure(f"{file} is not JSON: {exc}", code=2) from None
    try:
        spec = import_playbook(document, catalog(), file.name)
    except CacaoRefused as exc:
        reasons = "\n".join(f"  - {reason}" for reason in exc.reasons)
        raise Failure(f"{file}: not imported, aisoar cannot run it safely:\n{reasons}", code=2) from None
    data = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)
    if out is None:
        say(text.rstrip("\n"))
        return 0
    target = out / f"{spec.name}.yaml"
    if target.exists() and not force:
        raise Failure(f"{target} exists; --force replaces it", code=2)
    out.mkdir(parents=True, exist_ok=True)
    target.write_text(f"# Imported from CACAO 2.0 ({file.name}).\n{text}", encoding="utf-8")
    say(f"{target} (run `aisoar validate`)")
    return 0
