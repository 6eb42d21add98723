"""Configuration: YAML in, frozen validated dataclasses out (SPEC §5).

Every key is optional. An unknown key, a wrong type or a value out of range raises
:class:`ConfigError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from dropfetch.errors import IOFailureError
from dropfetch.passwords import read_passwords_file

__all__ = [
    "Config",
    "ConfigError",
    "config_from_mapping",
    "load_config",
    "parse_size",
    "read_token_file",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_BLOCK_NETWORKS = ("127.0.0.0/8", "::1/128", "169.254.0.0/16", "fe80::/10", "0.0.0.0/8")

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


class ConfigError(Exception):
    """A configuration problem; the message names the file and the key."""


def parse_size(value: object) -> int:
    """``10GiB``, ``512MiB``, ``100k``, ``1.5G`` or a plain number of bytes.

    ``k``/``M``/``G`` without ``i`` are decimal (1000), with ``i`` binary (1024).
    """
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512MiB, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, float) and value >= 0:
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a size such as 512MiB, got {value!r}")
    m = _SIZE_RE.match(value)
    if not m:
        raise ValueError(f"expected a size such as 10GiB, 512MiB or 100k, got {value!r}")
    number, unit, suffix = m.groups()
    base = 1024 if suffix.lower().startswith("i") else 1000
    if unit == "" and suffix.lower() == "i":
        raise ValueError(f"not a size: {value!r}")
    return int(float(number) * base ** _UNITS[unit.lower()])


MAX_SEGMENTS = 16  # parallel Range connections of one download, at most


@dataclass(frozen=True, slots=True)
class DownloadConfig:
    timeout_connect: float = 10.0
    timeout_read: float = 60.0
    max_attempts: int = 5
    backoff_initial: float = 2.0
    backoff_max: float = 300.0
    max_size: int = 20 * 1024**3
    max_redirects: int = 10
    rate_limit: int | None = None  # bytes/s per job
    rate_limit_total: int | None = None  # bytes/s for the whole daemon, shared by jobs
    user_agent: str | None = None
    netrc: Path | None = None  # credentials per host (checked at start)
    proxy: str | None = None  # http://[user:pass@]host:port; may hold a secret: never log it
    ca_bundle: Path | None = None  # PEM authorities trusted besides the system's
    segments: int = 1  # parallel Range connections per download (a job's overrides)
    segment_min_size: int = 16 * 1024**2  # no segment smaller than this
    max_connections_per_host: int = 4  # a download's connections to one host, at most
    block_networks: tuple[Network, ...] = tuple(
        ipaddress.ip_network(n) for n in DEFAULT_BLOCK_NETWORKS
    )


@dataclass(frozen=True, slots=True)
class ExtractConfig:
    max_total_size: int = 100 * 1024**3
    max_files: int = 200_000
    max_ratio: float = 1000.0
    symlinks: Literal["inside", "skip", "fail"] = "inside"
    # an archive whose members all sit under one top-level directory publishes that
    # directory's content as outbox/NAME
    flatten: bool = False
    # passwords, one a line, tried in order after the job's own ``password``
    passwords_file: Path | None = None


@dataclass(frozen=True, slots=True)
class LeaseConfig:
    ttl: float = 60.0
    host_id: str = field(default_factory=socket.gethostname)


@dataclass(frozen=True, slots=True)
class StatusConfig:
    update_interval: float = 0.5


@dataclass(frozen=True, slots=True)
class HttpConfig:
    listen: str | None = None
    token_file: Path | None = None


@dataclass(frozen=True, slots=True)
class HooksConfig:
    on_done: tuple[str, ...] | None = None
    on_failed: tuple[str, ...] | None = None
    timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True, slots=True)
class Config:
    inbox: Path = Path("var/inbox")
    outbox: Path = Path("var/outbox")
    work_dir: Path | None = None
    workers: int = 4
    recursive: bool = False
    observer: Literal["auto", "inotify", "polling"] = "auto"
    poll_interval: float = 2.0
    rescan_interval: float = 60.0
    settle_time: float = 1.0
    create_dirs: bool = True
    on_job_removed: Literal["purge", "keep"] = "purge"
    keep_archive: bool = False
    min_free_space: int = 1024**3
    shutdown_timeout: float = 10.0
    download: DownloadConfig = field(default_factory=DownloadConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    lease: LeaseConfig = field(default_factory=LeaseConfig)
    status: StatusConfig = field(default_factory=StatusConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    hooks: HooksConfig = field(default_factory=HooksConfig)
    log: LogConfig = field(default_factory=LogConfig)
    source: Path | None = None  # the file this was loaded from, if any

    @property
    def work(self) -> Path:
        """The work directory: ``work_dir`` or ``<outbox>/.dropfetch``."""
        return self.work_dir if self.work_dir is not None else self.outbox / ".dropfetch"

    def to_dict(self) -> dict[str, Any]:
        """The effective configuration as plain YAML-able data."""
        data: dict[str, Any] = _plain(self)
        return data


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path | ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    return value


# --- validation --------------------------------------------------------------------


class _Reader:
    """Reads one section of a mapping, naming the file and the key in every error."""

    def __init__(self, data: Mapping[str, Any], *, where: str, prefix: str, base: Path) -> None:
        self.data = data
        self.where = where
        self.prefix = prefix
        self.base = base
        self.seen: set[str] = set()

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where}: key {self.prefix}{key!s}: {message}")

    def has(self, key: str) -> bool:
        self.seen.add(key)
        return key in self.data

    def raw(self, key: str) -> Any:
        self.seen.add(key)
        return self.data[key]

    def finish(self, allowed: set[str]) -> None:
        for key in self.data:
            if key not in allowed:
                raise self.fail(str(key), "unknown key")

    def number(
        self,
        key: str,
        default: float,
        *,
        minimum: float = 0.0,
        strict_min: bool = False,
        integer: bool = False,
        nullable: bool = False,
    ) -> Any:
        if not self.has(key):
            return default
        value = self.raw(key)
        if value is None and nullable:
            return None
        problem = _number_problem(value, minimum=minimum, strict_min=strict_min, integer=integer)
        if problem is not None:
            raise self.fail(key, problem)
        return int(value) if integer else float(value)

    def size(self, key: str, default: int | None, *, nullable: bool = False) -> int | None:
        if not self.has(key):
            return default
        value = self.raw(key)
        if value is None and nullable:
            return None
        try:
            return parse_size(value)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None

    def boolean(self, key: str, default: bool) -> bool:
        if not self.has(key):
            return default
        value = self.raw(key)
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {value!r}")
        return value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> Any:
        if not self.has(key):
            return default
        value = self.raw(key)
        if value not in choices:
            raise self.fail(key, f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def string(self, key: str, default: str | None) -> str | None:
        if not self.has(key):
            return default
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"expected a non-empty string, got {value!r}")
        return value

    def path(self, key: str, default: Path | None) -> Path | None:
        if not self.has(key):
            return _resolve(default, self.base)
        value = self.string(key, None)
        return None if value is None else _resolve(Path(value).expanduser(), self.base)

    def argv(self, key: str) -> tuple[str, ...] | None:
        if not self.has(key):
            return None
        value = self.raw(key)
        if value is None:
            return None
        if isinstance(value, str):
            raise self.fail(
                key,
                "expected a list of arguments (run without a shell), "
                f"e.g. [/usr/local/bin/notify, --job], got the string {value!r}",
            )
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(a, str | int | float) for a in value)
        ):
            raise self.fail(key, f"expected a non-empty list of arguments, got {value!r}")
        return tuple(str(a) for a in value)

    def section(self, key: str) -> _Reader:
        value = self.raw(key) if self.has(key) else {}
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise self.fail(key, f"expected a mapping, got {value!r}")
        return _Reader(value, where=self.where, prefix=f"{self.prefix}{key}.", base=self.base)


def _number_problem(
    value: object, *, minimum: float, strict_min: bool, integer: bool
) -> str | None:
    """What is wrong with ``value`` as a number of a key (None: nothing)."""
    kind = "an integer" if integer else "a number"
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (integer and not isinstance(value, int))
    ):
        return f"expected {kind}, got {value!r}"
    if value < minimum or (strict_min and value == minimum):
        bound = "greater than" if strict_min else "at least"
        return f"must be {bound} {minimum:g}, got {value!r}"
    return None


def _resolve(path: Path | None, base: Path) -> Path | None:
    if path is None:
        return None
    return path if path.is_absolute() else base / path


def _download(r: _Reader) -> DownloadConfig:
    d = DownloadConfig()
    networks: tuple[Network, ...] = d.block_networks
    if r.has("block_networks"):
        raw = r.raw("block_networks")
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            raise r.fail("block_networks", f"expected a list of networks, got {raw!r}")
        try:
            networks = tuple(ipaddress.ip_network(str(n), strict=False) for n in raw)
        except ValueError as exc:
            raise r.fail("block_networks", str(exc)) from None
    backoff_initial = r.number("backoff_initial", d.backoff_initial)
    backoff_max = r.number("backoff_max", d.backoff_max)
    if backoff_max < backoff_initial:
        raise r.fail("backoff_max", "must be at least backoff_initial")
    rate = r.size("rate_limit", None, nullable=True)
    if rate == 0:
        raise r.fail("rate_limit", "must be more than 0 bytes/s, or null for no limit")
    # 0 or null: no cap for the whole daemon
    rate_total = r.size("rate_limit_total", None, nullable=True) or None
    out = DownloadConfig(
        timeout_connect=r.number("timeout_connect", d.timeout_connect, strict_min=True),
        timeout_read=r.number("timeout_read", d.timeout_read, strict_min=True),
        max_attempts=r.number("max_attempts", d.max_attempts, minimum=1, integer=True),
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        max_size=r.size("max_size", d.max_size) or d.max_size,
        max_redirects=r.number("max_redirects", d.max_redirects, integer=True),
        rate_limit=rate,
        rate_limit_total=rate_total,
        user_agent=r.string("user_agent", None),
        netrc=_netrc(r),
        proxy=_proxy(r),
        ca_bundle=_ca_bundle(r),
        segments=_segments(r, d.segments),
        segment_min_size=_segment_min_size(r, d.segment_min_size),
        max_connections_per_host=r.number(
            "max_connections_per_host", d.max_connections_per_host, minimum=1, integer=True
        ),
        block_networks=networks,
    )
    r.finish({f.name for f in dataclasses.fields(DownloadConfig)})
    return out


def _segments(r: _Reader, default: int) -> int:
    count: int = r.number("segments", default, minimum=1, integer=True)
    if count > MAX_SEGMENTS:
        raise r.fail("segments", f"must be at most {MAX_SEGMENTS}")
    return count


def _segment_min_size(r: _Reader, default: int) -> int:
    size = r.size("segment_min_size", default)
    if not size:
        raise r.fail("segment_min_size", "must be more than 0 bytes")
    return size


def _netrc(r: _Reader) -> Path | None:
    """``netrc``: false/null (none), true (~/.netrc) or a path; the file is read now."""
    from dropfetch.credentials import load_netrc

    if not r.has("netrc") or r.raw("netrc") in (None, False):
        return None
    path = Path.home() / ".netrc" if r.raw("netrc") is True else r.path("netrc", None)
    if path is None:
        return None
    try:
        load_netrc(path)
    except ValueError as exc:
        raise r.fail("netrc", str(exc)) from None
    return path


def _proxy(r: _Reader) -> str | None:
    """``proxy``: an http:// URL with a host (its credentials never in a message)."""
    from urllib.parse import urlsplit

    from dropfetch.urlpolicy import redact_url

    value = r.string("proxy", None)
    if value is None:
        return None
    try:
        parts = urlsplit(value.strip())
        ok = parts.scheme == "http" and bool(parts.hostname) and parts.port != 0
    except ValueError:
        ok = False
    if not ok:
        raise r.fail(
            "proxy", f"expected an http:// URL such as http://proxy:3128, got {redact_url(value)}"
        )
    return value.strip()


