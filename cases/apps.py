from django.apps import AppConfig
from django.db.models.signals import post_migrate


def admin_group_ensure(sender, **kwargs) -> None:
    """Create the "OSCM admins" group with the administer permission.

    Runs after migrate, because Django creates permissions only then.
    """
    from django.contrib.auth.models import Group, Permission

    from .permissions import ADMIN_GROUP

    permission = Permission.objects.filter(
        content_type__app_label="cases", codename="administer"
    ).first()
    if permission is None:
        return
    group, _ = Group.objects.get_or_create(name=ADMIN_GROUP)
    group.permissions.add(permission)


class CasesConfig(AppConfig):
    name = "cases"

    def ready(self) -> None:
        post_migrate.connect(admin_group_ensure, sender=self)
