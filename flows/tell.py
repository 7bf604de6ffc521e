"""The runner's own voice: it tells people, whatever the spec says.

``tell`` posts an outcome change (contained, not contained, a step failed, an approval
requested, rejected or expired) to the incident's Slack thread and Jira issue. Telling never
stops a run: a failure to tell is itself on the timeline and in the run's logs, so it is seen.
"""

from __future__ import annotations

from aisoar.inert import jira_text
from connectors.errors import NotConfigured, Planned
from connectors.jira import SYSTEM as JIRA
from flows.services import Services
from tasks.base import ActionContext
from tasks.incident import announce, failed_to_tell
from tasks.slack import notify


def runner_context(
    svc: Services, incident_id: str, playbook: str, flow_run_id: str | None, step_id: str
) -> ActionContext:
    return ActionContext(
        incident_id=incident_id,
        playbook=playbook,
        step_id=step_id,
        flow_run_id=flow_run_id,
        settings=svc.settings,
        store=svc.store,
        evidence=svc.evidence,
    )


def tell(ctx: ActionContext, message: str, once: str | None = None) -> list[str]:
    """Post ``message`` in the incident's Slack thread (starting it if there is none) and as
    a comment on its Jira issue (where one is open). Returns what was done, for the logs.

    ``once`` names a line said once per run (its end, say): of two executions of one run (a
    runtime that lagged its heartbeat and the one that took its run over), or a run executed
    again, only the first says it; the other finds it in the thread and comments nothing."""
    done: list[str] = []
    try:
        if ctx.links().slack is None:  # announce first (thread, page): the news is a reply in it
            announce(ctx)
        posted = notify(ctx, message, reply=True, once=once or False)
        if posted.get("found"):
            return [f"Slack {posted['channel']}: said already"]
        done.append(f"Slack {posted['channel']}")
    except NotConfigured:
        done.append("Slack not configured")
    except Planned as exc:
        done.append(str(exc))
    except Exception as exc:  # telling must never stop the run; the failure is told instead
        done.append(failed_to_tell(ctx, "Slack", exc))
    issue = ctx.links().jira_key
    if issue is not None:
        try:
            JIRA.client(ctx.settings).add_comment(issue, f"*aisoar:* {jira_text(message, 5000)}")
            done.append(f"Jira {issue}")
        except (NotConfigured, Planned):
            pass
        except Exception as exc:
            done.append(failed_to_tell(ctx, "Jira", exc))
    return done