def _ca_bundle(r: _Reader) -> Path | None:
    """``ca_bundle``: a PEM file of authorities, loaded now to check it."""
    import ssl

    path = r.path("ca_bundle", None)
    if path is None:
        return None
    try:
        ssl.create_default_context().load_verify_locations(cafile=str(path))
    except FileNotFoundError:
        raise r.fail("ca_bundle", f"the file {path} does not exist") from None
    except ssl.SSLError:
        raise r.fail("ca_bundle", f"{path} holds no PEM certificate") from None
    except OSError as exc:
        raise r.fail("ca_bundle", f"cannot read {path}: {exc.strerror}") from None
    return path


def _passwords_file(r: _Reader) -> Path | None:
    """``passwords_file``: read now to check it (and again at each unpacking)."""
    path = r.path("passwords_file", None)
    if path is not None:
        try:
            read_passwords_file(path)
        except IOFailureError as exc:
            raise r.fail("passwords_file", exc.message) from None
    return path


def _extract(r: _Reader) -> ExtractConfig:
    d = ExtractConfig()
    out = ExtractConfig(
        max_total_size=r.size("max_total_size", d.max_total_size) or d.max_total_size,
        max_files=r.number("max_files", d.max_files, minimum=1, integer=True),
        max_ratio=r.number("max_ratio", d.max_ratio, minimum=1),
        symlinks=r.choice("symlinks", d.symlinks, ("inside", "skip", "fail")),
        flatten=r.boolean("flatten", d.flatten),
        passwords_file=_passwords_file(r),
    )
    r.finish({f.name for f in dataclasses.fields(ExtractConfig)})
    return out


