from django.conf import settings


def test_celery_runs_in_process_without_broker(monkeypatch):
    assert settings.CELERY_TASK_ALWAYS_EAGER is (settings.CELERY_BROKER_URL.startswith("memory://"))
