from django.db import migrations


def seed(apps, schema_editor):
    from cases.seeds import seed_workflow

    seed_workflow(apps)


class Migration(migrations.Migration):
    dependencies = [("cases", "0003_workflow_and_sla")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