_HOST_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _lease(r: _Reader) -> LeaseConfig:
    ttl = r.number("ttl", 60.0, minimum=1)
    host_id = r.string("host_id", None) or socket.gethostname()
    if not _HOST_ID_RE.match(host_id):
        raise r.fail("host_id", f"use letters, digits, '.', '_' or '-' only, got {host_id!r}")
    r.finish({"ttl", "host_id"})
    return LeaseConfig(ttl=ttl, host_id=host_id)


_LISTEN_RE = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")


MAX_TOKEN_BYTES = 4096


def read_token_file(path: Path) -> str:
    """The bearer token in ``path``: the file's text without surrounding white space.

    Raises ValueError, in plain words, for a file that is missing, unreadable, not a
    regular file (a directory, FIFO or device: opened without blocking, never read),
    empty or white space only, not UTF-8, or not one word of printable ASCII.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ValueError(
            f"the token file {path} does not exist; create it with the token "
            "on one line (e.g. from `openssl rand -hex 32`)"
        ) from None
    except OSError as exc:
        raise ValueError(f"cannot read the token file {path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(
                f"the token file {path} is not a regular file (a directory, "
                "FIFO or device?); point http.token_file at a file with the token"
            )
        chunks = []
        while chunk := os.read(fd, MAX_TOKEN_BYTES + 1):
            chunks.append(chunk)
            if sum(map(len, chunks)) > MAX_TOKEN_BYTES:
                raise ValueError(
                    f"the token file {path} is over {MAX_TOKEN_BYTES} bytes; "
                    "it should hold one token"
                )
    except OSError as exc:
        raise ValueError(f"cannot read the token file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    try:
        token = b"".join(chunks).decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        raise ValueError(f"the token file {path} is not UTF-8 text") from None
    if not token:
        raise ValueError(
            f"the token file {path} is empty; write the token in it (an empty "
            "token would let anybody in)"
        )
    if not all("!" <= c <= "~" for c in token):
        raise ValueError(
            f"the token in {path} must be one word of printable ASCII "
            "characters (no spaces or line breaks inside)"
        )
    return token


def _http(r: _Reader) -> HttpConfig:
    listen = r.string("listen", None)
    if listen is not None:
        m = _LISTEN_RE.match(listen)
        if not m or int(m.group(2)) > 65535 or not _is_host(m.group(1)):
            raise r.fail(
                "listen", f"expected HOST:PORT such as 127.0.0.1:8008 or [::1]:8008, got {listen!r}"
            )
    token_file = r.path("token_file", None)
    if token_file is not None:
        try:
            read_token_file(token_file)
        except ValueError as exc:
            raise r.fail("token_file", str(exc)) from None
    r.finish({"listen", "token_file"})
    return HttpConfig(listen=listen, token_file=token_file)


def _is_host(host: str) -> bool:
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    return all(label and len(label) < 64 for label in host.split(".")) and len(host) < 254


def config_from_mapping(data: Any, *, where: str = "<config>", base: Path | None = None) -> Config:
    """Validate a parsed YAML document into a :class:`Config`."""
    base = base if base is not None else Path.cwd()
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys at the top level")
    r = _Reader(data, where=where, prefix="", base=base)
    d = Config()
    inbox = r.path("inbox", d.inbox)
    outbox = r.path("outbox", d.outbox)
    if inbox is None or outbox is None:
        raise r.fail("inbox" if inbox is None else "outbox", "must be a path")
    hooks_r = r.section("hooks")
    hooks = HooksConfig(
        on_done=hooks_r.argv("on_done"),
        on_failed=hooks_r.argv("on_failed"),
        timeout=hooks_r.number("timeout", 60.0, strict_min=True),
    )
    hooks_r.finish({"on_done", "on_failed", "timeout"})
    log_r = r.section("log")
    log = LogConfig(
        level=log_r.choice("level", "info", ("debug", "info", "warning", "error")),
        format=log_r.choice("format", "text", ("text", "json")),
    )
    log_r.finish({"level", "format"})
    status_r = r.section("status")
    status = StatusConfig(update_interval=status_r.number("update_interval", 0.5))
    status_r.finish({"update_interval"})
    cfg = Config(
        inbox=inbox,
        outbox=outbox,
        work_dir=r.path("work_dir", None),
        workers=r.number("workers", d.workers, minimum=1, integer=True),
        recursive=r.boolean("recursive", d.recursive),
        observer=r.choice("observer", d.observer, ("auto", "inotify", "polling")),
        poll_interval=r.number("poll_interval", d.poll_interval, minimum=0.05),
        rescan_interval=r.number("rescan_interval", d.rescan_interval, minimum=0.1),
        settle_time=r.number("settle_time", d.settle_time),
        create_dirs=r.boolean("create_dirs", d.create_dirs),
        on_job_removed=r.choice("on_job_removed", d.on_job_removed, ("purge", "keep")),
        keep_archive=r.boolean("keep_archive", d.keep_archive),
        min_free_space=r.size("min_free_space", d.min_free_space) or 0,
        shutdown_timeout=r.number("shutdown_timeout", d.shutdown_timeout, strict_min=True),
        download=_download(r.section("download")),
        extract=_extract(r.section("extract")),
        lease=_lease(r.section("lease")),
        status=status,
        http=_http(r.section("http")),
        hooks=hooks,
        log=log,
    )
    r.finish({f.name for f in dataclasses.fields(Config)} - {"source"})
    return cfg


class _NoDuplicatesLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice (a typo that would hide a setting)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_NoDuplicatesLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def load_config(path: Path | str | None, **overrides: Any) -> Config:
    """Load ``path`` (or the built-in defaults when ``None``) and apply CLI overrides.

    Overrides are top-level keys (``inbox``, ``outbox``, ``workers``, ``observer``)
    whose values are validated like the file's.
    """
    data: dict[str, Any] = {}
    where = "<defaults>"
    base = Path.cwd()
    source: Path | None = None
    if path is not None:
        source = Path(path).resolve()
        where = str(path)
        base = source.parent
        try:
            text = source.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}: cannot read the file: {exc}") from None
        try:
            loaded = yaml.load(text, Loader=_NoDuplicatesLoader)  # noqa: S506 - a SafeLoader
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{where}: expected a mapping of keys at the top level")
        data = dict(loaded or {})
    for key, value in overrides.items():
        if value is not None:
            data[key] = str(Path(value).resolve()) if key in ("inbox", "outbox") else value
    cfg = config_from_mapping(data, where=where, base=base)
    return dataclasses.replace(cfg, source=source)
