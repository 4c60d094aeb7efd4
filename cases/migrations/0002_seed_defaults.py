from django.db import migrations


def seed(apps, schema_editor):
    from cases.seeds import seed_defaults

    seed_defaults(apps)


class Migration(migrations.Migration):
    dependencies = [("cases", "0001_initial"), ("feedback", "0002_seed_topics")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
