"""Number keys of the configuration: every way a value can be wrong, in plain words."""

from __future__ import annotations

import pytest

from dropfetch.config import ConfigError, config_from_mapping


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"workers": True}, "key workers: expected an integer, got True"),
        ({"workers": 2.5}, "key workers: expected an integer, got 2.5"),
        ({"workers": "2"}, "key workers: expected an integer, got '2'"),
        ({"workers": 0}, "key workers: must be at least 1, got 0"),
        ({"settle_time": -1}, "key settle_time: must be at least 0, got -1"),
        ({"settle_time": "1s"}, "key settle_time: expected a number, got '1s'"),
        ({"settle_time": None}, "key settle_time: expected a number, got None"),
        ({"shutdown_timeout": 0}, "key shutdown_timeout: must be greater than 0, got 0"),
        ({"poll_interval": 0.01}, "key poll_interval: must be at least 0.05, got 0.01"),
        ({"download": {"max_attempts": 0}}, "key download.max_attempts: must be at least 1, got 0"),
        (
            {"download": {"timeout_read": 0.0}},
            "key download.timeout_read: must be greater than 0, got 0.0",
        ),
        ({"hooks": {"timeout": [1]}}, "key hooks.timeout: expected a number, got [1]"),
    ],
)
def test_bad_numbers(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data, where="cfg.yaml")
    assert str(info.value) == f"cfg.yaml: {message}"


def test_good_numbers() -> None:
    cfg = config_from_mapping(
        {
            "workers": 3,
            "settle_time": 0,
            "shutdown_timeout": 0.5,
            "poll_interval": 0.05,
            "download": {"max_attempts": 1},
        }
    )
    assert (cfg.workers, cfg.settle_time, cfg.shutdown_timeout, cfg.poll_interval) == (
        3,
        0.0,
        0.5,
        0.05,
    )
    assert isinstance(cfg.workers, int) and isinstance(cfg.settle_time, float)
    assert cfg.download.max_attempts == 1


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("100", 100),  # a plain number of bytes, also as a string (the demo's --big)
        ("100B", 100),
        ("100k", 100_000),
        ("100KiB", 102_400),
        ("1.5M", 1_500_000),
        ("512MiB", 512 * 1024**2),
        ("10GiB", 10 * 1024**3),
    ],
)
def test_sizes(text: str, size: int) -> None:
    from dropfetch.config import parse_size

    assert parse_size(text) == size
