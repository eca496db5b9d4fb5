"""project.conf.cached_settings: the write path's settings, read at the cost of an attribute."""

from project.conf import cached_settings


def test_cached_settings_follow_a_changed_setting(settings):
    settings.MESSY_WRITE_MAX_BYTES = 1234
    assert cached_settings.MESSY_WRITE_MAX_BYTES == 1234
    settings.MESSY_WRITE_MAX_BYTES = 99
    assert cached_settings.MESSY_WRITE_MAX_BYTES == 99


def test_cached_settings_keep_a_value_as_a_plain_attribute():
    cached_settings.MESSY_WRITE_MAX_BYTES  # noqa: B018 (the read that caches it)
    assert "MESSY_WRITE_MAX_BYTES" in vars(cached_settings)
