"""Settings as the write path reads them: at the cost of a plain attribute.

django.conf.settings is a lazy proxy: every attribute read runs Python code of its own (about
half a microsecond, most of it an attribute lookup that fails inside getattr), and a single
write reads about twenty settings. `cached_settings` keeps each value after its first read, so
later reads are ordinary attribute lookups, and forgets them all whenever a setting changes
(override_settings and pytest-django's `settings` fixture announce it with setting_changed;
in a running service the settings never change).
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
