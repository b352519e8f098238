"""One settings object, read from the environment in one place, every setting documented."""

from __future__ import annotations

import re

from shared.settings import Settings, configure, get_settings
from tools.localfarm import ROOT


def test_the_readme_lists_every_setting_with_its_default() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z_0-9]+)` \|", readme, re.M))
    assert set(Settings.model_fields) - documented == set(), "settings missing from the README's table"
    assert documented - set(Settings.model_fields) == set(), "the README documents settings that do not exist"


def test_a_configured_settings_object_is_the_one_everything_reads() -> None:
    given = Settings(MAX_CONCURRENT_REQUESTS=3, REDIS_URL="redis://127.0.0.1:1/5")
    configure(given)
    try:
        assert get_settings() is given
        from shared.redis_client import get_redis

        assert get_redis().connection_pool.connection_kwargs["db"] == 5
    finally:
        configure(None)
    assert get_settings() is not given


def test_stream_defaults_come_from_the_settings() -> None:
    from shared.params import SynthesisParams

    configure(Settings(DEFAULT_STREAM_CHUNK_SIZE=7))
    try:
        assert SynthesisParams().stream_chunk_size == 7
    finally:
        configure(None)
    assert SynthesisParams().stream_chunk_size == 20
