"""import_feedback on broken files: each bad row is rejected with its reason
and every valid row around it is still imported."""

import csv
import io
import json
import resource

import pytest
from django.core.management import CommandError
from django.db import connection

from feedback import importer, readers
from feedback.models import Feedback
from tests.feedback.test_import_command import rejected_rows, run_import, write

pytestmark = pytest.mark.django_db(transaction=True)


def test_unterminated_quote_rejects_only_its_line(tmp_path):
    lines = [f"u{n},{n % 5 + 1},comment {n}" for n in range(1, 1001)]
    lines[9] = 'u10,2,"Broken product, returned it'
    path = write(tmp_path, "external_id,score,comment\n" + "\n".join(lines) + "\n")

    summary = run_import(path, "--source", "review", "--kind", "rating")

    assert summary == "imported 999, duplicates 0, rejected 1"
    row = rejected_rows(path)[0]
    assert row["row"] == "10"
    assert row["line"] == 'u10,2,"Broken product, returned it'
    assert "opens on line 11" in row["reason"]
    assert "reading goes on at line 12" in row["reason"]
    assert Feedback.objects.filter(external_id="u1000").exists()


def test_quote_closed_rows_later_rejects_first_line(tmp_path):
    path = write(
        tmp_path,
        "external_id,score,comment\n"
        'q-1,2,"unterminated quote\n'
        "q-2,4,fine\n"
        'q-3,1,"ok ""quoted"" text"\n',
    )

    summary = run_import(path, "--source", "review", "--kind", "rating")

    assert summary == "imported 2, duplicates 0, rejected 1"
    assert rejected_rows(path)[0]["line"] == 'q-1,2,"unterminated quote'
    assert Feedback.objects.get(external_id="q-3").comment == 'ok "quoted" text'


def test_quote_open_at_end_of_file(tmp_path):
    path = write(tmp_path, 'external_id,score,comment\ne1,3,fine\ne2,1,"never closed\n')

    summary = run_import(path, "--source", "review", "--kind", "rating")

    assert summary == "imported 1, duplicates 0, rejected 1"
    reason = rejected_rows(path)[0]["reason"]
    assert "a quote opened on line 3 is still open at the end of the file" in reason


def test_swallowed_rows_with_field_count_mismatch(tmp_path):
    # The open quote ends on a later line with a valid closing quote, so the
    # joined record parses but has too many fields.
    path = write(
        tmp_path,
        "external_id,score,comment\n"
        'f1,2,"starts here\n'
        "f2,3,middle\n"
        'f3,4,ends",extra\n'
        "f4,5,after\n",
    )

    summary = run_import(path, "--source", "review", "--kind", "rating")

    assert summary.startswith("imported 2, ")
    rows = rejected_rows(path)
    assert [row["row"] for row in rows] == ["1", "3"]
    assert "has 4 fields but the header has 3" in rows[0]["reason"]
    assert set(Feedback.objects.values_list("external_id", flat=True)) == {"f2", "f4"}


def test_multiline_comments_still_import(tmp_path):
    long_comment = "é" * 9_990 + "\nend"
    path = write(
        tmp_path,
        "external_id,score,comment\n"
        f'm1,1,"{long_comment}"\n'
        'm2,2,"two\n\nparagraphs"\n'
        "m3,3,plain\n",
        newline="\r\n",
    )

    assert run_import(path, "--source", "review", "--kind", "rating") == (
        "imported 3, duplicates 0, rejected 0"
    )
    assert Feedback.objects.get(external_id="m1").comment == long_comment.replace("\n", "\r\n")
    assert Feedback.objects.get(external_id="m2").comment == "two\r\n\r\nparagraphs"


def test_overlong_line_rejected_with_bounded_report(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "MAX_RECORD_LENGTH", 50_000)
    huge = "x" * 200_000
    path = write(tmp_path, f"external_id,score,comment\nh1,3,{huge}\nh2,4,fine\n")

    summary = run_import(path, "--source", "review", "--kind", "rating")

    assert summary == "imported 1, duplicates 0, rejected 1"
    row = rejected_rows(path)[0]
    assert "is 200,006 characters long, more than the 50,000" in row["reason"]
    assert len(row["line"]) == readers.REPORT_LINE_LENGTH


def test_open_quote_record_capped_at_max_length(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "MAX_RECORD_LENGTH", 5_000)
    rows = "".join(f"c{n},3,text {n}\n" for n in range(2_000))
    path = write(tmp_path, f'external_id,score,comment\nc-open,1,"no end\n{rows}')

    summary = run_import(path, "--source", "review", "--kind", "rating")

    assert summary == "imported 2000, duplicates 0, rejected 1"
    reason = rejected_rows(path)[0]["reason"]
    assert "Read on to line 2,002, the row is still open at the end of the file" in reason


