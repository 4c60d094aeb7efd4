"""Settings for OSCM, read from the environment.

With no environment at all the product runs on a SQLite file in the project
folder and runs Celery tasks in-process, so one command starts a working demo.
Set DATABASE_URL and CELERY_BROKER_URL to run on PostgreSQL with real workers.
"""

from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from .env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)
# The fallback key is for the local demo only: production sets SECRET_KEY.
SECRET_KEY = env_str("SECRET_KEY") or "insecure-local-demo-key-set-SECRET_KEY"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "feedback",
    "cases",
    "actions",
    "oscm.idempotency",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "oscm.middleware.ChunkedApiBodyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # After sessions and before CommonMiddleware, as Django's i18n docs
    # require: picks English or Indonesian from the language cookie.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "oscm.urls"
WSGI_APPLICATION = "oscm.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "oscm" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "cases.views.workspace_context",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'oscm.sqlite3'}",
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the scheduler process and the web server share the file.
    # IMMEDIATE transactions take the write lock at BEGIN, so a concurrent
    # writer waits up to ``timeout`` seconds instead of failing with
    # "database is locked" when a read-then-write transaction upgrades.
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].update(
        {
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL;",
            "transaction_mode": "IMMEDIATE",
        }
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("id", "Bahasa Indonesia")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# The agents' and leads' workspace signs in at /login/ and starts at the inbox.
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "cases_web:inbox"
LOGOUT_REDIRECT_URL = "login"

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# The workspace's stylesheet and script; oscm is not an installed app.
STATICFILES_DIRS = [BASE_DIR / "oscm" / "static"]
# Serve static files straight from the apps too, so the demo needs no
# collectstatic step.
WHITENOISE_USE_FINDERS = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
if DEBUG:
    STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"

REST_FRAMEWORK = {
    # Token first: an anonymous request then gets 401 with WWW-Authenticate.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "oscm.api.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "EXCEPTION_HANDLER": "oscm.api.exception_handler",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# Largest JSON body the API parses: 1,000 items of 10,000-character comments
# fit with room to spare.
OSCM_API_MAX_BODY_BYTES = env_int("OSCM_API_MAX_BODY_BYTES", 25 * 1024 * 1024)
# DRF reads a JSON body through ``request.body``, which Django caps at this
# size (2.5 MB by default), so it must allow the API's limit.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(OSCM_API_MAX_BODY_BYTES, 2_621_440)

# OpenAPI schema at /api/schema/ and Swagger UI at /api/docs/; the UI assets
# come from drf-spectacular-sidecar, so the docs work without internet access.
SPECTACULAR_SETTINGS = {
    "TITLE": "OSCM API",
    "DESCRIPTION": "Customer feedback intake, metrics and the case workflow.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SERVE_AUTHENTICATION": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # One schema name for each choice set that several fields share.
    "ENUM_NAME_OVERRIDES": {
        "CaseStateEnum": "cases.models.Case.State",
        "CaseEventKindEnum": "cases.models.CaseEvent.Kind",
        "FeedbackKindEnum": "feedback.models.Feedback.Kind",
        "ActionStateEnum": "actions.models.Action.State",
    },
}

# Email: the console backend by default, SMTP when EMAIL_HOST is set.
EMAIL_HOST = env_str("EMAIL_HOST")
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_PORT = env_int("EMAIL_PORT", 587)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "OSCM <feedback@localhost>")
# Folder for django.core.mail.backends.filebased.EmailBackend, which writes
# each message to a file there.
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH") or None

# Celery: with no broker, tasks run in-process when they are queued.
# The in-memory transport replaces a broker that eager mode never
# contacts; it keeps Celery from falling back to an AMQP server on localhost.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or "memory://localhost/"
CELERY_TASK_ALWAYS_EAGER = not env_str("CELERY_BROKER_URL")
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 300)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 360)
CELERY_TIMEZONE = "UTC"
# Intervals of the outbox sweep and the follow-up dispatch, in seconds. A run
# no worker has started expires 5 s before the next one is queued, or after
# 1 s for intervals under 6 s.
OSCM_OUTBOX_SWEEP_SECONDS = env_int("OSCM_OUTBOX_SWEEP_SECONDS", 30)
OSCM_FOLLOW_UP_DISPATCH_SECONDS = env_int("OSCM_FOLLOW_UP_DISPATCH_SECONDS", 60)
CELERY_BEAT_SCHEDULE = {
    "feedback-sweep-unevaluated": {
        "task": "cases.tasks.feedback_sweep_task",
        "schedule": env_int("OSCM_SWEEP_SECONDS", 60),
        "options": {"expires": 55},
    },
    "feedback-analyze-pending": {
        "task": "feedback.tasks.feedback_analyze_pending_task",
        "schedule": env_int("OSCM_SWEEP_SECONDS", 60),
        "options": {"expires": 55},
    },
    "case-sla-sweep": {
        "task": "cases.tasks.case_sla_sweep_task",
        "schedule": 60,
        "options": {"expires": 55},
    },
    "case-assign-waiting": {
        "task": "cases.tasks.case_assign_waiting_task",
        "schedule": 60,
        "options": {"expires": 55},
    },
    "outbox-sweep": {
        "task": "cases.tasks.outbox_sweep_task",
        "schedule": OSCM_OUTBOX_SWEEP_SECONDS,
        "options": {"expires": max(OSCM_OUTBOX_SWEEP_SECONDS - 5, 1)},
    },
    "follow-up-dispatch": {
        "task": "cases.tasks.follow_up_dispatch_task",
        "schedule": OSCM_FOLLOW_UP_DISPATCH_SECONDS,
        "options": {"expires": max(OSCM_FOLLOW_UP_DISPATCH_SECONDS - 5, 1)},
    },
}
# Remediation actions: measurements falling due, overdue reminders and the
# leads' digest (07:00 and 07:30 UTC).
CELERY_BEAT_SCHEDULE.update(
    {
        "action-measure-due": {
            "task": "actions.tasks.action_measure_due_task",
            "schedule": 600,
            "options": {"expires": 540},
        },
        "action-overdue-remind": {
            "task": "actions.tasks.action_overdue_remind_task",
            "schedule": crontab(hour=7, minute=0),
            "options": {"expires": 3600},
        },
        "action-lead-digest": {
            "task": "actions.tasks.lead_digest_task",
            "schedule": crontab(hour=7, minute=30),
            "options": {"expires": 3600},
        },
    }
)

