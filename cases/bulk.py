"""Set-based case evaluation of a chunk stored by the bulk import, on
PostgreSQL.

``feedback.bulk`` leaves the chunk's new feedback in the temporary table
``CHUNK_TABLE``. This module matches it against the case rules, opens one
case per new dedup key, attaches the rest and writes the links and timeline
events, each step one statement over the whole chunk. Python decides only
what depends on a handful of values, with the same functions as
``case_open``: the rule and its reason per (kind, score), the routing per
touchpoint, and the SLA policy and due times per (team, priority). Apart
from the agent, the result equals what ``feedback_evaluate`` writes for
the same rows, which the tests compare.

The rows have no topic yet, because the analysis follows on the workers.
So cases are keyed on the customer with topic 0 and routed by touchpoint.
They open without an agent: ``cases.triage`` sets the topic once it is
known, routes the case again and then assigns it, so that an agent of the
touchpoint's team does not keep a case that belongs to another team.
"""

import logging
from datetime import datetime

from django.db import IntegrityError, connection

from feedback.models import Feedback

from .escalation import case_sla_apply
from .models import Case, CaseEvent, CaseFeedback, CaseRule
from . import selectors
from .services import (
    ClaimedFeedback,
    EvaluationResult,
    case_route,
    case_rule_match,
    kinds_decided_by_score,
)
from .workflow import _cases_resume_waiting

logger = logging.getLogger(__name__)

CHUNK_TABLE = "oscm_import_chunk"
_MATCH_TABLE = "oscm_import_match"
# The assignment reason of a case opened before its text was analysed.
AWAITING_TRIAGE = (
    "waiting for the text analysis, which routes the case by topic and then assigns it"
)
_OPENED_TABLE = "oscm_import_opened"

# Columns the INSERT of new cases sets from the chunk. Every other column
# gets its model default.
_CASE_SET = (
    "customer_id",
    "trigger_feedback_id",
    "team_id",
    "assignee_id",
    "state",
    "priority",
    "is_open",
    "dedup_key",
    "rule_id",
    "rule_reason",
    "routing_rule_id",
    "routing_reason",
    "assignment_reason",
    "opened_at",
    "updated_at",
    "sla_policy_id",
    "first_response_due_at",
    "resolution_due_at",
)


def kinds_evaluated_at_intake(rules: dict[str, list[CaseRule]] | None = None) -> set[str]:
    """Return the kinds whose rows are evaluated while they are stored.

    Those are the kinds whose rules decide on the score alone, text
    excepted. A kind with a rule that reads the sentiment, and text, waits
    for the analysis.
    """
    rules = selectors.case_rules_by_kind() if rules is None else rules
    decided = kinds_decided_by_score(rules)
    return {
        str(kind)
        for kind in Feedback.Kind.values
        if kind != Feedback.Kind.TEXT and (kind in decided or kind not in rules)
    }


def _rule_table(rules: dict[str, list[CaseRule]]) -> list[tuple]:
    """Return (kind, score or -1, rule id, priority, reason) for every score
    a case rule matches, worked out by ``case_rule_match`` itself."""
    table = []
    for kind in kinds_evaluated_at_intake(rules):
        kind_rules = rules.get(kind)
        if not kind_rules:
            continue
        low, high = Feedback.SCORE_RANGES[kind]
        for score in [None, *range(low, high + 1)]:
            probe = ClaimedFeedback(0, None, kind, score, None, "", None)
            match = case_rule_match(feedback=probe, rules=kind_rules)
            if match:
                table.append(
                    (kind, -1 if score is None else score, match.rule.pk, match.rule.priority, match.reason)
                )
    return table


def _columns(rows: list[tuple], count: int) -> list[list]:
    return [[row[index] for row in rows] for index in range(count)]