def test_100_mb_line_uses_bounded_memory(tmp_path):
    path = tmp_path / "huge.csv"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("external_id,score,comment\nbig,3,")
        for _ in range(100):
            handle.write("y" * 1_000_000)
        handle.write("\nsmall,4,fine\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    summary = run_import(path, "--source", "review", "--kind", "rating")

    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert summary == "imported 1, duplicates 0, rejected 1"
    assert grown_kb < 100_000
    assert path.with_name("huge.csv.rejected.csv").stat().st_size < 40_000


def test_one_field_message_is_singular(tmp_path):
    path = write(tmp_path, "external_id,score,comment\nlonely\ns2,4,fine\n")

    run_import(path, "--source", "review", "--kind", "rating")

    row = rejected_rows(path)[0]
    assert "row has 1 field but the header has 3" in row["reason"]
    assert row["line"] == "lonely"


def test_report_line_column_renamed_when_file_has_one(tmp_path):
    path = write(tmp_path, "line,score\nl1,3\nl2\n")

    run_import(path, "--source", "review", "--kind", "rating", "--map", "external_id=line")

    assert rejected_rows(path)[0]["line as read"] == "l2"


def test_id_prefix_too_long_rejects_only_that_row(tmp_path):
    long_id = "i" * 198
    path = write(tmp_path, f"external_id,score\n{long_id},3\nshort,4\n")

    summary = run_import(path, "--source", "review", "--kind", "rating", "--id-prefix", "ab:")

    assert summary == "imported 1, duplicates 0, rejected 1"
    reason = rejected_rows(path)[0]["reason"]
    assert "is 201 characters long with --id-prefix 'ab:'; the maximum is 200" in reason
    assert Feedback.objects.get().external_id == "ab:short"


@pytest.mark.parametrize(
    "text, args",
    [
        ("id;nota;texto\n1;4;bom\n", []),
        ("id,text\n1,good\n", ["--map", "external_id=id"]),
    ],
    ids=["semicolon", "unmapped"],
)
def test_no_score_or_comment_column_fails(tmp_path, text, args):
    path = write(tmp_path, text)

    with pytest.raises(CommandError, match="no column is read as score or comment") as error:
        run_import(path, "--source", "review", "--kind", "rating", *args)

    assert "--map comment=COLUMN" in str(error.value)
    assert Feedback.objects.count() == 0


def test_no_score_column_error_names_columns_and_delimiter(tmp_path):
    path = write(tmp_path, "id;nota;texto\n1;4;bom\n")

    with pytest.raises(CommandError, match="pass --delimiter ';'") as error:
        run_import(path, "--source", "review", "--kind", "rating")

    assert "the file's columns are: id;nota;texto" in str(error.value)


def test_jsonl_line_kind_and_source_honoured(tmp_path):
    lines = [
        {"external_id": "k1", "score": 9, "kind": "nps"},
        {"external_id": "k2", "score": 4, "source": "survey"},
        {"external_id": "k3", "score": 4, "kind": "stars"},
    ]
    path = write(tmp_path, "".join(json.dumps(line) + "\n" for line in lines), "f.jsonl")

    summary = run_import(path, "--source", "review", "--kind", "rating")

    assert summary == "imported 2, duplicates 0, rejected 1"
    assert Feedback.objects.get(external_id="k1").kind == "nps"
    assert Feedback.objects.get(external_id="k2").source == "survey"
    assert "kind 'stars' is not valid" in rejected_rows(path)[0]["reason"]


def test_jsonl_unknown_key_rejected_like_api(tmp_path):
    lines = [
        {"external_id": "x1", "score": 3, "foo": 1},
        {"external_id": "x2", "score": 3, "metadata": {"foo": 1}},
        {"external_id": "x3", "score": 3, "stars": 5},
    ]
    path = write(tmp_path, "".join(json.dumps(line) + "\n" for line in lines), "f.jsonl")

    summary = run_import(
        path, "--source", "review", "--kind", "rating", "--map", "product=stars"
    )

    assert summary == "imported 2, duplicates 0, rejected 1"
    assert "'foo' is not a feedback field" in rejected_rows(path)[0]["reason"]


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_jsonl_non_finite_number_rejected(tmp_path, number):
    path = write(
        tmp_path,
        f'{{"external_id": "n1", "score": 3, "metadata": {{"w": {number}}}}}\n'
        '{"external_id": "n2", "score": 4}\n',
        "f.jsonl",
    )

    summary = run_import(path, "--source", "review", "--kind", "rating")

    assert summary == "imported 1, duplicates 0, rejected 1"
    assert f"contains the number {number}" in rejected_rows(path)[0]["reason"]


def test_rejected_rows_sorted_with_conflicts(tmp_path, settings):
    settings.OSCM_IMPORT_CHUNK_SIZE = 2
    settings.OSCM_BATCH_SIZE = 2
    first = write(tmp_path, "external_id,score\no1,1\no2,2\no3,3\no4,4\n", "a.csv")
    run_import(first, "--source", "review", "--kind", "rating")
    second = write(
        tmp_path, "external_id,score\no1,5\no2,5\no3,5\nbad,9\no4,5\nbad2,0\n", "b.csv"
    )

    run_import(second, "--source", "review", "--kind", "rating")

    assert [row["row"] for row in rejected_rows(second)] == ["1", "2", "3", "4", "5", "6"]


def test_reject_writer_merges_out_of_order_conflicts(tmp_path):
    path = tmp_path / "f.csv.rejected.csv"
    writer = importer._RejectWriter(path)
    writer.header = ["external_id"]
    writer.write(2, "bad", {"external_id": "b"})
    writer.hold(5, "conflict", {"external_id": "e"})
    writer.hold(1, "conflict", {"external_id": "a"})
    writer.release(below=3)
    writer.write(4, "bad", {"external_id": "d"})
    writer.hold(3, "conflict", {"external_id": "c"})
    writer.close()

    rows = rejected_rows(tmp_path / "f.csv")
    assert [row["external_id"] for row in rows] == ["a", "b", "c", "d", "e"]
    assert writer.count == 5


def test_id_prefix_fits_at_limit(tmp_path):
    path = write(tmp_path, "external_id,score\n" + "p" * 199 + ",3\n")

    summary = run_import(path, "--source", "review", "--kind", "rating", "--id-prefix", "x")

    assert summary == "imported 1, duplicates 0, rejected 0", connection.vendor


def test_long_closed_quote_rejected_as_one_row(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "MAX_RECORD_LENGTH", 5_000)
    body = "".join(f"inj{n},victim{n},1,line {n} {'w' * 40}\n" for n in range(520))
    path = write(
        tmp_path,
        "external_id,customer,score,comment\nk1,c1,1,ok\n"
        f'k2,c2,5,"A long letter:\n{body}end of letter"\nk3,c3,1,after\n',
    )

    summary = run_import(path, "--source", "review", "--kind", "rating")

    assert summary == "imported 2, duplicates 0, rejected 1"
    row = rejected_rows(path)[0]
    assert row["row"] == "2"
    assert row["line"] == 'k2,c2,5,"A long letter:'
    assert "opens on line 3 and closes on line 524" in row["reason"]
    assert "reading goes on at line 525" in row["reason"]
    assert set(Feedback.objects.values_list("external_id", flat=True)) == {"k1", "k3"}


def test_long_first_line_closing_later_rejected_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "MAX_RECORD_LENGTH", 5_000)
    path = write(
        tmp_path,
        f'external_id,score,comment\nl1,5,"{"v" * 6_000}\nin,1,inside\nclose"\nl2,4,after\n',
    )

    summary = run_import(path, "--source", "review", "--kind", "rating")

    assert summary == "imported 1, duplicates 0, rejected 1"
    row = rejected_rows(path)[0]
    assert "opens on line 2 and closes on line 4" in row["reason"]
    assert row["line"].startswith('l1,5,"vvv')
    assert Feedback.objects.get().external_id == "l2"


