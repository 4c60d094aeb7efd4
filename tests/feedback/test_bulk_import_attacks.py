"""The PostgreSQL import path under concurrent writers and awkward files."""

import threading
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connections, transaction
from django.utils import timezone

from feedback import bulk
from feedback.intake import validate_item
from feedback.models import Customer, Feedback
# The PostgreSQL-only skip and the fixture that leaves rows unanalysed.
from tests.feedback.test_bulk_import import _postgresql_only, no_analysis  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


def _items(external_ids: list[str], *, customers: list[str] | None = None):
    now = timezone.now()
    defaults = {"kind": "nps", "source": "survey", "language": ""}
    customers = customers or [""] * len(external_ids)
    return [
        validate_item(
            {
                "external_id": external_id,
                "customer": customer,
                "score": "9",
                "comment": f"answer {external_id}",
            },
            defaults=defaults,
            now=now,
        )
        for external_id, customer in zip(external_ids, customers)
    ]


def _hold_then_insert(create, keys: tuple[str, str], holding_first, errors) -> None:
    """Insert ``keys`` in one transaction of another connection, pausing
    after each so that the test's writer runs into them uncommitted."""
    try:
        with transaction.atomic():
            for key in keys:
                create(key)
                holding_first.set()
                time.sleep(0.5)
    except Exception as error:  # handed to the test thread
        errors.append(error)
    finally:
        connections.close_all()


def test_chunks_lock_shared_keys_in_one_order(no_analysis, monkeypatch):
    # Another writer inserts key "a", and key "b" before it commits. A
    # chunk that lists "b" before "a" would insert "b" and then wait on
    # "a", and the two writers would deadlock.
    holding_first = threading.Event()
    errors = []
    thread = threading.Thread(
        target=_hold_then_insert,
        args=(
            lambda key: Feedback.objects.create(
                external_id=key, source="survey", kind="nps", score=9, comment=f"answer {key}"
            ),
            ("a", "b"),
            holding_first,
            errors,
        ),
    )
    writes = []
    real_write = bulk._chunk_write

    def counted_write(items, customer_ids, *, now):
        writes.append(len(items))
        return real_write(items, customer_ids, now=now)

    monkeypatch.setattr(bulk, "_chunk_write", counted_write)
    thread.start()
    holding_first.wait(timeout=5)
    result, _ = bulk.feedback_store_chunk(inputs=_items(["b", "a"]), now=timezone.now())
    thread.join()

    assert errors == []
    assert writes == [2]
    assert result.duplicate_count == 2
    assert Feedback.objects.count() == 2


def test_new_customers_locked_in_one_order(no_analysis):
    # As above, for the customers a chunk creates in a transaction of its own.
    holding_first = threading.Event()
    errors = []
    thread = threading.Thread(
        target=_hold_then_insert,
        args=(
            lambda key: Customer.objects.create(external_id=key),
            ("ca", "cb"),
            holding_first,
            errors,
        ),
    )
    thread.start()
    holding_first.wait(timeout=5)
    result, _ = bulk.feedback_store_chunk(
        inputs=_items(["x1", "x2"], customers=["cb", "ca"]), now=timezone.now()
    )
    thread.join()

    assert errors == []
    assert result.created_count == 2
    assert Customer.objects.count() == 2


def _import(path) -> str:
    """Import an NPS file and return the summary line."""
    out = StringIO()
    call_command(
        "import_feedback", str(path), "--source", "survey", "--kind", "nps",
        "--no-progress", stdout=out, stderr=StringIO(),
    )
    return out.getvalue().strip()


def test_jsonl_lone_surrogate_rejects_row(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text(
        '{"external_id": "s1", "score": 3, "comment": "ok", "product": "\\ud800"}\n'
        '{"external_id": "s2", "score": 3, "comment": "smile \\ud83d\\ude00"}\n',
        encoding="utf-8",
    )
    assert _import(path) == "imported 1, duplicates 0, rejected 1"
    rejected = (tmp_path / "answers.jsonl.rejected.csv").read_text(encoding="utf-8")
    assert "surrogate" in rejected
    assert Feedback.objects.get().comment == "smile \U0001f600"


def test_email_too_long_rejects_row(tmp_path):
    local = "a" * 60
    long_email = f"{local}.{local}.{local}.{local}@example.com"  # 255 characters
    customer_email = f"{local}.{local}.{local}@example.com"  # 194 characters
    key_email = f"{local}.{local}.{local}.abcdefgh@example.com"  # 203 characters
    path = tmp_path / "answers.csv"
    path.write_text(
        "external_id,customer,email,score\n"
        f"e1,c1,{long_email},3\n"
        f"e2,,{key_email},3\n"
        f"e3,,{customer_email},3\n"
        f"e4,c4,{key_email},3\n",
        encoding="utf-8",
    )
    assert _import(path) == "imported 2, duplicates 0, rejected 2"
    rejected = (tmp_path / "answers.csv.rejected.csv").read_text(encoding="utf-8")
    assert "email is 255 characters long; the maximum is 254." in rejected
    assert "email is 203 characters long" in rejected


def _close_elsewhere(case_id: int, errors: list) -> None:
    """Close the case in a transaction of another connection, as an agent's
    resolve would, and commit."""
    from cases.models import Case

    try:
        with transaction.atomic():
            Case.objects.filter(pk=case_id).update(
                state=Case.State.CLOSED, is_open=False, closed_at=timezone.now()
            )
    except Exception as error:  # handed to the test thread
        errors.append(error)
    finally:
        connections.close_all()


def test_case_closed_during_chunk_gets_no_feedback(no_analysis, monkeypatch):
    from cases import bulk as case_bulk
    from cases.models import Case, CaseFeedback

    first = _items(["r1"], customers=["c1"])
    first[0].score = 1
    bulk.feedback_store_chunk(inputs=first, now=timezone.now())
    closing = Case.objects.get()

    # The agent closes the case after the chunk matched its new row to it
    # and before the chunk locks the case.
    real_hold = case_bulk._open_cases_hold
    errors = []

    def close_then_hold(cursor):
        thread = threading.Thread(target=_close_elsewhere, args=(closing.pk, errors))
        thread.start()
        thread.join()
        real_hold(cursor)

    monkeypatch.setattr(case_bulk, "_open_cases_hold", close_then_hold)
    later = _items(["r2"], customers=["c1"])
    later[0].score = 2
    _, evaluation = bulk.feedback_store_chunk(inputs=later, now=timezone.now())

    assert errors == []
    assert evaluation.cases_opened == 1
    assert evaluation.attached == 0
    assert CaseFeedback.objects.filter(case=closing).count() == 1
    new_case = Case.objects.get(is_open=True)
    assert new_case.trigger_feedback.external_id == "r2"
