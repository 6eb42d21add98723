"""Job files: names, the three forms, and the job's identity (SPEC §6). Pure code."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml

from dropfetch.checksums import Checksum, parse_checksum
from dropfetch.errors import BadJobError, DropfetchError, fragment
from dropfetch.linkfiles import desktop_url, is_shortcut_start, shortcut_url, webloc_url
from dropfetch.names import has_control

__all__ = [
    "MAX_JOB_BYTES",
    "OPTIONS",
    "PRIORITIES",
    "JobSpec",
    "is_job_file",
    "job_headers",
    "job_name",
    "job_priority",
    "job_sha256",
    "job_suffix",
    "parse_job",
    "split_job_file",
]

T = TypeVar("T")
MAX_JOB_BYTES = 64 * 1024
MAX_NAME_BYTES = 200
JOB_SUFFIX = ".url"  # what dropfetch writes (submit); the desktops' link files too:
JOB_SUFFIXES = (JOB_SUFFIX, ".webloc", ".desktop")  # in any case (SPEC §6)
SIDECAR_SUFFIX = ".status.json"
# request files beside a job file (``dropfetch pause`` / ``retry``): only their
# presence as a regular file counts, they are never opened
PAUSE_SUFFIX = ".pause"
RETRY_SUFFIX = ".retry"
REQUEST_SUFFIXES = (PAUSE_SUFFIX, RETRY_SUFFIX)

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_YAML_START = re.compile(r"^(---|\{|[A-Za-z_][A-Za-z0-9_]*\s*:(\s|$))")
# Every key a YAML job file may have (``url`` and the options): ``submit`` and the HTTP
# front end accept exactly these, so an option added here needs no change there
OPTIONS = frozenset(
    {
        "url",
        "sha256",
        "checksum",
        "checksum_url",
        "mirrors",
        "extract",
        "keep_archive",
        "filename",
        "priority",
        "headers",
        "segments",
        "password",
    }
)
MAX_MIRRORS = 20
MAX_SEGMENTS = 16  # as download.segments
PRIORITIES = ("high", "normal", "low")  # the order jobs are taken in (dropfetch.jobqueue)


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a job file asks for."""

    url: str
    sha256: str | None = None
    extract: bool = True
    keep_archive: bool | None = None  # None: the config's keep_archive
    filename: str | None = None
    priority: str = "normal"  # high | normal | low: the order waiting jobs are taken in
    # extra request headers (often credentials): never shown, not even by repr()
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    checksum: Checksum | None = None  # ``checksum: ALGO:HEX``
    checksum_url: str | None = None  # a checksum file with the download's entry
    mirrors: tuple[str, ...] = ()  # more URLs of the same file, tried in order
    segments: int | None = None  # parallel Range connections; None: download.segments
    # ``extract: true``: must be an archive (else corrupt_archive), whatever its name says
    extract_forced: bool = False
    # for an encrypted archive, tried before extract.passwords_file: never shown
    password: str | None = field(default=None, repr=False)

    @property
    def checksums(self) -> tuple[Checksum, ...]:
        """What the download must match: ``sha256`` and ``checksum``, either or both."""
        given = (Checksum("sha256", self.sha256) if self.sha256 else None, self.checksum)
        return tuple(dict.fromkeys(c for c in given if c is not None))

    @property
    def urls(self) -> tuple[str, ...]:
        """The job's URL, then its mirrors."""
        return (self.url, *self.mirrors)


def split_job_file(name: str) -> tuple[str, str] | None:
    """``NAME.url`` (``.webloc``, ``.desktop``, in any case) -> (NAME, the lower-case
    suffix); None for any other name and for the SPEC §6 ignore rules."""
    if name.startswith("."):  # hidden, and every temporary name (fsutil.temp_name)
        return None
    lower = name.lower()
    for suffix in JOB_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], suffix
    return None


def is_job_file(name: str) -> bool:
    """Whether a directory entry is a job file (SPEC §6 ignore rules)."""
    return split_job_file(name) is not None


def job_suffix(filename: str) -> str:
    """The lower-case suffix of a job file's name (its form: parse_job's ``suffix``)."""
    split = split_job_file(filename)
    return JOB_SUFFIX if split is None else split[1]


def job_name(filename: str) -> str:
    """``NAME.url`` -> ``NAME``; raises :class:`BadJobError` for an unusable name."""
    split = split_job_file(filename)
    name = split[0] if split is not None else filename
    if has_control(name):
        raise BadJobError("the job file's name contains control characters; rename it")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise BadJobError(f"the job name is longer than {MAX_NAME_BYTES} bytes; use a shorter name")
    if "\\" in name or name in (".", ".."):
        raise BadJobError(f"the job name {name!r} cannot be used as a directory name")
    return name


