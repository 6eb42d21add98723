"""What a RAR archive's first header says about it (pure): whether it is one volume of
a multi-volume archive, which lsar lists as a part (or as nothing, for RAR 5) without
saying so."""

from __future__ import annotations

__all__ = ["HEAD_BYTES", "is_volume"]

HEAD_BYTES = 64  # enough for the signature and the main archive header's flags
_RAR4 = b"Rar!\x1a\x07\x00"
_RAR5 = b"Rar!\x1a\x07\x01\x00"
_RAR4_MAIN = 0x73
_RAR5_MAIN = 1
_VOLUME = 0x0001  # the main header's "volume" flag, in both versions


def is_volume(head: bytes) -> bool:
    """Whether the archive starting with ``head`` is one volume of several. False when
    the header cannot tell: a RAR 5 with encrypted headers, or anything else."""
    if head.startswith(_RAR4):
        at = len(_RAR4)
        return (
            len(head) >= at + 5
            and head[at + 2] == _RAR4_MAIN
            and bool(int.from_bytes(head[at + 3 : at + 5], "little") & _VOLUME)
        )
    if not head.startswith(_RAR5):
        return False
    try:
        at = len(_RAR5) + 4  # after the header's CRC-32
        _, at = _vint(head, at)  # header size
        kind, at = _vint(head, at)
        if kind != _RAR5_MAIN:  # an archive encryption header: the rest is encrypted
            return False
        flags, at = _vint(head, at)
        for present in (0x0001, 0x0002):  # extra area size, data size
            if flags & present:
                _, at = _vint(head, at)
        archive_flags, _ = _vint(head, at)
    except IndexError:
        return False
    return bool(archive_flags & _VOLUME)


def _vint(data: bytes, at: int) -> tuple[int, int]:
    """RAR 5's variable-length integer at ``at`` (7 bits a byte, low first), and where
    the next field starts."""
    value = 0
    for shift in range(0, 70, 7):
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
    raise IndexError("vint too long")
