import csv
import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from cases.models import Case
from feedback.models import Customer, Feedback, MetricRollup

pytestmark = pytest.mark.django_db(transaction=True)


def run_import(path: Path, *args: str) -> str:
    out, err = StringIO(), StringIO()
    call_command("import_feedback", str(path), *args, "--no-progress", stdout=out, stderr=err)
    return out.getvalue().strip()


def write(tmp_path: Path, text: str, name: str = "feedback.csv", newline: str = "\n") -> Path:
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


def rejected_rows(path: Path) -> list[dict]:
    report = path.with_name(path.name + ".rejected.csv")
    with open(report, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        return list(csv.DictReader(handle))


def test_import_summary_line_and_rows(tmp_path):
    path = write(
        tmp_path,
        "external_id,customer,score,comment,occurred_at,touchpoint\n"
        "a1,c1,2,Parcel came late,2026-11-01T10:00:00,delivery\n"
        "a2,c2,10,Lovely,2026-11-02,checkout\n",
    )
    assert run_import(path, "--source", "survey", "--kind", "nps") == (
        "imported 2, duplicates 0, rejected 0"
    )
    feedback = Feedback.objects.get(external_id="a1")
    assert feedback.score == 2
    assert feedback.customer.external_id == "c1"
    assert feedback.touchpoint == "delivery"
    assert feedback.raw["comment"] == "Parcel came late"
    assert feedback.evaluated_at is not None


def test_import_twice_counts_duplicates(tmp_path):
    path = write(tmp_path, "external_id,score\nx1,3\nx2,9\nx1,3\n")
    assert run_import(path, "--source", "survey", "--kind", "nps") == (
        "imported 2, duplicates 1, rejected 0"
    )
    assert run_import(path, "--source", "survey", "--kind", "nps") == (
        "imported 0, duplicates 3, rejected 0"
    )
    assert Feedback.objects.count() == 2
    assert sum(MetricRollup.objects.filter(topic_key=0).values_list("count", flat=True)) == 2
    assert Case.objects.count() == 1


def test_import_without_id_column_is_idempotent(tmp_path):
    path = write(tmp_path, "score,comment\n5,bagus\n5,bagus\n1,jelek\n")
    assert run_import(path, "--source", "review", "--kind", "rating") == (
        "imported 3, duplicates 0, rejected 0"
    )
    assert run_import(path, "--source", "review", "--kind", "rating") == (
        "imported 0, duplicates 3, rejected 0"
    )


def test_import_rejects_bad_rows_keeps_valid(tmp_path):
    path = write(
        tmp_path,
        "external_id,score,comment,occurred_at\n"
        "r1,11,too high,\n"
        "r2,4.5,half,\n"
        "r3,,,\n"
        "r4,7,fine,\n"
        "r5,8,bad date,yesterday\n",
    )
    assert run_import(path, "--source", "survey", "--kind", "nps") == (
        "imported 1, duplicates 0, rejected 4"
    )
    rows = rejected_rows(path)
    assert [row["external_id"] for row in rows] == ["r1", "r2", "r3", "r5"]
    assert rows[0]["reason"] == "score 11 is outside the nps range 0-10."
    assert "not a whole number" in rows[1]["reason"]
    assert "neither a score nor a comment" in rows[2]["reason"]
    assert "not an ISO 8601" in rows[3]["reason"]
    assert rows[0]["row"] == "1"
    assert Feedback.objects.filter(external_id="r4").exists()


def test_import_bom_crlf_quoted_newlines_emoji_long_comment(tmp_path):
    long_comment = "é" * 10_000
    text = (
        "\ufeffexternal_id,score,comment\n"
        'b1,1,"line one\nline two, with comma"\n'
        "b2,5,\n"
        "b3,2,Terrible 😡👎\n"
        f"b4,3,{long_comment}\n"
    )
    path = write(tmp_path, text, newline="\r\n")
    assert run_import(path, "--source", "review", "--kind", "rating") == (
        "imported 4, duplicates 0, rejected 0"
    )
    assert Feedback.objects.get(external_id="b1").comment == "line one\r\nline two, with comma"
    assert Feedback.objects.get(external_id="b2").comment == ""
    assert Feedback.objects.get(external_id="b3").comment == "Terrible 😡👎"
    assert len(Feedback.objects.get(external_id="b4").comment) == 10_000


def test_import_map_date_format_delimiter_language(tmp_path):
    path = write(
        tmp_path,
        "id;nota;texto;data\n1;1;entrega atrasada;11/04/2018 20:09\n",
    )
    summary = run_import(
        path, "--source", "review", "--kind", "rating",
        "--map", "external_id=id", "--map", "score=nota", "--map", "comment=texto",
        "--map", "occurred_at=data", "--delimiter", ";", "--date-format", "%d/%m/%Y %H:%M",
        "--language", "pt",
    )
    assert summary == "imported 1, duplicates 0, rejected 0"
    feedback = Feedback.objects.get(external_id="1")
    assert feedback.language == "pt"
    assert feedback.occurred_at.isoformat() == "2018-04-11T20:09:00+00:00"


def test_import_semicolon_file_without_delimiter_gets_a_hint(tmp_path):
    path = write(tmp_path, "id;nota;texto\n1;1;entrega atrasada\n")
    with pytest.raises(CommandError, match="pass --delimiter ';'"):
        run_import(
            path, "--source", "review", "--kind", "rating",
            "--map", "external_id=id", "--map", "score=nota",
        )


def test_import_map_joins_columns(tmp_path):
    path = write(tmp_path, "row,Title,Review Text,Rating\n7,Too small,Runs two sizes small,2\n")
    run_import(
        path, "--source", "review", "--kind", "rating",
        "--map", "external_id=row", "--map", "comment=Title+Review Text", "--map", "score=Rating",
    )
    assert Feedback.objects.get(external_id="7").comment == "Too small\nRuns two sizes small"


def test_import_jsonl(tmp_path):
    lines = [
        json.dumps({"external_id": "j1", "score": 0, "comment": "awful", "customer": "k1"}),
        "",
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"external_id": "j2", "score": 10}),
    ]
    path = write(tmp_path, "\n".join(lines) + "\n", name="feedback.jsonl")
    assert run_import(path, "--source", "survey", "--kind", "nps") == (
        "imported 2, duplicates 0, rejected 2"
    )
    reasons = [row["reason"] for row in rejected_rows(path)]
    assert reasons[0].startswith("line is not valid JSON")
    assert reasons[1] == "line is not a JSON object"
    assert Customer.objects.filter(external_id="k1").exists()


