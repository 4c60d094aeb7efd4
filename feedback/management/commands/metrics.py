import json
from datetime import date, datetime

from django.core.management.base import BaseCommand, CommandError, CommandParser

from feedback.metrics import METRIC_KINDS
from feedback.selectors import PERIODS, metric_summary
from oscm.errors import DomainError

DATE_FORMAT = "%Y-%m-%d"


def _parse_date(option: str, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return datetime.strptime(value, DATE_FORMAT).date()
    except ValueError:
        raise CommandError(
            f"{option} {value!r} is not a valid date: use YYYY-MM-DD, "
            "for example 2025-01-31."
        ) from None


def _cell(value) -> str:
    return "-" if value is None else str(value)


def _format_table(summary: dict) -> str:
    """Lay the summary out as one row for the whole range, then one per period."""
    columns = [name for name in summary if name not in ("kind", "periods")]
    rows = [["period", *columns], ["all", *(_cell(summary[c]) for c in columns)]]
    for period in summary.get("periods", []):
        rows.append([period["period"], *(_cell(period[c]) for c in columns)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns) + 1)]
    lines = [f"{summary['kind']} (margin: 95% confidence half-width)"]
    for row in rows:
        lines.append("  ".join(cell.rjust(width) for cell, width in zip(row, widths)))
    return "\n".join(lines)


class Command(BaseCommand):
    help = (
        "Print NPS, CSAT, CES or star-rating figures summed from the metric "
        "rollups, for the whole range and optionally per day, week or month."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--kind", required=True, help=f"metric: {', '.join(METRIC_KINDS)}"
        )
        parser.add_argument(
            "--by",
            help=f"also split by period: {', '.join(PERIODS)} (weeks start Monday)",
        )
        parser.add_argument("--touchpoint", help="count only this touchpoint")
        parser.add_argument("--topic", help="count only feedback with this topic slug")
        parser.add_argument("--source", help="count only this source, such as survey")
        parser.add_argument("--since", help="first UTC day included, YYYY-MM-DD")
        parser.add_argument("--until", help="last UTC day included, YYYY-MM-DD")
        parser.add_argument(
            "--json", action="store_true", help="print JSON instead of a table"
        )

    def handle(self, *args, **options) -> None:
        since = _parse_date("--since", options["since"])
        until = _parse_date("--until", options["until"])
        try:
            summary = metric_summary(
                kind=options["kind"],
                by=options["by"],
                touchpoint=options["touchpoint"],
                topic=options["topic"],
                source=options["source"],
                since=since,
                until=until,
            )
        except DomainError as error:
            raise CommandError(error.message) from error

        if options["json"]:
            self.stdout.write(json.dumps(summary, indent=2))
        else:
            self.stdout.write(_format_table(summary))
