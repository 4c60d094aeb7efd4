import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

PASSWORD_FILE = Path(settings.BASE_DIR) / ".oscm-admin-password"


class Command(BaseCommand):
    help = (
        "Create the demo admin login if it is missing and print it. The password is "
        "random and kept in .oscm-admin-password so later runs can print it again."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, **options):
        User = get_user_model()
        username = options["username"]
        user = User.objects.filter(username=username).first()
        if user is None or not PASSWORD_FILE.exists():
            password = secrets.token_urlsafe(12)
            user = user or User(username=username, is_staff=True, is_superuser=True)
            user.is_staff = user.is_superuser = True
            user.set_password(password)
            user.save()
            PASSWORD_FILE.write_text(password + "\n")
            PASSWORD_FILE.chmod(0o600)
        password = PASSWORD_FILE.read_text().strip()
        if not user.check_password(password):
            self.stdout.write(
                f"Admin login: username {username!r}; its password was changed after "
                f"{PASSWORD_FILE.name} was written. Set a new one with "
                f"'python manage.py changepassword {username}'."
            )
            return
        self.stdout.write(f"Admin login: username {username!r}, password {password!r}")
