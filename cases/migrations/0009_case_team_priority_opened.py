from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("cases", "0008_administer_permission_protect_actors"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="case",
            index=models.Index(
                fields=["team", "-priority", "opened_at", "id"],
                name="case_team_priority_opened",
            ),
        ),
    ]