# Hours a form's submission token or an API Idempotency-Key is remembered,
# so a repeat within that time replays the first response. The hourly
# clean-up deletes older keys.
OSCM_IDEMPOTENCY_KEY_HOURS = env_int("OSCM_IDEMPOTENCY_KEY_HOURS", 24)
if OSCM_IDEMPOTENCY_KEY_HOURS < 1:
    # A key that expires as soon as it is stored turns idempotency off.
    raise ImproperlyConfigured(
        f"OSCM_IDEMPOTENCY_KEY_HOURS={OSCM_IDEMPOTENCY_KEY_HOURS} is invalid: "
        "set it to 1 or more hours (the default is 24)."
    )
CELERY_BEAT_SCHEDULE["idempotency-keys-delete-expired"] = {
    "task": "oscm.idempotency.tasks.idempotency_keys_delete_expired_task",
    "schedule": 3600,
    "options": {"expires": 3500},
}

# How many rows one intake batch analyses, stores and evaluates together.
OSCM_BATCH_SIZE = env_int("OSCM_BATCH_SIZE", 2000)
# How many rows the file import stores and evaluates in one transaction on
# PostgreSQL; larger chunks spread each chunk's fixed queries thinner.
OSCM_IMPORT_CHUNK_SIZE = env_int("OSCM_IMPORT_CHUNK_SIZE", 5_000)
# Threads that store those chunks, each on its own connection, while the
# importing thread parses the next ones. 0 stores them on the importing
# thread, as a profile needs.
OSCM_IMPORT_WRITERS = env_int("OSCM_IMPORT_WRITERS", 2)
# Feedback older than this and still not evaluated is picked up by the sweep.
OSCM_SWEEP_GRACE_SECONDS = env_int("OSCM_SWEEP_GRACE_SECONDS", 30)
# An outbox row claimed (state sending) longer ago than this, in seconds, is
# taken to belong to a worker that died, and is claimed and sent again. It
# must exceed the longest send, including the SMTP timeout.
OSCM_OUTBOX_CLAIM_TIMEOUT_SECONDS = env_int("OSCM_OUTBOX_CLAIM_TIMEOUT_SECONDS", 600)
# Scheme, host and port that survey and unsubscribe links in emails start with.
OSCM_BASE_URL = env_str("OSCM_BASE_URL", "http://127.0.0.1:8000")

# Cache for login rate limits: Redis when CACHE_URL is set, so every web
# process counts the same attempts; per-process memory otherwise, which is
# enough for one process. Give the cache its own Redis database, apart from
# the Celery broker's, because clearing a cache flushes its whole database.
CACHE_URL = env_str("CACHE_URL")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": CACHE_URL,
        "KEY_PREFIX": "oscm",
    }
    if CACHE_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}

LOG_FORMAT = env_str("LOG_FORMAT", "text")
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s %(extra_fields)s",
            "()": "oscm.logging.KeyValueFormatter",
        },
        "json": {"()": "oscm.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "celery": {"level": "INFO"},
        # Task success lines repeat every argument, such as long id lists.
        "celery.app.trace": {"level": "WARNING"},
    },
}