def test_long_quote_with_extra_field_rejects_first_line(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "MAX_RECORD_LENGTH", 5_000)
    rows = "".join(f"r{n},3,text {n}\n" for n in range(600))
    path = write(tmp_path, f'external_id,score,comment\nbad,1,"open\n{rows}end",extra\n')

    summary = run_import(path, "--source", "review", "--kind", "rating")

    assert summary == "imported 600, duplicates 0, rejected 2"
    reason = rejected_rows(path)[0]["reason"]
    assert "Read on to line 603, the row has 4 fields but the header has 3" in reason


@pytest.mark.parametrize(
    "body, row_count",
    [
        # Each line closes the open field and opens the next, so a record
        # from line 2 gains a field a line and its quote never closes.
        ('a,1,"x\n' + 'x","y\n' * 3_000, 3_001),
        # The same, closed at the end: the last three lines make one valid row.
        ('a,1,"x\n' + 'x","y\n' * 3_000 + 'z"\n', 3_000),
        # Each line opens a quote that the next line breaks.
        ("".join(f'o{n},1,"open {n}\n' for n in range(3_000)), 3_000),
    ],
    ids=["never-closed", "closed-at-end", "broken-next-line"],
)
@pytest.mark.parametrize("limit", [1_000_000, 2_000])
def test_hostile_quotes_parsed_in_linear_time(monkeypatch, body, row_count, limit):
    monkeypatch.setattr(readers, "MAX_RECORD_LENGTH", limit)
    parsed = 0
    csv_reader = csv.reader
    scanner_feed = readers._RecordScanner.feed

    def counting_reader(lines, **options):
        def counted():
            nonlocal parsed
            for line in lines:
                parsed += len(line)
                yield line

        return csv_reader(counted(), **options)

    def counting_feed(scanner, text):
        nonlocal parsed
        parsed += len(text)
        scanner_feed(scanner, text)

    monkeypatch.setattr(readers.csv, "reader", counting_reader)
    monkeypatch.setattr(readers._RecordScanner, "feed", counting_feed)
    text = "external_id,score,comment\n" + body
    options = importer.ImportOptions(source="review", kind="rating")

    rows = list(readers.csv_rows(io.StringIO(text), options))

    assert len(rows) - 1 == row_count
    assert parsed <= 6 * len(text)


