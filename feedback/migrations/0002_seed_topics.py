from django.db import migrations


def seed(apps, schema_editor):
    from feedback.seeds import seed_topics

    seed_topics(apps)


class Migration(migrations.Migration):
    dependencies = [("feedback", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
