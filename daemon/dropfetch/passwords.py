"""The passwords tried on an encrypted archive: the job's ``password``, then the lines of
``extract.passwords_file``, read each time an archive is unpacked (a changed file counts
at once). No message here or anywhere else ever carries a password."""

from __future__ import annotations

from pathlib import Path

from dropfetch.archive.formats import ArchiveFormat
from dropfetch.errors import EncryptedArchiveError, IOFailureError

__all__ = [
    "ENCRYPTABLE",
    "MAX_PASSWORDS_FILE",
    "PASSWORDS_WRONG",
    "PASSWORD_NEEDED",
    "encrypted",
    "job_passwords",
    "parse_passwords",
    "passwords_for",
    "read_passwords_file",
]

MAX_PASSWORDS_FILE = 1024 * 1024
ENCRYPTABLE = frozenset({ArchiveFormat.ZIP, ArchiveFormat.SEVEN_Z, ArchiveFormat.RAR})
# the two messages of EncryptedArchiveError (every decoder says them so)
_GIVE_IT = "give it with the job's password option or extract.passwords_file"
PASSWORD_NEEDED = f"a password is needed to unpack it: {_GIVE_IT}"
PASSWORDS_WRONG = "the password(s) given do not open it"


def encrypted(what: str, *, tried: int) -> EncryptedArchiveError:
    """The one ``encrypted_archive`` error every decoder raises for ``what`` (``the 7z
    archive``): a password is needed when none was ``tried``, else none opened it."""
    if not tried:
        return EncryptedArchiveError(f"{what} is encrypted: {PASSWORD_NEEDED}")
    return EncryptedArchiveError(
        f"{what} is encrypted, and {PASSWORDS_WRONG} ({tried} tried): check the job's "
        "password option and extract.passwords_file"
    )


def parse_passwords(data: bytes, path: Path) -> list[str]:
    """The passwords of a passwords file's bytes, in order: one a line, UTF-8 (a BOM is
    allowed), a trailing ``\\r`` stripped, blank lines skipped. Raises
    :class:`IOFailureError` naming ``path`` and the line (never its text) for bytes that
    are not UTF-8."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise IOFailureError(
            f"the passwords file {path} (extract.passwords_file) is not UTF-8 text (line {line})"
        ) from None
    lines = (line.removesuffix("\r") for line in text.split("\n"))
    return [line for line in lines if line.strip()]


def read_passwords_file(path: Path) -> list[str]:
    """The passwords of ``path``; :class:`IOFailureError` naming the file when it is
    missing, unreadable, too large or not UTF-8."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_PASSWORDS_FILE + 1)
    except OSError as exc:
        raise IOFailureError(
            f"cannot read the passwords file {path} (extract.passwords_file): "
            f"{exc.strerror or type(exc).__name__}"
        ) from None
    if len(data) > MAX_PASSWORDS_FILE:
        raise IOFailureError(
            f"the passwords file {path} (extract.passwords_file) is larger than "
            f"{MAX_PASSWORDS_FILE} bytes"
        )
    return parse_passwords(data, path)


def job_passwords(password: str | None, from_file: list[str]) -> tuple[str, ...]:
    """The passwords to try, in order: the job's own, then the file's; each once."""
    first = [password] if password else []
    return tuple(dict.fromkeys([*first, *from_file]))


def passwords_for(
    fmt: ArchiveFormat, password: str | None, passwords_file: Path | None
) -> tuple[str, ...]:
    """For a format that may be encrypted (a tar never is): the job's password, then
    ``extract.passwords_file``'s, the file read now."""
    if fmt not in ENCRYPTABLE:
        return ()
    return job_passwords(password, read_passwords_file(passwords_file) if passwords_file else [])
