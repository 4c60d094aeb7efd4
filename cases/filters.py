"""Query-string filters of the case list."""

import django_filters
from django import forms
from django.db.models import Q, QuerySet

from .models import Case, CaseEvent, Priority

# Largest primary key of a BigAutoField. Python's sqlite3 raises
# OverflowError on a larger integer in a query instead of matching nothing,
# so inputs that carry ids are checked against it.
MAX_ID = 2**63 - 1


class IdFilter(django_filters.NumberFilter):
    """Matches a foreign key by a whole-number id from 1 to MAX_ID.

    An id outside that range is a validation error (400 in the API), not a
    database error.
    """

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(*args, **kwargs)


class ColumnInFilter(django_filters.MultipleChoiceFilter):
    """Matches any of the chosen values of a column of the case itself.

    It filters with one ``IN (...)``, which PostgreSQL uses as an index
    condition, where the parent class ORs one equality per value. It adds
    no DISTINCT, because a column of the case joins nothing that could
    repeat a row, and DISTINCT over the joined columns made PostgreSQL sort
    every matching row before the LIMIT.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("distinct", False)
        super().__init__(*args, **kwargs)

    def filter(self, qs: QuerySet, value: list[str]) -> QuerySet:
        if not value:
            return qs
        return self.get_method(qs)(**{f"{self.field_name}__in": sorted(set(value))})


class CaseFilter(django_filters.FilterSet):
    team = IdFilter(field_name="team_id", help_text="Team id.")
    state = ColumnInFilter(choices=Case.State.choices)
    priority = ColumnInFilter(choices=Priority.choices)
    assignee = IdFilter(field_name="assignee_id", help_text="User id of the assignee.")
    unassigned = django_filters.BooleanFilter(
        field_name="assignee", lookup_expr="isnull", help_text="true: no assignee."
    )
    topic = django_filters.CharFilter(field_name="topic__slug", help_text="Topic slug.")
    customer = django_filters.CharFilter(
        field_name="customer__external_id", help_text="Customer external id."
    )
    breached = django_filters.BooleanFilter(field_name="is_breached")
    is_open = django_filters.BooleanFilter()
    opened_after = django_filters.IsoDateTimeFilter(
        field_name="opened_at", lookup_expr="gte", help_text="ISO 8601, inclusive."
    )
    opened_before = django_filters.IsoDateTimeFilter(
        field_name="opened_at", lookup_expr="lt", help_text="ISO 8601, exclusive."
    )
    search = django_filters.CharFilter(
        method="filter_search",
        help_text="Text in the case's comments, or the customer's exact external id.",
    )

    class Meta:
        model = Case
        fields: list[str] = []

    def filter_search(self, queryset: QuerySet[Case], name: str, value: str):
        value = value.strip()
        if not value:
            return queryset
        commented = CaseEvent.objects.filter(
            kind=CaseEvent.Kind.COMMENT, body__icontains=value
        ).values("case_id")
        return queryset.filter(
            Q(pk__in=commented) | Q(customer__external_id__iexact=value)
        )