def job_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_job(data: bytes, suffix: str = JOB_SUFFIX) -> JobSpec:
    """Parse a job file's bytes in any of its forms: a ``.url`` (``suffix``) is plain,
    an Internet Shortcut or YAML; a ``.webloc`` or ``.desktop`` is the desktop's link
    file. Raises BadJobError/BadUrlError."""
    if len(data) > MAX_JOB_BYTES:
        raise BadJobError(
            f"the job file is larger than {MAX_JOB_BYTES // 1024} KiB; it should hold one URL"
        )
    if suffix == ".webloc":
        return JobSpec(url=_checked_url(webloc_url(data)))
    if suffix == ".desktop":
        return JobSpec(url=_checked_url(desktop_url(_utf8(_text(data), data))))
    return _parse_url_file(data)


def _parse_url_file(data: bytes) -> JobSpec:
    """A ``.url``: plain, a Windows Internet Shortcut (which may be in the ANSI code
    page) or YAML."""
    text = _text(data)
    lines = [line.strip() for line in (text or data.decode("cp1252", "replace")).splitlines()]
    significant = [line for line in lines if line and not line.startswith(("#", ";"))]
    if not significant:
        _utf8(text, data)  # bytes that are not UTF-8 say so first
        raise BadJobError("the job file is empty; write the URL to download into it")
    first = significant[0]
    if is_shortcut_start(first):
        return JobSpec(url=_checked_url(shortcut_url(data, text)))
    text = _utf8(text, data)
    if _YAML_START.match(first):
        return _parse_yaml(text)
    return JobSpec(url=_checked_url(first))


def _text(data: bytes) -> str | None:
    """A job file's bytes as text: UTF-8 (a BOM is fine); None for bytes that are not
    UTF-8 (only a Windows shortcut may be in the ANSI code page: :func:`_utf8`)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise BadJobError("the job file is UTF-16 text; save it as UTF-8 (or plain ASCII)")
    if b"\x00" in data:
        raise BadJobError("the job file contains NUL bytes; it should be a text file with a URL")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def _utf8(text: str | None, data: bytes) -> str:
    """``text``, or the error of bytes that are not UTF-8 (only a shortcut may be ANSI)."""
    if text is None:
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise _not_utf8(exc.start) from None
    return text


def _not_utf8(offset: int) -> BadJobError:
    return BadJobError(
        f"the job file is not UTF-8 text (bad byte at offset {offset}); save it as UTF-8"
    )


class _NoAliasLoader(yaml.BaseLoader):
    """Every scalar a string (a sha256 of digits stays text), and no anchors or
    aliases: no 'billion laughs' in job files."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise BadJobError("the YAML job file uses aliases (*name), which are not allowed")
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if getattr(event, "anchor", None):
            raise BadJobError("the YAML job file uses anchors (&name), which are not allowed")
        return super().compose_node(parent, index)


def _parse_yaml(text: str) -> JobSpec:
    try:
        doc = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - builds only str/list/dict
    except yaml.YAMLError as exc:
        raise BadJobError(f"the job file is not valid YAML ({_yaml_problem(exc)})") from None
    if not isinstance(doc, dict):
        raise BadJobError("a YAML job file must be a mapping with a 'url:' key")
    unknown = sorted(str(k) for k in doc if k not in OPTIONS)
    if unknown:
        shown = fragment(", ".join(unknown))
        raise BadJobError(
            f"unknown option(s) in the job file: {shown}; known: {', '.join(sorted(OPTIONS))}"
        )
    url = doc.get("url")
    if not isinstance(url, str):
        raise BadJobError("the YAML job file needs 'url:' with the URL to download")
    sha = doc.get("sha256")
    if sha is not None and (not isinstance(sha, str) or not _HEX64.match(sha.strip())):
        raise BadJobError("option sha256 must be 64 hexadecimal digits")
    spec = JobSpec(
        headers=job_headers(doc.get("headers")),
        priority=_priority(doc.get("priority", "normal")),
        url=_checked_url(url),
        sha256=sha.strip().lower() if isinstance(sha, str) else None,
        extract=_boolean(doc, "extract", "auto", extra=("auto",)) is not False,
        extract_forced=_boolean(doc, "extract", "auto", extra=("auto",)) is True,
        password=_optional(doc, "password", _password),
        keep_archive=_boolean(doc, "keep_archive", None),
        filename=_optional(doc, "filename", _checked_filename),
        checksum=_optional(doc, "checksum", parse_checksum),
        checksum_url=_optional(doc, "checksum_url", _option_url("checksum_url")),
        mirrors=_mirrors(doc.get("mirrors")),
        segments=_optional(doc, "segments", _segments),
    )
    _check_checksums(spec)
    return spec


MAX_PASSWORD = 1024


def _password(value: Any) -> str:
    if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
        raise BadJobError("option password must be a non-empty string")
    text = str(value)
    if len(text) > MAX_PASSWORD or "\n" in text or "\r" in text:
        raise BadJobError(f"option password must be one line of at most {MAX_PASSWORD} characters")
    return text


def _optional(doc: dict[str, Any], key: str, check: Callable[[Any], T]) -> T | None:
    value = doc.get(key)
    return None if value is None else check(value)


