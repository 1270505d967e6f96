"""A model field for money that is exact on every database.

SQLite would store a DecimalField as a float rounded to 15 digits, and Django's converter for
DecimalField rounds again, so this field has its own internal type: `text` on SQLite and
unconstrained `numeric` on PostgreSQL, always `Decimal` in Python. Arithmetic happens in
Python under row locks, never in SQL, so text ordering on SQLite is never relied on.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db import models


class ExactDecimalField(models.Field):
    description = "Exact decimal number (text on SQLite, numeric on PostgreSQL)"

    def get_internal_type(self) -> str:
        return "ExactDecimalField"

    def db_type(self, connection: Any) -> str:
        return "numeric" if connection.vendor == "postgresql" else "text"

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Decimal | None:
        if value is None:
            return None
        if isinstance(value, Decimal):
            return value
        return Decimal(str(value))

    def to_python(self, value: Any) -> Decimal | None:
        if value is None or isinstance(value, Decimal):
            return value
        if isinstance(value, float):
            raise ValidationError(
                "%(value)r is a float; amounts must be given as strings or Decimal",
                params={"value": value},
            )
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValidationError(
                "%(value)r is not a decimal number", params={"value": value}
            ) from None
        if not number.is_finite():
            raise ValidationError("%(value)r is not finite", params={"value": value})
        return number

    def get_prep_value(self, value: Any) -> Decimal | None:
        value = super().get_prep_value(value)
        return self.to_python(value)

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        if not prepared:
            value = self.get_prep_value(value)
        if value is None:
            return None
        if connection.vendor == "postgresql":
            return value
        return format(value, "f")

    def formfield(self, **kwargs: Any) -> forms.Field:
        return super().formfield(**{"form_class": forms.DecimalField, **kwargs})
