"""`manage.py diffsettings`, with every secret redacted (rebalancer.redaction)."""

from __future__ import annotations

from typing import Any

from django.core.management.commands.diffsettings import Command as DjangoDiffSettings
from django.core.management.commands.diffsettings import module_to_dict

from rebalancer.redaction import SecretsExceptionReporterFilter, redact_text


class Command(DjangoDiffSettings):
    help = DjangoDiffSettings.help + " Secrets are shown as <redacted>."

    def handle(self, **options: Any) -> str:
        from django.conf import Settings, global_settings, settings

        if not settings.configured:
            settings._setup()
        cleanse = SecretsExceptionReporterFilter().cleanse_setting
        user_settings = {
            name: redact_text(repr(cleanse(name, getattr(settings, name))))
            for name in module_to_dict(settings._wrapped)
        }
        default = options["default"]
        default_settings = module_to_dict(Settings(default) if default else global_settings)
        output_func = {"hash": self.output_hash, "unified": self.output_unified}[options["output"]]
        return "\n".join(output_func(user_settings, default_settings, **options))