def _option_url(key: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise BadJobError(f"option {key} must be a URL")
        return _checked_url(value)

    return check


def _segments(value: object) -> int:
    """``segments: N``: the loader gives a string (an int from another caller)."""
    text = str(value).strip() if isinstance(value, str | int) else ""
    if isinstance(value, bool) or not (text.isascii() and text.isdecimal()):
        text = "0"
    if not 1 <= int(text) <= MAX_SEGMENTS:
        raise BadJobError(f"option segments must be a whole number from 1 to {MAX_SEGMENTS}")
    return int(text)


def _mirrors(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadJobError("option mirrors must be a list of URLs")
    if len(value) > MAX_MIRRORS:
        raise BadJobError(f"option mirrors has more than {MAX_MIRRORS} URLs")
    return tuple(_checked_url(v) for v in value)


def _check_checksums(spec: JobSpec) -> None:
    """``sha256`` and a ``checksum`` of sha256 must say the same."""
    c = spec.checksum
    if spec.sha256 and c is not None and c.algo == "sha256" and c.hex != spec.sha256:
        raise BadJobError(
            "options sha256 and checksum disagree about the download's SHA-256; give one"
        )


# RFC 9110 token characters
_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# what dropfetch itself decides about a request: a job may not set these
_RESERVED_HEADERS = frozenset(
    {"host", "range", "if-range", "content-length", "transfer-encoding", "connection"}
)


def job_headers(value: object) -> tuple[tuple[str, str], ...]:
    """The ``headers`` option: a mapping of header names to values.

    Names must be HTTP tokens and not one dropfetch sets itself; values must be text
    without CR, LF or NUL. A message names the header, never quotes its value (it is
    often a credential).
    """
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise BadJobError("option headers must be a mapping such as {Authorization: 'Bearer ...'}")
    out: list[tuple[str, str]] = []
    for name, text in value.items():
        if not isinstance(name, str) or not _TOKEN_RE.match(name):
            raise BadJobError(  # not quoted: a mistyped line may have its value in the name
                "option headers: a header name is not valid (letters, digits and "
                "!#$%&'*+.^_`|~- only, e.g. Authorization)"
            )
        if name.lower() in _RESERVED_HEADERS:
            raise BadJobError(f"option headers: {name} is set by dropfetch and cannot be given")
        if not isinstance(text, str) or not _header_value_ok(text):
            raise BadJobError(
                f"option headers: the value of {name} must be one line of Latin-1 text "
                "(no CR, LF, NUL or other control characters)"
            )
        out.append((name, text.strip(" \t")))
    return tuple(out)


def _header_value_ok(text: str) -> bool:
    return all(c == "\t" or " " <= c <= "~" or "\xa0" <= c <= "\xff" for c in text)


def _priority(value: object) -> str:
    text = value.strip().lower() if isinstance(value, str) else ""
    if text not in PRIORITIES:
        raise BadJobError(
            f"option priority must be 'high', 'normal' or 'low', got {fragment(str(value))}"
        )
    return text


def job_priority(data: bytes | object) -> str:
    """The ``priority`` of a job file's bytes, cheaply (the intake asks for every job it
    reports): only a file that mentions ``priority`` is parsed; a job file that does not
    parse is ``normal`` (its run fails it)."""
    if not isinstance(data, bytes) or b"priority" not in data:
        return "normal"
    try:
        return parse_job(data).priority
    except DropfetchError:
        return "normal"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what, without the snippet of the file that PyYAML quotes."""
    if isinstance(exc, yaml.reader.ReaderError):
        return f"character {exc.position + 1}: {exc.reason}"
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = fragment(problem, 50)[1:-1] if isinstance(problem, str) else type(exc).__name__
    return where + what


_TRUE = ("true", "yes", "on")
_FALSE = ("false", "no", "off")


def _boolean(doc: dict[str, Any], key: str, default: Any, *, extra: tuple[str, ...] = ()) -> Any:
    value = doc.get(key)
    if value is None:
        return default
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text in extra:
        return text
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    choices = " or ".join([*(repr(e) for e in extra), "true", "false"])
    raise BadJobError(f"option {key} must be {choices}, got {fragment(str(value))}")


def _checked_filename(value: object) -> str:
    if not isinstance(value, str) or not value or value in (".", ".."):
        raise BadJobError("option filename must be a plain file name")
    if "/" in value or "\\" in value:
        raise BadJobError(
            f"option filename must be a bare name without a path, got {fragment(value)}"
        )
    if has_control(value) or len(value.encode()) > 255:
        raise BadJobError("option filename has control characters or is longer than 255 bytes")
    return value


def _checked_url(url: str) -> str:
    from dropfetch.urlpolicy import check_url

    url = url.strip()
    if any(c.isspace() for c in url) or has_control(url):
        raise BadJobError(
            "the URL contains spaces or control characters; percent-encode them (a space is %20)"
        )
    return check_url(url)
