"""RAR archives that libarchive cannot decode (solid RAR 4, encrypted RAR), decoded by
The Unarchiver's ``lsar``/``unar`` (Debian ``unar``); every entry is checked and written
by dropfetch's own output tree.

``lsar -j`` lists the members (names, types, sizes, link targets, checksums); ``unar -o
-`` sends the data of every file (and of every RAR 4 symbolic link: its target) one after
the other, in the archive's order, and nothing else: each member is cut from that stream
by the size the listing claims, checked against its CRC-32 as it is written, and the
stream must end exactly there. ``unar -o -`` checks no checksum itself, so the members
whose checksum only lsar can verify (BLAKE2sp, or keyed by the password) are tested by
``lsar -t`` first. The tools see the archive alone in a private directory (unar looks
for volumes beside it), with a clean environment.

Passwords reach both tools on their command line (``-p``): The Unarchiver has no other
way that works without a terminal (its prompt needs one on standard input and output).
README and docs/SECURITY.md say what that exposes.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from dropfetch.archive.blake2sp import Blake2sp
from dropfetch.archive.compression import CHUNK
from dropfetch.archive.libarc import LibarchiveCannot
from dropfetch.archive.members import MAX_LINK_TARGET, normalise_name
from dropfetch.archive.rarhead import HEAD_BYTES, is_volume
from dropfetch.archive.tree import Output
from dropfetch.archive.unarlist import Entry, Listing, ListingReader
from dropfetch.archive.unarproc import SILENCE_TIMEOUT, ToolRun
from dropfetch.errors import (
    CorruptArchiveError,
    UnsafeArchiveError,
    UnsupportedArchiveError,
    fragment,
    from_os_error,
)
from dropfetch.passwords import encrypted

__all__ = [
    "INSTALL_HINT",
    "extract_unar",
    "failure_message",
    "write_entries",
]

_Read = Callable[[int], bytes]
TEST_RATE = 1024 * 1024  # bytes a second lsar -t decodes at least (its silence per member)
_SUMMARY = re.compile(r"\d+ passed, \d+ failed")  # lsar -t's last line
_FAILED = re.compile(r"fail|wrong|error", re.IGNORECASE)  # a line that says what failed
INSTALL_HINT = "install unar (Debian: apt-get install unar)"


@dataclass(frozen=True, slots=True)
class _Tools:
    lsar: str
    unar: str
    home: str  # the private directory: the archive's link, HOME, standard error
    archive: str  # the archive, alone in ``home``


def extract_unar(
    archive: Path, out: Output, passwords: Sequence[str], cannot: LibarchiveCannot
) -> None:
    """Extract the RAR ``archive`` through ``out`` with lsar/unar, trying ``passwords``
    in order; ``cannot`` says why libarchive could not (its message names the kind of
    RAR when the tools are missing)."""
    _check_not_a_volume(archive)
    with _tools(archive, cannot) as tools:
        listing, password = _listing(tools, passwords, out)
        if listing.encrypted and password is None:
            password = _choose_password(tools, listing, passwords, out)
        elif listing.needs_test and (failed := _test(tools, listing, password, out)):
            raise CorruptArchiveError(failed)
        argv = [tools.unar, "-nr", "-k", "skip", "-o", "-", *_pw(password), tools.archive]
        with ToolRun(argv, tools.home, out.check_cancel) as run:
            write_entries(listing, run.read, out)
            status = run.wait()
            if status != 0:
                said = run.stderr_tail()
                raise CorruptArchiveError(failure_message("unar", status, said, passwords))


def _check_not_a_volume(archive: Path) -> None:
    try:
        with archive.open("rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError as exc:
        raise from_os_error(exc, "reading the archive") from exc
    if is_volume(head):
        raise UnsupportedArchiveError(
            "the archive is one volume of a multi-volume RAR archive (NAME.part1.rar, "
            "NAME.part2.rar, ...): dropfetch does not unpack multi-volume RAR; deliver the "
            "volumes with `extract: false` and unpack them together"
        )


@contextlib.contextmanager
def _tools(archive: Path, cannot: LibarchiveCannot) -> Iterator[_Tools]:
    """The tools, and their private directory in TMPDIR (nothing beside the output:
    extract writes only into its destination; under systemd, PrivateTmp= takes what a
    kill -9 leaves)."""
    lsar, unar = shutil.which("lsar"), shutil.which("unar")
    if lsar is None or unar is None:
        raise UnsupportedArchiveError(
            f"{str(cannot).rstrip('.')}: solid RAR 4 and encrypted RAR archives are unpacked "
            f"by The Unarchiver (lsar and unar), which is not installed: {INSTALL_HINT}"
        )
    try:
        home = tempfile.mkdtemp(prefix="dropfetch-unar-")
    except OSError as exc:
        raise from_os_error(exc, "making a directory for unar") from exc
    try:
        link = Path(home) / "archive.rar"
        try:
            link.symlink_to(archive.absolute())
        except OSError as exc:
            raise from_os_error(exc, "linking the archive for unar") from exc
        yield _Tools(lsar, unar, home, str(link))
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _pw(password: str | None) -> list[str]:
    return [] if password is None else ["-p", password]


def _listing(tools: _Tools, passwords: Sequence[str], out: Output) -> tuple[Listing, str | None]:
    """The listing, and the password that opened it when its headers are encrypted."""
    listed, status, said = _run_lsar(tools, None, out)
    if status == 0 or "requires a password" not in said:
        return listed.listing(), None
    for password in passwords:
        listed, status, said = _run_lsar(tools, password, out)
        if status == 0:
            return listed.listing(), password
    raise encrypted("the RAR archive", tried=len(passwords))


def _run_lsar(tools: _Tools, password: str | None, out: Output) -> tuple[ListingReader, int, str]:
    """``lsar -j``'s listing as read, its exit status, and the end of what it said
    (standard error, and of standard output, where it says a password is needed)."""
    argv = [tools.lsar, "-j", "-nr", *_pw(password), tools.archive]
    with ToolRun(argv, tools.home, out.check_cancel) as run:
        listed = ListingReader(out.config.max_files)
        last = b""
        while chunk := run.read():
            listed.feed(chunk)
            last = (last + chunk)[-200:]
        said = run.stderr_tail() + last.decode("utf-8", "replace")
        return listed, run.wait(), said


def _choose_password(tools: _Tools, listing: Listing, passwords: Sequence[str], out: Output) -> str:
    """The first password with which ``lsar -t`` finds every member sound. RAR 5 says
    when a password is wrong, and damage after a right one is damage; in RAR 4, a wrong
    password and damaged data look the same (no password check): the next is tried."""
    for password in passwords:
        failed = _test(tools, listing, password, out)
        if failed is None:
            return password
        if listing.rar5 and "wrong password" not in failed.lower():
            raise CorruptArchiveError(failed)  # the password passed RAR 5's check
    raise encrypted("the RAR archive", tried=len(passwords))


def _test(tools: _Tools, listing: Listing, password: str | None, out: Output) -> str | None:
    """``lsar -t``: None when every member is sound, else what failed."""
    largest = max((e.size for e in listing.entries), default=0)
    argv = [tools.lsar, "-t", "-nr", *_pw(password), tools.archive]
    silence = SILENCE_TIMEOUT + largest / TEST_RATE
    with ToolRun(argv, tools.home, out.check_cancel, silence) as run:
        last = b""
        while chunk := run.read():
            last = (last + chunk)[-500:]
        status = run.wait()
        said = run.stderr_tail() + "\n" + last.decode("utf-8", "replace")
    return None if status == 0 else failure_message("lsar -t", status, said, [password or ""])


def failure_message(what: str, status: int, said: str, passwords: Sequence[str]) -> str:
    """The message for a tool that failed: the last line it ``said``, with every one of
    the ``passwords`` replaced by ``***`` (pure)."""
    for password in sorted(passwords, key=len, reverse=True):
        if password:
            said = said.replace(password, "***")
    lines = [line for line in said.splitlines() if line.strip() and not _SUMMARY.match(line)]
    lines = [line for line in lines if _FAILED.search(line)] or lines
    detail = fragment(lines[-1].strip(), 300) if lines else f"exit status {status}"
    return (
        f"the archive is damaged or incomplete: {what} failed ({detail}); download it "
        "again or check the source"
    )


def write_entries(listing: Listing, read: _Read, out: Output) -> None:
    """Write every entry of ``listing`` through ``out``, their data cut from ``read``
    (``unar -o -``'s output); the stream must end where the last one's data does."""
    for entry in listing.entries:
        out.check_cancel()
        out.limits.member()
        _write_entry(entry, _Member(read, entry), out)
    if read(1):
        raise CorruptArchiveError(
            "the archive is damaged: unar sent more data than its listing holds; download "
            "it again or check the source"
        )


def _write_entry(entry: Entry, member: _Member, out: Output) -> None:
    rel = normalise_name(entry.name)
    if entry.kind == "dir":
        out.add_dir(rel, entry.mode, entry.mtime)
    elif entry.kind == "file":
        out.add_file(rel, entry.mode, entry.mtime, member.read, f"decoding {entry.name}")
    elif entry.kind == "hardlink":
        out.add_hardlink(rel, entry.target or "", entry.name)
    else:
        target = entry.target if entry.target is not None else member.link_target()
        out.add_symlink(rel, target, entry.name)


class _Member:
    """One member's data in the stream: exactly its listed size, its CRC-32 checked."""

    def __init__(self, read: _Read, entry: Entry) -> None:
        self._read = read
        self._entry = entry
        self._left = entry.size
        self._crc = 0
        self._blake2 = Blake2sp() if entry.blake2 is not None else None

    def read(self, n: int) -> bytes:
        if self._left == 0:
            self._check()
            return b""
        chunk = self._read(min(n, self._left))
        if not chunk:
            raise CorruptArchiveError(
                f"the archive is damaged or incomplete: the data of '{self._entry.name}' "
                "is cut short (or a password is wrong); download it again or check the source"
            )
        self._left -= len(chunk)
        self._crc = zlib.crc32(chunk, self._crc)
        if self._blake2 is not None:
            self._blake2.update(chunk)
        return chunk

    def _check(self) -> None:
        expected = self._entry.crc
        if expected is not None and self._crc != expected:
            raise CorruptArchiveError(
                f"the archive is damaged: '{self._entry.name}' fails its checksum (CRC-32 "
                f"{self._crc:08x}, the archive says {expected:08x}); download it again or "
                "check the source"
            )
        if self._blake2 is not None and self._blake2.digest() != self._entry.blake2:
            raise CorruptArchiveError(
                f"the archive is damaged: '{self._entry.name}' fails its checksum "
                "(BLAKE2sp); download it again or check the source"
            )

    def link_target(self) -> str:
        """A RAR 4 symbolic link's target: its data."""
        if self._entry.size >= MAX_LINK_TARGET:
            raise UnsafeArchiveError(f"unsafe member '{self._entry.name}': link target too long")
        data = b""
        while chunk := self.read(CHUNK):
            data += chunk
        return data.decode("utf-8", "surrogateescape")
