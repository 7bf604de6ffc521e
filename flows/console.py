"""What the runtime sets up in the Prefect UI for responders, at every start.

``ensure_saved_searches`` upserts one saved filter on the Runs page of the classic UI (the UI
every aisoar link points into):

* **Awaiting approval**: every flow run whose state is *named* "Awaiting approval" (a
  playbook run suspended at an approval gate, flows/approvals.py; Prefect's state type is
  PAUSED, which Prefect's own "Paused" filter does not match by name), whatever its
  playbook, started in the past ten years (so a run that waits longer than the Runs page's
  default week still shows).

Prefect stores saved searches by name (``PUT /api/saved_searches/`` replaces the filters of
the one with the same name), so starting again, or several runtimes starting at once, leaves
exactly one; a responder who edits it gets it back as it was at the next start. The classic
UI reads a saved search's ``filters`` as ``{object: "flowRun", property, value, type,
operation}`` items: ``state`` takes state names, ``range`` a date range (here a span of
seconds back from now); it sends them as ``flow_runs.state.name.any_`` and
``flow_runs.start_time`` (after/before) to ``/api/flow_runs/paginate``. The UI's own "Save
as" drops the state from what it saves (Prefect 3.9.1), hence this module.

The same filter opens from a plain URL: ``waiting_runs_url(ui)``, the Runs page with the
saved search chosen.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from prefect.client.orchestration import SyncPrefectClient

from flows.approvals import AWAITING_APPROVAL

log = logging.getLogger("aisoar.console")

AWAITING_APPROVAL_SEARCH = "Awaiting approval"
SPAN_SECONDS = 10 * 365 * 24 * 3600  # ten years back from now: no waiting run is left out


def _flow_run_filter(prop: str, value: Any) -> dict[str, Any]:
    return {"object": "flowRun", "property": prop, "value": value, "type": "", "operation": ""}


def saved_searches() -> list[dict[str, Any]]:
    """The saved searches aisoar keeps in the Prefect UI, as ``PUT /api/saved_searches/`` takes them."""
    return [
        {
            "name": AWAITING_APPROVAL_SEARCH,
            "filters": [
                _flow_run_filter("state", [AWAITING_APPROVAL]),
                _flow_run_filter("range", {"type": "span", "seconds": -SPAN_SECONDS}),
            ],
        }
    ]


def ensure_saved_searches(client: SyncPrefectClient) -> list[str]:
    """Create (or put back as aisoar defines them) the saved searches; returns their names.

    A convenience for responders, not a condition for running playbooks: a server that
    refuses (an older Prefect, a Prefect Cloud workspace without the route) is logged and
    the runtime starts anyway."""
    made = []
    for search in saved_searches():
        try:
            client.request("PUT", "/saved_searches/", json=search).raise_for_status()
        except Exception as exc:
            log.warning("could not save the Prefect UI search %r: %s", search["name"], exc)
            continue
        made.append(str(search["name"]))
    return made


def waiting_runs_url(ui: str) -> str:
    """The classic UI's Runs page with the "Awaiting approval" saved search chosen (its query
    is that search's filters; the page selects the saved search they match)."""
    query = urlencode({"seconds": -SPAN_SECONDS, "type": "span", "state": AWAITING_APPROVAL})  # the UI's order
    return f"{ui.rstrip('/')}/runs?{query}"