def cases_open_for_chunk(
    *, now: datetime, rules: dict[str, list[CaseRule]] | None = None
) -> EvaluationResult:
    """Evaluate the rows of ``CHUNK_TABLE`` that carry ``evaluated_at``.

    ``rules`` are the active case rules by kind, read here if not given.
    Must run in the transaction that stored the rows.
    """
    if rules is None:
        rules = selectors.case_rules_by_kind()
    quote = connection.ops.quote_name
    cases = quote(Case._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {_MATCH_TABLE} ("
            "feedback_id bigint, customer_id bigint, touchpoint text, rule_id bigint, "
            "priority integer, reason text, dedup_key text COLLATE \"C\", case_id bigint"
            ") ON COMMIT DELETE ROWS"
        )
        cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {_OPENED_TABLE} ("
            "id bigint, trigger_feedback_id bigint, state text, team_id bigint, "
            "assignee_id bigint, priority integer, rule_reason text"
            ") ON COMMIT DELETE ROWS"
        )
        cursor.execute(f"SELECT count(*) FROM {CHUNK_TABLE} WHERE evaluated_at IS NOT NULL")
        evaluated = cursor.fetchone()[0]
        table = _rule_table(rules)
        if not evaluated or not table:
            return EvaluationResult(evaluated=evaluated)
        kinds, scores, rule_ids, priorities, reasons = _columns(table, 5)
        cursor.execute(
            f"INSERT INTO {_MATCH_TABLE} "
            f"SELECT m.*, c.id FROM ("
            f"SELECT f.id AS feedback_id, f.customer_id, f.touchpoint, r.rule_id, r.priority, "
            f"r.reason, CASE WHEN f.customer_id IS NULL THEN 'f' || f.id "
            f"ELSE 'c' || f.customer_id || ':t0' END AS dedup_key "
            f"FROM {CHUNK_TABLE} f JOIN unnest(%s::text[], %s::int[], %s::bigint[], "
            f"%s::int[], %s::text[]) AS r (kind, score, rule_id, priority, reason) "
            f"ON r.kind = f.kind AND r.score = coalesce(f.score, -1) "
            f"WHERE f.evaluated_at IS NOT NULL) m "
            f"LEFT JOIN {cases} c ON c.is_open AND c.dedup_key = m.dedup_key",
            [kinds, scores, rule_ids, priorities, reasons],
        )
        matched = cursor.rowcount
        if not matched:
            return EvaluationResult(evaluated=evaluated)
        _open_cases_hold(cursor)
        opened = _cases_insert(cursor, now=now)
        attached = matched - len(opened)
        _links_and_events(cursor, now=now)

    if opened:
        from .webhooks import case_webhook_payload, webhook_events_emit

        def payloads():
            # A generator function, so the cases are only loaded when an
            # endpoint listens and the emit starts reading.
            for case in Case.objects.filter(pk__in=[row[0] for row in opened]):
                yield case.pk, "opened", case_webhook_payload(case)

        webhook_events_emit(event="case.opened", items=payloads())
    logger.info(
        "Evaluated %d imported feedback: %d cases opened, %d attached",
        evaluated,
        len(opened),
        attached,
        extra={
            "feedback_evaluated": evaluated,
            "cases_opened": len(opened),
            "feedback_attached": attached,
        },
    )
    return EvaluationResult(evaluated=evaluated, cases_opened=len(opened), attached=attached)


def _open_cases_hold(cursor) -> None:
    """Keep the open cases that the matches attach to from closing until
    the chunk commits.

    FOR KEY SHARE makes an agent's resolve or close (which locks the case
    FOR UPDATE) wait for this transaction, and lets triage, assignment and
    other chunks' updates through. A case that closed between the match
    and the lock no longer counts: its matches open a new case instead.
    """
    quote = connection.ops.quote_name
    cases = quote(Case._meta.db_table)
    cursor.execute(
        f"SELECT id FROM {cases} WHERE id IN (SELECT case_id FROM {_MATCH_TABLE}) "
        f"ORDER BY id FOR KEY SHARE"
    )
    cursor.execute(
        f"UPDATE {_MATCH_TABLE} m SET case_id = NULL FROM {cases} c "
        f"WHERE c.id = m.case_id AND NOT c.is_open"
    )


_FIRSTS = (
    f"SELECT DISTINCT ON (dedup_key) * FROM {_MATCH_TABLE} WHERE case_id IS NULL "
    f"ORDER BY dedup_key, feedback_id"
)


def _cases_insert(cursor, *, now: datetime) -> list[tuple]:
    """Open a case per dedup key that has none and return (id, team).

    The cases open new and unassigned; ``cases.triage`` assigns them.

    A key that another transaction opened first is skipped by ``ON
    CONFLICT`` and its feedback attaches to that case afterwards.
    """
    cursor.execute(
        f"SELECT touchpoint, priority, count(*) FROM ({_FIRSTS}) f GROUP BY 1, 2"
    )
    groups = cursor.fetchall()
    if not groups:
        return []
    routes = _routes({touchpoint for touchpoint, _, _ in groups})
    slas = _due_times(
        {(routes[touchpoint][0], priority) for touchpoint, priority, _ in groups}, now=now
    )

    defaults = {
        field.column: field.get_default()
        for field in Case._meta.concrete_fields
        if not field.primary_key and field.attname not in _CASE_SET
    }
    quote = connection.ops.quote_name
    cases = quote(Case._meta.db_table)
    default_columns = "".join(f", {quote(column)}" for column in defaults)
    default_values = "".join(", %s" for _ in defaults)
    route_rows = [(touchpoint, *route) for touchpoint, route in routes.items()]
    sla_rows = [(*key, *value) for key, value in slas.items()]
    cursor.execute(
        f"WITH routed AS ("
        f"SELECT f.*, r.team_id, r.routing_rule_id, r.routing_reason "
        f"FROM ({_FIRSTS}) f JOIN unnest(%s::text[], %s::bigint[], %s::bigint[], %s::text[]) "
        f"AS r (touchpoint, team_id, routing_rule_id, routing_reason) "
        f"ON r.touchpoint = f.touchpoint), "
        f"inserted AS ("
        f"INSERT INTO {cases} ({', '.join(_CASE_SET)}{default_columns}) "
        f"SELECT n.customer_id, n.feedback_id, n.team_id, NULL, %s, n.priority, "
        f"true, n.dedup_key, n.rule_id, n.reason, n.routing_rule_id, n.routing_reason, "
        f"%s, %s, %s, s.policy_id, s.first_response_due_at, s.resolution_due_at"
        f"{default_values} "
        f"FROM routed n LEFT JOIN unnest(%s::bigint[], %s::int[], %s::bigint[], %s::timestamptz[], "
        f"%s::timestamptz[]) AS s (team_id, priority, policy_id, first_response_due_at, "
        f"resolution_due_at) ON s.team_id = n.team_id AND s.priority = n.priority "
        f"ORDER BY n.dedup_key "
        f'ON CONFLICT ("dedup_key") WHERE "is_open" DO NOTHING '
        f"RETURNING id, trigger_feedback_id, state, team_id, assignee_id, priority, "
        f"rule_reason) "
        f"INSERT INTO {_OPENED_TABLE} SELECT * FROM inserted",
        [
            *_columns(route_rows, 4),
            Case.State.NEW,
            AWAITING_TRIAGE,
            now,
            now,
            *list(defaults.values()),
            *_columns(sla_rows, 5),
        ],
    )
    cursor.execute(f"SELECT id, team_id FROM {_OPENED_TABLE} ORDER BY trigger_feedback_id")
    opened = cursor.fetchall()
    if sum(count for _, _, count in groups) > len(opened):
        logger.warning(
            "Case insert skipped %d dedup keys opened concurrently; attaching instead",
            sum(count for _, _, count in groups) - len(opened),
        )
    return opened


def _routes(touchpoints: set[str]) -> dict[str, tuple[int, int | None, str]]:
    """Route a case without a topic from each touchpoint, as ``case_open`` does."""
    rules, fallback_team = selectors.routing_rules_active()
    routes = {}
    for touchpoint in touchpoints:
        decision = case_route(
            topic_id=None, touchpoint=touchpoint, rules=rules, fallback_team=fallback_team
        )
        routes[touchpoint] = (
            decision.team.pk,
            decision.rule.pk if decision.rule else None,
            decision.reason,
        )
    return routes


def _due_times(
    keys: set[tuple[int, int]], *, now: datetime
) -> dict[tuple[int, int], tuple]:
    """Return (policy id, first response due, resolution due) per (team, priority)."""
    probes = {
        key: Case(team_id=key[0], priority=key[1], topic_id=None, opened_at=now)
        for key in keys
    }
    case_sla_apply(cases=list(probes.values()), now=now)
    return {
        key: (case.sla_policy_id, case.first_response_due_at, case.resolution_due_at)
        for key, case in probes.items()
    }


def _links_and_events(cursor, *, now: datetime) -> None:
    """Link every match to the open case of its key and record the events.

    ``opened`` comes for the new cases, then ``feedback_attached`` for the
    rest. Waiting cases that got feedback resume.
    """
    quote = connection.ops.quote_name
    cases = quote(Case._meta.db_table)
    links = quote(CaseFeedback._meta.db_table)
    events = quote(CaseEvent._meta.db_table)
    cursor.execute(
        f"UPDATE {_MATCH_TABLE} m SET case_id = c.id FROM {cases} c "
        f"WHERE m.case_id IS NULL AND c.is_open AND c.dedup_key = m.dedup_key"
    )
    cursor.execute(f"SELECT dedup_key FROM {_MATCH_TABLE} WHERE case_id IS NULL LIMIT 5")
    missing = [row[0] for row in cursor.fetchall()]
    if missing:
        # The case that won the key was closed between the INSERT and now.
        raise IntegrityError(
            f"Case insert conflicted on dedup keys {missing}, but no open case "
            "has them any more. The chunk rolls back; import the file again."
        )

    cursor.execute(
        f"INSERT INTO {links} (case_id, feedback_id, attached_at) "
        f"SELECT case_id, feedback_id, %s FROM {_MATCH_TABLE} ORDER BY feedback_id",
        [now],
    )

    event_defaults = {
        field.column: field.get_default()
        for field in CaseEvent._meta.concrete_fields
        if not field.primary_key
        and field.attname not in ("case_id", "kind", "changes", "body", "created_at")
    }
    default_columns = "".join(f", {quote(column)}" for column in event_defaults)
    default_values = "".join(", %s" for _ in event_defaults)
    cursor.execute(
        f"INSERT INTO {events} (case_id, kind, changes, body, created_at{default_columns}) "
        f"SELECT id, %s, jsonb_build_object("
        f"'state', jsonb_build_array(NULL, state), 'team', jsonb_build_array(NULL, team_id), "
        f"'assignee', jsonb_build_array(NULL, assignee_id), "
        f"'priority', jsonb_build_array(NULL, priority)), rule_reason, %s{default_values} "
        f"FROM {_OPENED_TABLE} ORDER BY trigger_feedback_id",
        [CaseEvent.Kind.OPENED, now, *event_defaults.values()],
    )
    cursor.execute(
        f"INSERT INTO {events} (case_id, kind, changes, body, created_at{default_columns}) "
        f"SELECT m.case_id, %s, jsonb_build_object('feedback', jsonb_build_array(NULL, "
        f"m.feedback_id)), '', %s{default_values} FROM {_MATCH_TABLE} m "
        f"WHERE NOT EXISTS (SELECT 1 FROM {_OPENED_TABLE} o "
        f"WHERE o.trigger_feedback_id = m.feedback_id) ORDER BY m.feedback_id",
        [CaseEvent.Kind.FEEDBACK_ATTACHED, now, *event_defaults.values()],
    )

    # Cases of earlier chunks or other writers that got feedback now. The
    # waiting ones resume, and all of them count as updated.
    touched = (
        f"SELECT DISTINCT m.case_id FROM {_MATCH_TABLE} m "
        f"WHERE NOT EXISTS (SELECT 1 FROM {_OPENED_TABLE} o WHERE o.id = m.case_id)"
    )
    cursor.execute(
        f"SELECT c.id FROM {cases} c WHERE c.id IN ({touched}) AND c.state = %s",
        [Case.State.WAITING],
    )
    waiting = {row[0] for row in cursor.fetchall()}
    resumed = _cases_resume_waiting(case_ids=waiting, now=now)
    # Locked in id order, as the triage and the workflow lock cases, so
    # that this UPDATE and theirs take shared cases in the same order.
    cursor.execute(
        f"UPDATE {cases} SET updated_at = %s WHERE id IN ("
        f"SELECT id FROM {cases} WHERE id IN ({touched}) ORDER BY id FOR UPDATE)",
        [now],
    )
    if resumed:
        CaseEvent.objects.bulk_create(resumed)
