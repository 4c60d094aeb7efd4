from django.db import migrations


def seed(apps, schema_editor):
    from cases.seeds import seed_contact_policy

    seed_contact_policy(apps)


class Migration(migrations.Migration):
    dependencies = [("cases", "0005_follow_ups_outbox_webhooks")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
