"""Workspace messages in Indonesian, for a user whose language cookie picks
it: the ones added to the translation after its first version."""

import pytest
from django.urls import reverse

from cases.models import CaseEvent

from .factories import CaseFactory
from .personas import make_personas

pytestmark = pytest.mark.django_db


@pytest.fixture
def people():
    return make_personas()


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def _indonesian_client(client, user):
    client.force_login(user)
    client.cookies["django_language"] = "id"
    return client


def test_invalid_token_message_in_indonesian(client, people):
    client = _indonesian_client(client, people.agent_a)

    response = client.post(
        reverse("cases_web:comment", args=[people.case_a.pk]),
        {
            "body": "Called the courier",
            "visibility": "internal",
            "submission_token": "!",
        },
        follow=True,
    )

    assert b'lang="id"' in response.content
    assert _messages(response)[-1] == (
        "Token pengiriman formulir tidak valid: muat ulang halaman lalu kirim "
        "formulir lagi."
    )


def test_bulk_limit_message_in_indonesian(client, people, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 12
    cases = [CaseFactory(team=people.team_a) for _ in range(8)]
    client = _indonesian_client(client, people.lead_a)

    response = client.post(
        reverse("cases_web:team-bulk"),
        {
            "operation": "reassign",
            "assignee": people.agent_a.pk,
            "case": [case.pk for case in cases],
        },
        follow=True,
    )

    assert _messages(response)[-1] == (
        "Terlalu banyak kasus dipilih: perubahan massal paling banyak 7 kasus. "
        "Pilih lebih sedikit kasus lalu kirim lagi."
    )
    assert not CaseEvent.objects.filter(kind=CaseEvent.Kind.ASSIGNED).exists()


def test_bulk_reassign_message_in_indonesian(client, people):
    client = _indonesian_client(client, people.lead_a)

    response = client.post(
        reverse("cases_web:team-bulk"),
        {
            "operation": "reassign",
            "assignee": people.agent_a.pk,
            "case": [people.case_a.pk],
        },
        follow=True,
    )

    assert _messages(response) == ["1 kasus dialihkan."]


def test_csv_invalid_filter_message_in_indonesian(client, people):
    client = _indonesian_client(client, people.lead_a)

    response = client.get(
        reverse("feedback_web:explorer"), {"score_max": "abc", "format": "csv"}
    )

    assert response.status_code == 400
    assert response.content.decode().startswith(
        "Filter tidak valid, jadi tidak ada yang diekspor: perbaiki filternya "
        "lalu coba lagi.\n"
    )
