"""Member names and link targets (dropfetch.archive.members): pure checks, no archive."""

from __future__ import annotations

import pytest

from dropfetch.archive.members import check_link_target, normalise_name, resolve_link
from dropfetch.errors import UnsafeArchiveError


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a/b.txt", "a/b.txt"),
        ("./a//b/", "a/b"),
        (".", None),
        ("", None),
        ("日本/é", "日本/é"),
        ("x..y", "x..y"),
        ("...", "..."),
    ],
)
def test_normalise_name(name: str, expected: str | None) -> None:
    assert normalise_name(name) == expected


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("/etc/passwd", "absolute path"),
        ("C:evil", "absolute path"),
        ("a/../../b", "'..'"),
        ("a\\..\\b", "'..'"),
        ("a\nb", "control characters"),
        ("a\x85b", "control characters"),
        ("invoice\u202efdp.exe", "control characters"),
        ("x\u2066", "control characters"),
        ("a/" * 2100 + "x", "name too long"),
        ("x" * 256, "component too long"),
    ],
)
def test_normalise_name_refuses(name: str, why: str) -> None:
    with pytest.raises(UnsafeArchiveError) as info:
        normalise_name(name)
    assert why in info.value.message


def test_backslash_as_separator() -> None:
    assert normalise_name("a\\b", backslash_is_separator=True) == "a/b"
    assert normalise_name("a\\b") == "a\\b"
    with pytest.raises(UnsafeArchiveError):
        normalise_name("\\abs", backslash_is_separator=True)


@pytest.mark.parametrize("target", ["", "/abs", "\\abs", "C:x", "a\nb", "a\u202eb", "x" * 4096])
def test_link_targets_refused(target: str) -> None:
    with pytest.raises(UnsafeArchiveError):
        check_link_target("l", target)


@pytest.mark.parametrize(
    ("links", "link", "expected"),
    [
        ({"l": "f"}, "l", ["f"]),
        ({"d/l": "../f"}, "d/l", ["f"]),
        ({"a": "b", "b": "c/d"}, "a", ["c", "d"]),
        ({"l": "d/e/../f"}, "l", ["d", "f"]),
        ({"self": "self"}, "self", ["self"]),  # a loop leads nowhere: kept, walked lexically
        ({"a": "b", "b": "a"}, "a", ["a"]),
        ({"d/l": "../d/./x"}, "d/l", ["d", "x"]),
    ],
)
def test_resolve_link(links: dict[str, str], link: str, expected: list[str]) -> None:
    assert resolve_link(links, link) == expected


@pytest.mark.parametrize(
    ("links", "link", "why"),
    [
        ({"l": ".."}, "l", "points outside"),
        ({"d/l": "../../x"}, "d/l", "points outside"),
        ({"a": "b/../..", "b": "a"}, "a", "points outside"),  # a loop then '..' past the root
        ({"d/up": "../..", "l": "d/up"}, "l", "points outside"),  # through another link
        ({f"l{i}": f"l{i + 1}" for i in range(45)}, "l0", "too many levels"),
    ],
)
def test_resolve_link_refuses(links: dict[str, str], link: str, why: str) -> None:
    with pytest.raises(UnsafeArchiveError) as info:
        resolve_link(links, link)
    assert why in info.value.message