def test_scanner_matches_csv_reader():
    samples = [
        'a,"b\nc",d\n', 'a,"b""c"\n', 'a,"b"c\n', 'a"b,c\n', '"x\r\ny"\r\n',
        'a,b,\n', '"open\nnever', 'a,""\n', '"a",\n', '\t"q",r\n',
    ]
    for text in samples:
        lines = text.splitlines(keepends=True)
        scanner = readers._RecordScanner(",")
        for line in lines:
            scanner.feed(line)
        scanner.finish()
        try:
            expected = next(csv.reader(lines, strict=True))
        except csv.Error as error:
            assert scanner.error == str(error), text
        else:
            assert scanner.error is None, text
            assert scanner.fields == len(expected), text


def test_id_prefix_of_200_characters_fails(tmp_path):
    path = write(tmp_path, "external_id,score\na,3\n")

    with pytest.raises(CommandError) as error:
        run_import(path, "--source", "review", "--kind", "rating", "--id-prefix", "p" * 200)

    assert "--id-prefix is 200 characters long" in str(error.value)
    assert "at most 199 characters" in str(error.value)
    assert Feedback.objects.count() == 0


def test_jsonl_report_keeps_original_line(tmp_path):
    lines = [
        '{"external_id":"r1","score":3,"foo":1}',
        '{"external_id":"r2","score":3,"kind":"stars"}',
        '{"external_id":"r3","score":3,"source":"fax"}',
    ]
    path = write(tmp_path, "\n".join(lines) + "\n", "f.jsonl")

    summary = run_import(path, "--source", "review", "--kind", "rating")

    assert summary == "imported 0, duplicates 0, rejected 3"
    assert [row["line"] for row in rejected_rows(path)] == lines


def test_jsonl_duplicate_key_rejected(tmp_path):
    path = write(
        tmp_path,
        '{"external_id":"j13","score":3,"external_id":"j13b"}\n'
        '{"external_id":"j14","score":3,"metadata":{"a":1,"a":2}}\n'
        '{"external_id":"j15","score":3}\n',
        "f.jsonl",
    )

    summary = run_import(path, "--source", "review", "--kind", "rating")

    assert summary == "imported 1, duplicates 0, rejected 2"
    rows = rejected_rows(path)
    assert "has the key 'external_id' more than once" in rows[0]["reason"]
    assert "has the key 'a' more than once" in rows[1]["reason"]
    assert Feedback.objects.get().external_id == "j15"


def test_csv_report_keeps_nul_and_undecodable_lines(tmp_path):
    path = tmp_path / "feedback.csv"
    path.write_bytes(
        b"external_id,score,comment\nn1,3,with\x00nul\nb1,3,caf\xe9\nok,4,fine\n"
    )

    summary = run_import(path, "--source", "review", "--kind", "rating")

    assert summary == "imported 1, duplicates 0, rejected 2"
    rows = rejected_rows(path)
    assert rows[0]["line"] == "n1,3,with\x00nul"
    assert rows[1]["line"] == "b1,3,caf\\xe9"
    assert "shown as \\xNN escapes" in rows[1]["reason"]
