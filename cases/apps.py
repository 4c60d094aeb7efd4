from django.apps import AppConfig
from django.db.models.signals import post_migrate


# Apps whose every model permission the "OSCM admins" group has, so its
# members can manage users, tokens and all OSCM data in the Django admin.
ADMIN_GROUP_APPS = ("auth", "authtoken", "feedback", "cases", "actions")


def admin_group_ensure(sender, **kwargs) -> None:
    """Create the "OSCM admins" group with the administer permission.

    Runs after migrate, because Django creates permissions only then. The
    group also gets every permission of ADMIN_GROUP_APPS; permissions an
    admin removed from it stay removed unless new models add new ones.
    """
    from django.contrib.auth.models import Group, Permission

    from .permissions import ADMIN_GROUP

    # Only migrate passes a plan. A flush also sends post_migrate, and a test
    # database restored from its serialized copy after a flush already contains
    # the group under its first id, so creating it here would clash.
    if kwargs.get("plan") is None:
        return

    if not Permission.objects.filter(
        content_type__app_label="cases", codename="administer"
    ).exists():
        return
    group, created = Group.objects.get_or_create(name=ADMIN_GROUP)
    if created:
        group.permissions.add(
            *Permission.objects.filter(content_type__app_label__in=ADMIN_GROUP_APPS)
        )


class CasesConfig(AppConfig):
    name = "cases"

    def ready(self) -> None:
        post_migrate.connect(admin_group_ensure, sender=self)
