from django.db import migrations, models


def file_trade_keys_under_their_day(apps, schema_editor):
    """Each recorded trade key gets the UTC day of its fill's block timestamp."""
    from inventory.codec import decode_event
    from inventory.event_keys import TRADE, trade_day

    Event = apps.get_model("inventory", "Event")
    EventKey = apps.get_model("inventory", "EventKey")
    keys = EventKey.objects.filter(scope=TRADE).order_by("id")
    last = 0
    while True:
        chunk = list(keys.filter(id__gt=last)[:2000])
        if not chunk:
            return
        events = Event.objects.in_bulk([key.event_id for key in chunk])
        for key in chunk:
            row = events[key.event_id]
            key.day = trade_day(decode_event(row.event_type, row.payload).block_timestamp)
        EventKey.objects.bulk_update(chunk, ["day"])
        last = chunk[-1].id


class Migration(migrations.Migration):
    dependencies = [
        ("inventory", "0010_config_stamp"),
    ]

    operations = [
        migrations.AddField(
            model_name="eventkey",
            name="day",
            field=models.IntegerField(default=0),
        ),
        migrations.RemoveConstraint(
            model_name="eventkey",
            name="eventkey_unique_scope_key",
        ),
        migrations.RunPython(file_trade_keys_under_their_day, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="eventkey",
            constraint=models.UniqueConstraint(
                fields=("scope", "day", "key"), name="eventkey_unique_scope_day_key"
            ),
        ),
    ]
