from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("operations", "0006_operation_venue_request_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="operation",
            name="queued_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
