"""Move the feedback of other keys out of the cases that triage completes.

A case opened by the bulk import before the text analysis ran contains all of
its customer's unhappy rows, whatever their topic. Once triage has given
such a case its topic and all its feedback is analysed, ``splits_find``
picks the feedback whose own dedup key differs from the key of the trigger
feedback and that a case rule still matches. If no agent has taken the
case yet, ``links_detach`` and ``feedback_split`` move that feedback to the
open case of its key, or a new one, as ``feedback_evaluate`` would have put
it, with ``feedback_moved`` events on both timelines. A case that an agent
already has keeps such feedback, and ``topics_mixed_record`` lists it in
one ``topics_mixed`` event. ``cases.triage`` calls these steps while it
has locked the cases.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import connection
from django.db.models import Q

from feedback import pgcopy
from feedback.models import Topic

from . import selectors
from .models import Case, CaseEvent, CaseFeedback
from .services import (
    ClaimedFeedback,
    RuleMatch,
    case_dedup_key,
    case_open,
    case_rule_match,
)

if TYPE_CHECKING:
    from .triage import LockedCases

logger = logging.getLogger(__name__)

# The topic name that event bodies give feedback and cases without a topic.
_NO_TOPIC = "no topic"


def splits_find(
    cases: Sequence[Case], locked: LockedCases, trigger_keys: dict[int, str]
) -> list[tuple[Case, list[RuleMatch]]]:
    """Return each case with the rule matches of its feedback whose own key
    differs from the key of its trigger feedback, lowest feedback id first.

    A feedback that no active case rule matches any more stays where it is,
    because ``feedback_evaluate`` would open no case for it.
    """
    differing = []
    for case in cases:
        rows = [
            locked.rows[feedback_id]
            for feedback_id in sorted(locked.links.get(case.pk, ()))
            if feedback_id != case.trigger_feedback_id
        ]
        rows = [
            row for row in rows if case_dedup_key(feedback=row) != trigger_keys[case.pk]
        ]
        if rows:
            differing.append((case, rows))
    if not differing:
        return []

    rules_by_kind = selectors.case_rules_by_kind()
    splits = []
    for case, rows in differing:
        matches = []
        for row in rows:
            match = case_rule_match(feedback=row, rules=rules_by_kind.get(row.kind, []))
            if match is None:
                logger.info(
                    "Feedback %s keeps case %s: no case rule matches it any more",
                    row.pk,
                    case.pk,
                    extra={"feedback_id": row.pk, "case_id": case.pk},
                )
                continue
            matches.append(match)
        if matches:
            splits.append((case, matches))
    return splits


def links_detach(splits: Sequence[tuple[Case, list[RuleMatch]]]) -> None:
    """Delete the links of the feedback that moves out of its case."""
    if not splits:
        return
    if connection.vendor != "postgresql":
        pairs = Q()
        for case, matches in splits:
            pairs |= Q(case_id=case.pk, feedback_id__in=[m.feedback.pk for m in matches])
        CaseFeedback.objects.filter(pairs).delete()
        return
    case_ids = []
    feedback_ids = []
    for case, matches in splits:
        for match in matches:
            case_ids.append(case.pk)
            feedback_ids.append(match.feedback.pk)
    table = connection.ops.quote_name(CaseFeedback._meta.db_table)
    # The pairs travel as two arrays. The ANY condition lets the planner
    # find the links by the feedback index, as in cases.triage._cases_update.
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table} AS link "
            "USING unnest(%s::bigint[], %s::bigint[]) AS moving (case_id, feedback_id) "
            "WHERE link.feedback_id = ANY(%s::bigint[]) "
            "AND link.case_id = moving.case_id AND link.feedback_id = moving.feedback_id",
            [case_ids, feedback_ids, feedback_ids],
        )


def feedback_split(
    splits: Sequence[tuple[Case, list[RuleMatch]]],
    trigger_keys: dict[int, str],
    *,
    now: datetime,
) -> int:
    """Attach the moving feedback to the open case of its key, opening one
    where none exists, and record the move on both cases.

    Returns how many feedback moved.

    ``case_open`` gets the matches in feedback id order. So the lowest id of
    a new key becomes the trigger of its case, in whichever batch it was
    analysed. ``case_open`` writes the links, the ``opened`` and
    ``feedback_attached`` events, the assignments and the ``case.opened``
    webhooks as for any intake. The moving links are already deleted and
    the source cases saved with their new keys, so a moving key never
    resolves to its old case.
    """
    if not splits:
        return 0
    matches = sorted(
        (match for _, case_matches in splits for match in case_matches),
        key=lambda match: match.feedback.pk,
    )
    case_open(matches=matches, now=now)

    keys = {match.feedback.pk: match.dedup_key for match in matches}
    destinations = {
        feedback_id: case_id
        for feedback_id, case_id, dedup_key in CaseFeedback.objects.filter(
            feedback_id__in=pgcopy.in_values(sorted(keys), sql_type="bigint"),
            case__is_open=True,
        ).values_list("feedback_id", "case_id", "case__dedup_key")
        if dedup_key == keys[feedback_id]
    }
    moved: dict[tuple[int, int], list[RuleMatch]] = {}
    for case, case_matches in splits:
        for match in case_matches:
            target_id = destinations[match.feedback.pk]
            moved.setdefault((case.pk, target_id), []).append(match)
    sources = {case.pk: case for case, _ in splits}
    topic_names = _topic_names(
        [case.topic_id for case in sources.values()]
        + [match.feedback.primary_topic_id for match in matches]
    )
    events_insert(
        event
        for (source_id, target_id), moving in sorted(moved.items())
        for event in _moved_events(
            source=sources[source_id],
            target_id=target_id,
            moving=moving,
            source_key=trigger_keys[source_id],
            topic_names=topic_names,
            now=now,
        )
    )
    return len(matches)


def _topic_names(topic_ids: Iterable[int | None]) -> dict[int | None, str]:
    """Map topic ids to their names, and None to "no topic", for event
    bodies."""
    names: dict[int | None, str] = {None: _NO_TOPIC}
    ids = {topic_id for topic_id in topic_ids if topic_id is not None}
    if ids:
        names.update(Topic.objects.filter(pk__in=ids).values_list("pk", "name"))
    return names


def _moved_events(
    *,
    source: Case,
    target_id: int,
    moving: list[RuleMatch],
    source_key: str,
    topic_names: dict[int | None, str],
    now: datetime,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build the ``feedback_moved`` events, with no actor, that a move of
    feedback from one case to another leaves on both timelines, as
    ``events_insert`` rows. All the moving feedback has one key, so one
    topic."""
    feedback_ids = [match.feedback.pk for match in moving]
    listed = ", ".join(f"#{feedback_id}" for feedback_id in feedback_ids)
    topic_id = moving[0].feedback.primary_topic_id
    target_cases = (
        f"case for the topic {topic_names[topic_id]}"
        if topic_id is not None
        else "case for feedback without a topic"
    )
    source_topic = (
        f"the topic {topic_names[source.topic_id]}"
        if source.topic_id is not None
        else _NO_TOPIC
    )
    changes = {
        "feedback_ids": feedback_ids,
        "case": [source.pk, target_id],
        "dedup_key": [source_key, moving[0].dedup_key],
    }
    return (
        {
            "case_id": source.pk,
            "kind": CaseEvent.Kind.FEEDBACK_MOVED,
            "created_at": now,
            "changes": changes,
            "body": (
                f"Feedback {listed} moved to case #{target_id}, the customer's open "
                f"{target_cases}. This case has {source_topic} and got the feedback "
                "before the text analysis found its topic."
            ),
        },
        {
            "case_id": target_id,
            "kind": CaseEvent.Kind.FEEDBACK_MOVED,
            "created_at": now,
            "changes": changes,
            "body": (
                f"Feedback {listed} moved here from case #{source.pk}, which got it "
                "before the text analysis found its topic."
            ),
        },
    )


