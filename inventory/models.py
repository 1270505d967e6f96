from django.db import models
from django.utils import timezone


class Event(models.Model):
    """One fact in the append-only log. The database refuses UPDATE and DELETE on this table."""

    id = models.BigAutoField(primary_key=True)
    aggregate_type = models.CharField(max_length=64)
    aggregate_id = models.CharField(max_length=128)
    sequence = models.PositiveBigIntegerField()
    event_type = models.CharField(max_length=128)
    event_version = models.CharField(max_length=16, default="1.0")
    payload = models.JSONField()
    metadata = models.JSONField(default=dict, blank=True)
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["aggregate_type", "aggregate_id", "sequence"],
                name="event_unique_aggregate_sequence",
            ),
            models.CheckConstraint(
                condition=models.Q(sequence__gte=1), name="event_sequence_gte_1"
            ),
        ]
        indexes = [
            models.Index(fields=["event_type"], name="event_type_idx"),
            models.Index(fields=["aggregate_id"], name="event_aggregate_id_idx"),
        ]
        ordering = ["id"]

    def __str__(self) -> str:
        return (
            f"#{self.id} {self.aggregate_type}/{self.aggregate_id}"
            f"#{self.sequence} {self.event_type}"
        )

    def domain_event(self):
        from inventory.codec import decode_event

        return decode_event(self.event_type, self.payload)
