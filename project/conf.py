"""Settings as the write path reads them: at the cost of a plain attribute.

django.conf.settings is a lazy proxy that runs Python code on every read. `cached_settings`
keeps each value after its first read and forgets them all whenever a setting changes
(setting_changed, as override_settings sends it); in a running service they never change.
Documented in docs/operations.md ("Notes from the code").
"""

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver


class _CachedSettings:
    def __getattr__(self, name: str) -> Any:
        # Only called when `name` is not in the instance's __dict__ yet.
        value = getattr(settings, name)
        self.__dict__[name] = value
        return value


cached_settings = _CachedSettings()


@receiver(setting_changed)
def _cached_settings_forget(**_: Any) -> None:
    cached_settings.__dict__.clear()
