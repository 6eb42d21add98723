"""The one name policy (dropfetch.names): the control-character rule, the safe-name
predicate, and the one escaping behind fsutil.display_name and logs.escape."""

from __future__ import annotations

import os
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dropfetch.fsutil import display_name
from dropfetch.logs import escape
from dropfetch.names import has_control, safe_name, shown

UNDECODABLE = os.fsdecode(b"caf\xe9")  # a surrogate escape, as os.fsdecode and tarfile give

# text, in the rule, usable as a name, as display_name shows it, as logs.escape shows it
TABLE = [
    ("nul\x00x", True, None, "nul\\x00x", "nul\\x00x"),
    ("a\nb", True, None, "a\\x0ab", "a\\nb"),
    ("a\tb", True, None, "a\\x09b", "a\\tb"),
    ("a\rb", True, None, "a\\x0db", "a\\rb"),
    ("esc\x1b[31m", True, None, "esc\\x1b[31m", "esc\\x1b[31m"),
    ("us\x1fx", True, None, "us\\x1fx", "us\\x1fx"),
    ("del\x7f", True, None, "del\\x7f", "del\\x7f"),
    ("c1\x80", True, None, "c1\\u0080", "c1\\u0080"),
    ("nel\x85x", True, None, "nel\\u0085x", "nel\\u0085x"),
    ("csi\x9b", True, None, "csi\\u009b", "csi\\u009b"),
    ("apc\x9f", True, None, "apc\\u009f", "apc\\u009f"),
    ("alm\u061c", True, None, "alm\\u061c", "alm\\u061c"),
    ("lrm\u200e", True, None, "lrm\\u200e", "lrm\\u200e"),
    ("rlm\u200f", True, None, "rlm\\u200f", "rlm\\u200f"),
    ("ls\u2028x", True, None, "ls\\u2028x", "ls\\u2028x"),
    ("ps\u2029x", True, None, "ps\\u2029x", "ps\\u2029x"),
    ("rlo\u202egnp.exe", True, None, "rlo\\u202egnp.exe", "rlo\\u202egnp.exe"),
    ("lri\u2066x\u2069", True, None, "lri\\u2066x\\u2069", "lri\\u2066x\\u2069"),
    # not in the rule, but not a name either: shown as the bytes / code points they are
    (UNDECODABLE, False, None, "caf\\xe9", "caf\\xe9"),
    (os.fsdecode(b"\xff\xfe"), False, None, "\\xff\\xfe", "\\xff\\xfe"),
    ("lone\ud800", False, None, "lone\\ud800", "lone\\ud800"),
    ("lone\udfff", False, None, "lone\\udfff", "lone\\udfff"),
    ("lone\udc7f", False, None, "lone\\udc7f", "lone\\udc7f"),  # below the escapes' range
    # plain text passes unchanged everywhere
    ("日本語.txt", False, "日本語.txt", "日本語.txt", "日本語.txt"),
    ("中文名", False, "中文名", "中文名", "中文名"),
    ("🙂 emoji", False, "🙂 emoji", "🙂 emoji", "🙂 emoji"),
    ("naïve café", False, "naïve café", "naïve café", "naïve café"),
    ("e\u0301", False, "e\u0301", "e\u0301", "e\u0301"),  # a combining accent
    ("עברית", False, "עברית", "עברית", "עברית"),  # right-to-left letters, no control
    # not controls, shown as they are; but a name dropfetch picks is printable text and
    # spaces only (a zero-width or no-break space hides what the name is)
    ("zero\u200bwidth", False, None, "zero\u200bwidth", "zero\u200bwidth"),
    ("nb\u00a0sp", False, None, "nb\u00a0sp", "nb\u00a0sp"),
    # a backslash: no name, shown as it is, doubled in logs (reversible)
    ("caf\\z.txt", False, None, "caf\\z.txt", "caf\\\\z.txt"),
]


@pytest.mark.parametrize(("text", "control", "safe", "name_form", "log_form"), TABLE)
def test_the_rule(
    text: str, control: bool, safe: str | None, name_form: str, log_form: str
) -> None:
    assert has_control(text) is control
    assert safe_name(text) == safe
    assert display_name(text) == name_form == shown(text)
    assert escape(text) == log_form == shown(text, reversible=True)
    for form in (name_form, log_form):
        form.encode("utf-8")  # strict: valid UTF-8
        assert not has_control(form)
        assert display_name(form) == form  # showing twice changes nothing more


@pytest.mark.parametrize("code", [*range(0x20), *range(0x7F, 0xA0)])
def test_every_c0_c1_and_del_is_in_the_rule(code: int) -> None:
    assert has_control(chr(code))
    assert safe_name(f"a{chr(code)}b") is None
    assert display_name(chr(code)) == (f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}")


@given(st.characters(exclude_categories=["Cs"]))
def test_the_rule_is_controls_and_line_and_bidi_format_characters(ch: str) -> None:
    expected = (
        unicodedata.category(ch) in ("Cc", "Zl", "Zp")
        or unicodedata.bidirectional(ch)
        in ("LRE", "RLE", "PDF", "LRO", "RLO", "LRI", "RLI", "FSI", "PDI")
        or ch in "\u061c\u200e\u200f"
    )
    assert has_control(ch) is expected
    assert (display_name(ch) == ch) is not expected


@given(st.text())
def test_display_name_and_escape_are_one_mechanism(text: str) -> None:
    """escape is display_name plus the backslash doubled and \\n \\r \\t named."""
    named = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    assert escape(text) == "".join(named.get(c) or display_name(c) for c in text)
    assert display_name(text) == "".join(display_name(c) for c in text)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("  padded.txt ", "padded.txt"),
        ("", None),
        ("   ", None),
        (None, None),
        (".hidden", None),
        (".", None),
        ("..", None),
        ("a/b", None),
        ("a\\b", None),
        ("x" * 255, "x" * 255),
        ("x" * 256, None),
        ("é" * 127, "é" * 127),
        ("é" * 128, None),
    ],
)
def test_safe_name(name: str | None, expected: str | None) -> None:
    assert safe_name(name) == expected