def test_import_non_utf8_row_rejected(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(b"external_id,score,comment\nl1,3,ok\nl2,2,caf\xe9\n")
    assert run_import(path, "--source", "survey", "--kind", "csat") == (
        "imported 1, duplicates 0, rejected 1"
    )
    assert "not UTF-8" in rejected_rows(path)[0]["reason"]


def test_import_field_count_mismatch_rejected(tmp_path):
    path = write(tmp_path, "external_id,score,comment\nm1,3,a,b\nm2,4,fine\n")
    assert run_import(path, "--source", "survey", "--kind", "csat") == (
        "imported 1, duplicates 0, rejected 1"
    )
    assert "has 4 fields but the header has 3" in rejected_rows(path)[0]["reason"]


def test_import_all_rows_rejected_still_succeeds(tmp_path):
    path = write(tmp_path, "external_id,score\nz1,99\n")
    assert run_import(path, "--source", "survey", "--kind", "nps") == (
        "imported 0, duplicates 0, rejected 1"
    )


def test_import_fails_when_nothing_readable(tmp_path):
    with pytest.raises(CommandError, match="cannot open"):
        run_import(tmp_path / "missing.csv", "--source", "survey", "--kind", "nps")
    empty = write(tmp_path, "", name="empty.csv")
    with pytest.raises(CommandError, match="the file is empty"):
        run_import(empty, "--source", "survey", "--kind", "nps")
    path = write(tmp_path, "id,score\n1,3\n")
    with pytest.raises(CommandError, match="column 'nope' \\(mapped to comment\\) is not in the file"):
        run_import(path, "--source", "survey", "--kind", "nps", "--map", "comment=nope")
    with pytest.raises(CommandError, match="--map field 'rating' is unknown"):
        run_import(path, "--source", "survey", "--kind", "nps", "--map", "rating=score")
    assert Feedback.objects.count() == 0


def test_import_removes_stale_rejected_report(tmp_path):
    path = write(tmp_path, "external_id,score\ns1,99\n")
    run_import(path, "--source", "survey", "--kind", "nps")
    report = path.with_name(path.name + ".rejected.csv")
    assert report.exists()
    path.write_text("external_id,score\ns1,9\n")
    run_import(path, "--source", "survey", "--kind", "nps")
    assert not report.exists()


def test_import_unterminated_quote_rejected(tmp_path):
    path = write(tmp_path, 'external_id,score,comment\nq0,3,fine\nq1,1,"never closed\nq2,2,next\n')
    assert run_import(path, "--source", "survey", "--kind", "csat") == (
        "imported 2, duplicates 0, rejected 1"
    )
    assert "cannot be read as CSV" in rejected_rows(path)[0]["reason"]


def test_import_nul_byte_rejects_only_that_row(tmp_path):
    path = write(tmp_path, "external_id,score,comment\nn1,3,bad\x00text\nn2,4,fine\n")
    assert run_import(path, "--source", "survey", "--kind", "csat") == (
        "imported 1, duplicates 0, rejected 1"
    )
    assert "NUL character" in rejected_rows(path)[0]["reason"]
    assert Feedback.objects.filter(external_id="n2").exists()


def test_import_id_prefix_keeps_files_apart(tmp_path):
    first = write(tmp_path, "external_id,score\n0,1\n1,5\n", name="a.csv")
    second = write(tmp_path, "external_id,score\n0,2\n1,4\n", name="b.csv")
    run_import(first, "--source", "review", "--kind", "rating", "--id-prefix", "a:")
    summary = run_import(second, "--source", "review", "--kind", "rating", "--id-prefix", "b:")
    assert summary == "imported 2, duplicates 0, rejected 0"
    assert set(Feedback.objects.values_list("external_id", flat=True)) == {"a:0", "a:1", "b:0", "b:1"}


def test_import_repeated_used_column_fails(tmp_path):
    path = write(tmp_path, "external_id,score,score\nd1,3,4\n")
    with pytest.raises(CommandError, match="column 'score' \\(read for score\\) appears more than once"):
        run_import(path, "--source", "survey", "--kind", "csat")


def test_import_bad_language_and_batch_size(tmp_path):
    path = write(tmp_path, "external_id,score\nl1,3\n")
    with pytest.raises(CommandError, match="--language 'klingon' is not a language code"):
        run_import(path, "--source", "survey", "--kind", "csat", "--language", "klingon")
    with pytest.raises(CommandError, match="--batch-size -1 must be 0 or more"):
        run_import(path, "--source", "survey", "--kind", "csat", "--batch-size", "-1")


def test_import_jsonl_invalid_object_kept_in_report(tmp_path):
    path = write(tmp_path, json.dumps({"external_id": "v1", "score": 42}) + "\n", name="x.jsonl")
    run_import(path, "--source", "survey", "--kind", "nps")
    row = rejected_rows(path)[0]
    assert json.loads(row["line"]) == {"external_id": "v1", "score": 42}


def test_import_id_clash_with_other_content_rejected(tmp_path):
    first = write(tmp_path, "external_id,score,comment\n0,1,late\n1,5,great\n", name="a.csv")
    second = write(tmp_path, "external_id,score,comment\n0,1,late\n1,2,broken\n", name="b.csv")
    run_import(first, "--source", "review", "--kind", "rating")

    summary = run_import(second, "--source", "review", "--kind", "rating")

    assert summary == "imported 0, duplicates 1, rejected 1"
    reason = rejected_rows(second)[0]["reason"]
    assert "external_id '1' of source 'review' is already stored with a different" in reason
    assert Feedback.objects.get(external_id="1").score == 5


def test_import_same_id_twice_in_file_with_other_content(tmp_path):
    path = write(tmp_path, "external_id,score\nk1,3\nk1,4\n")
    assert run_import(path, "--source", "survey", "--kind", "csat") == (
        "imported 1, duplicates 0, rejected 1"
    )
