"""The periodic job that enqueues the cluster heartbeat task was claimed as
`cluster_heartbeat`, the name of the health check that reads the heartbeat (issue 21): it is
`heartbeat_enqueue` now. Its row is renamed, so it keeps its next due time."""

from django.db import migrations

OLD, NEW = "cluster_heartbeat", "heartbeat_enqueue"


def rename(old, new):
    def run(apps, schema_editor):
        rows = apps.get_model("service", "PeriodicRun").objects.using(
            schema_editor.connection.alias
        )
        if rows.filter(name=new).exists():
            rows.filter(name=old).delete()
        else:
            rows.filter(name=old).update(name=new)

    return run


class Migration(migrations.Migration):
    dependencies = [("service", "0001_initial")]

    operations = [migrations.RunPython(rename(OLD, NEW), rename(NEW, OLD))]
