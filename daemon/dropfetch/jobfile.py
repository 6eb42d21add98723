"""Job files: names, the three forms, and the job's identity (SPEC §6). Pure code."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml

from dropfetch.checksums import Checksum, parse_checksum
from dropfetch.errors import BadJobError, DropfetchError, fragment
from dropfetch.names import has_control

__all__ = [
    "MAX_JOB_BYTES",
    "OPTIONS",
    "PRIORITIES",
    "JobSpec",
    "is_job_file",
    "job_name",
    "job_priority",
    "job_sha256",
    "parse_job",
]

T = TypeVar("T")
MAX_JOB_BYTES = 64 * 1024
MAX_NAME_BYTES = 200
JOB_SUFFIX = ".url"
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
    }
)
MAX_MIRRORS = 20
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
    checksum: Checksum | None = None  # ``checksum: ALGO:HEX``
    checksum_url: str | None = None  # a checksum file with the download's entry
    mirrors: tuple[str, ...] = ()  # more URLs of the same file, tried in order

    @property
    def checksums(self) -> tuple[Checksum, ...]:
        """What the download must match: ``sha256`` and ``checksum``, either or both."""
        given = (Checksum("sha256", self.sha256) if self.sha256 else None, self.checksum)
        return tuple(dict.fromkeys(c for c in given if c is not None))

    @property
    def urls(self) -> tuple[str, ...]:
        """The job's URL, then its mirrors."""
        return (self.url, *self.mirrors)


def is_job_file(name: str) -> bool:
    """Whether a directory entry is a job file (SPEC §6 ignore rules)."""
    return (
        name.endswith(JOB_SUFFIX)
        and len(name) > len(JOB_SUFFIX)
        and not name.startswith(".")  # hidden, and every temporary name (fsutil.temp_name)
    )


def job_name(filename: str) -> str:
    """``NAME.url`` -> ``NAME``; raises :class:`BadJobError` for an unusable name."""
    name = filename[: -len(JOB_SUFFIX)]
    if has_control(name):
        raise BadJobError("the job file's name contains control characters; rename it")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise BadJobError(f"the job name is longer than {MAX_NAME_BYTES} bytes; use a shorter name")
    if "\\" in name or name in (".", ".."):
        raise BadJobError(f"the job name {name!r} cannot be used as a directory name")
    return name


def job_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_job(data: bytes) -> JobSpec:
    """Parse a job file's bytes in any of the three forms. Raises BadJobError/BadUrlError."""
    text = _text(data)
    lines = [line.strip() for line in text.splitlines()]
    significant = [line for line in lines if line and not line.startswith(("#", ";"))]
    if not significant:
        raise BadJobError("the job file is empty; write the URL to download into it")
    first = significant[0]
    if first.lower() == "[internetshortcut]" or (first.startswith("[") and first.endswith("]")):
        return JobSpec(url=_checked_url(_shortcut_url(lines)))
    if _YAML_START.match(first):
        return _parse_yaml(text)
    return JobSpec(url=_checked_url(first))


def _text(data: bytes) -> str:
    """A job file's bytes as text: UTF-8 (a BOM is fine), at most MAX_JOB_BYTES."""
    if len(data) > MAX_JOB_BYTES:
        raise BadJobError(
            f"the job file is larger than {MAX_JOB_BYTES // 1024} KiB; it should hold one URL"
        )
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise BadJobError("the job file is UTF-16 text; save it as UTF-8 (or plain ASCII)")
    if b"\x00" in data:
        raise BadJobError("the job file contains NUL bytes; it should be a text file with a URL")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadJobError(
            f"the job file is not UTF-8 text (bad byte at offset {exc.start}); save it as UTF-8"
        ) from None


def _shortcut_url(lines: list[str]) -> str:
    """The ``URL=`` of the ``[InternetShortcut]`` section of a Windows .url file."""
    section = None
    for line in lines:
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip().lower()
        elif section == "internetshortcut" and "=" in line:
            key, _, value = line.partition("=")
            if key.strip().lower() == "url":
                return value.strip()
    raise BadJobError("the Internet Shortcut has no URL= line in its [InternetShortcut] section")


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
        priority=_priority(doc.get("priority", "normal")),
        url=_checked_url(url),
        sha256=sha.strip().lower() if isinstance(sha, str) else None,
        extract=_boolean(doc, "extract", "auto", extra=("auto",)) is not False,
        keep_archive=_boolean(doc, "keep_archive", None),
        filename=_optional(doc, "filename", _checked_filename),
        checksum=_optional(doc, "checksum", parse_checksum),
        checksum_url=_optional(doc, "checksum_url", _option_url("checksum_url")),
        mirrors=_mirrors(doc.get("mirrors")),
    )
    _check_checksums(spec)
    return spec


def _optional(doc: dict[str, Any], key: str, check: Callable[[Any], T]) -> T | None:
    value = doc.get(key)
    return None if value is None else check(value)


def _option_url(key: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise BadJobError(f"option {key} must be a URL")
        return _checked_url(value)

    return check


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
