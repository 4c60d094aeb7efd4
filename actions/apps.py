from django.apps import AppConfig


class ActionsConfig(AppConfig):
    name = "actions"

    def ready(self) -> None:
        # The outbox delivers webhook messages through this handler; the
        # registration lives here so the cases app's modules stay untouched.
        from cases.webhooks import webhook_handler_register

        webhook_handler_register()