def topics_mixed_record(
    cases: Sequence[Case],
    locked: LockedCases,
    trigger_keys: dict[int, str],
    *,
    now: datetime,
) -> int:
    """Append a ``topics_mixed`` event, with no actor, to each taken case
    whose feedback is all analysed and partly has other keys than its
    trigger. Returns how many cases got one.

    Triage moves such feedback only out of untouched cases, so a case that
    an agent took before the analysis finished keeps it, and this event
    records that on its timeline. A case gets one such event at most,
    because the caller holds the case locks and the check for an earlier
    event therefore finds the events of other triage calls.
    """
    kept: dict[int, tuple[Case, list[ClaimedFeedback]]] = {}
    for case in cases:
        if not locked.is_complete(case):
            continue
        rows = [
            locked.rows[feedback_id]
            for feedback_id in sorted(locked.links.get(case.pk, ()))
            if feedback_id != case.trigger_feedback_id
            and case_dedup_key(feedback=locked.rows[feedback_id])
            != trigger_keys[case.pk]
        ]
        if rows:
            kept[case.pk] = (case, rows)
    if not kept:
        return 0
    recorded = set(
        CaseEvent.objects.filter(
            case_id__in=sorted(kept), kind=CaseEvent.Kind.TOPICS_MIXED
        ).values_list("case_id", flat=True)
    )
    for case_id in recorded:
        del kept[case_id]
    if not kept:
        return 0

    topic_names = _topic_names(
        [case.topic_id for case, _ in kept.values()]
        + [row.primary_topic_id for _, rows in kept.values() for row in rows]
    )
    events_insert(
        _topics_mixed_event(case=case, rows=rows, topic_names=topic_names, now=now)
        for _, (case, rows) in sorted(kept.items())
    )
    return len(kept)


def _topics_mixed_event(
    *,
    case: Case,
    rows: list[ClaimedFeedback],
    topic_names: dict[int | None, str],
    now: datetime,
) -> dict[str, Any]:
    listed = ", ".join(
        f"#{row.pk} ({topic_names[row.primary_topic_id]})" for row in rows
    )
    return {
        "case_id": case.pk,
        "kind": CaseEvent.Kind.TOPICS_MIXED,
        "created_at": now,
        "changes": {
            "feedback_ids": [row.pk for row in rows],
            "feedback_topic_ids": {str(row.pk): row.primary_topic_id for row in rows},
        },
        "body": (
            f"Feedback {listed} is about other topics than this case "
            f"({topic_names[case.topic_id]}). It stays here because an agent "
            "already had the case when the text analysis finished, and triage "
            "moves feedback only out of cases that no agent has taken. The "
            "workspace cannot move feedback to another case or open a case by "
            "hand, so handle it on this case."
        ),
    }


def events_insert(rows: Iterable[dict[str, Any]]) -> None:
    """Insert case events given as ``{attname: value}``, in order.

    PostgreSQL gets them through COPY, without a bind parameter per value.
    Columns a row leaves out get the field defaults.
    """
    if connection.vendor == "postgresql":
        pgcopy.copy_model_rows(CaseEvent, rows)
        return
    CaseEvent.objects.bulk_create(CaseEvent(**row) for row in rows)
