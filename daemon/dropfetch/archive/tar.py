"""Tar archives, plain or compressed, read as a stream: every member checked, then
written through the output tree."""

from __future__ import annotations

import io
import tarfile
from typing import IO, Any, cast

from dropfetch.archive.boundaries import reading
from dropfetch.archive.compression import CHUNK, stream_reader
from dropfetch.archive.formats import ArchiveFormat
from dropfetch.archive.members import normalise_name, unsafe_type
from dropfetch.archive.source import Limits
from dropfetch.archive.tree import Output
from dropfetch.errors import ArchiveLimitsError, CorruptArchiveError

__all__ = ["extract_tar"]

EXT_HEADER_LIMIT = 1024 * 1024  # pax / GNU long-name headers larger than this are refused
MAX_HEADER_CHAIN = 32  # extended headers in a row before one member (real tools: 1 to 3)
# Decompressed tar bytes that produce no output (headers, padding) allowed on top of what
# was written: bounds what tarfile may buffer for a hostile header.
OVERHEAD_BASE = 64 * 1024 * 1024
OVERHEAD_PER_MEMBER = 4096
# The decompressed stream is read in pieces this large (tarfile asks for 10 KiB at a
# time): one decompressor call per 256 KiB instead of one per tar record.
INPUT_BUFFER = 256 * 1024


class _TarInput(io.RawIOBase):
    """Decompressed tar stream: bounds the bytes that produce no output."""

    def __init__(self, inner: IO[bytes], limits: Limits) -> None:
        super().__init__()
        self._inner = inner
        self._limits = limits
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        with reading("decompressing"):
            data = self._inner.read(len(b))
        n = len(data)
        b[:n] = data
        self.consumed += n
        allowance = OVERHEAD_BASE + OVERHEAD_PER_MEMBER * self._limits.members
        if self.consumed - self._limits.written > allowance:
            raise ArchiveLimitsError(
                "the archive holds too much data that unpacks to nothing (huge headers "
                "or padding): refused"
            )
        return n


class _TarInfo(tarfile.TarInfo):
    """Refuses pax and GNU long-name headers too large to hold in memory, and damaged
    headers that tarfile would take for the end of the archive; reads GNU headers as GNU
    tar does."""

    _EXTENDED = (
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
    )

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Any:
        obj = super().frombuf(buf, encoding, errors)
        # In a GNU header (magic "ustar  \0") bytes 345-499 are atime, ctime and sparse
        # data, never a ustar name prefix: GNU tar's incremental mode fills them, and
        # tarfile would glue the atime digits in front of every name.
        if buf[257:265] == tarfile.GNU_MAGIC and buf[345] and obj.type not in tarfile.GNU_TYPES:
            name = bytes(buf[0:100]).split(b"\0", 1)[0].decode(encoding, errors)
            obj.name = name.rstrip("/") if obj.isdir() else name
        return obj

    @classmethod
    def fromtarfile(cls, tarfile: tarfile.TarFile) -> Any:
        # After the first member tarfile ends the archive silently at a header with a bad
        # checksum or cut short; GNU tar reports both. A zero block, or the end of the
        # data at a block boundary, is the end (as for GNU tar and bsdtar).
        try:
            return super().fromtarfile(tarfile)
        except (_InvalidHeaderError, _TruncatedHeaderError) as exc:
            raise CorruptArchiveError(
                f"the archive is damaged or incomplete: {exc} at byte "
                f"{cast(Any, tarfile).offset} of the tar stream; download it again or check "
                "the source"
            ) from None

    def _proc_member(self, tarfile: tarfile.TarFile) -> Any:
        if self.type not in self._EXTENDED:
            return getattr(super(), "_proc_member")(tarfile)  # noqa: B009 - private in typeshed
        if self.size > EXT_HEADER_LIMIT:
            raise ArchiveLimitsError(
                f"the archive has an extended header of {self.size} bytes: refused"
            )
        # tarfile reads the header after an extended one by recursing: bound the chain
        chain = getattr(tarfile, "_dropfetch_chain", 0) + 1
        if chain > MAX_HEADER_CHAIN:
            raise ArchiveLimitsError(
                f"the archive has more than {MAX_HEADER_CHAIN} extended headers in a row "
                "(pax or GNU long-name headers before one member): refused"
            )
        setattr(tarfile, "_dropfetch_chain", chain)  # noqa: B010 - a mark on tarfile's object
        try:
            return getattr(super(), "_proc_member")(tarfile)  # noqa: B009
        finally:
            setattr(tarfile, "_dropfetch_chain", chain - 1)  # noqa: B010

    def _apply_pax_info(self, pax_headers: dict[str, str], encoding: str, errors: str) -> None:
        getattr(super(), "_apply_pax_info")(pax_headers, encoding, errors)  # noqa: B009
        # GNU tar writes a 'path' too (GNUSparseFile.N/...) when a sparse file's name is
        # not ASCII; tarfile lets it win over the real name, depending on record order
        if "GNU.sparse.name" in pax_headers:
            self.path = pax_headers["GNU.sparse.name"]


_InvalidHeaderError = cast(type[Exception], getattr(tarfile, "InvalidHeaderError"))  # noqa: B009
_TruncatedHeaderError = cast(type[Exception], getattr(tarfile, "TruncatedHeaderError"))  # noqa: B009


def extract_tar(raw: IO[bytes], fmt: ArchiveFormat, out: Output) -> None:
    compression = fmt.compression
    with reading("opening the compressed stream"):
        inner = stream_reader(compression, raw) if compression else raw
    with inner:
        tar_input = io.BufferedReader(_TarInput(inner, out.limits), INPUT_BUFFER)
        with reading("reading the first tar header"):
            if not tar_input.peek(1):
                return  # a tar of zero blocks (bsdtar, GNU tar and SPEC §8: empty, not damaged)
            tf = tarfile.open(  # noqa: SIM115 - closed by the `with tf` below
                fileobj=cast(IO[bytes], tar_input), mode="r|", tarinfo=_TarInfo, errorlevel=2
            )
        with tf:
            while True:
                out.check_cancel()
                with reading("reading a tar header"):
                    member = tf.next()
                if member is None:
                    break
                cast(Any, tf).members.clear()  # stream mode never looks back; keep memory flat
                out.limits.member()
                _tar_member(tf, member, out)
            # Read the stream to its end, as tar does: the checksum of gzip, xz and zstd
            # is at the end, and a download cut after the last member is incomplete too.
            with reading("reading the end of the archive"):
                while tar_input.read(CHUNK):
                    pass


_TAR_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.GNUTYPE_SPARSE)
_GNUTYPE_DUMPDIR = b"D"
_GNUTYPE_VOLHDR = b"V"


def _tar_member(tf: tarfile.TarFile, member: tarfile.TarInfo, out: Output) -> None:
    if member.type == _GNUTYPE_VOLHDR:
        return  # a volume label (`tar -V`): no file, `tar -xf` makes nothing of it
    name = member.name
    rel = normalise_name(name)
    kind = member.type
    mtime = float(member.mtime) if isinstance(member.mtime, int | float) else None
    if kind in _TAR_FILE_TYPES:
        if name.endswith("/"):
            # tar and bsdtar take it for a directory and read its data as headers
            raise CorruptArchiveError(
                f"the archive is damaged: {name!r} is a file with a directory's name"
            )
        if member.sparse is not None:
            _check_sparse(tf, member)
            # the stored data is the segments one after the other, from offset_data on
            # (where tarfile's stream stands after the headers and any 1.0 map)
            stream = cast(Any, tf).fileobj
            with reading(f"reading {name}"):
                stream.seek(member.offset_data)
            segments = cast(list[tuple[int, int]], member.sparse)
            out.add_file(
                rel,
                member.mode,
                mtime,
                stream.read,
                f"reading {name}",
                sparse=(segments, member.size),
            )
            return
        # read from tarfile's stream itself (extractfile() adds two buffered layers
        # per member); tf.next() then skips only the padding
        stream = cast(Any, tf).fileobj
        with reading(f"reading {name}"):
            stream.seek(member.offset_data)  # where it stands already: reads nothing
        data = _MemberData(stream, member.size, rel or name)
        out.add_file(rel, member.mode, mtime, data.read, f"reading {name}")
    elif kind in (tarfile.DIRTYPE, _GNUTYPE_DUMPDIR):
        # a dumpdir (GNU tar --listed-incremental) is a directory whose data lists what
        # the directory held; `tar -xf` without --incremental makes the directory only
        out.add_dir(rel, member.mode, mtime)
    elif kind == tarfile.SYMTYPE:
        out.add_symlink(rel, member.linkname, name)
    elif kind == tarfile.LNKTYPE:
        out.add_hardlink(rel, member.linkname, name)
    else:
        described = {
            tarfile.CHRTYPE: "a character device",
            tarfile.BLKTYPE: "a block device",
            tarfile.FIFOTYPE: "a FIFO",
            tarfile.CONTTYPE: "a contiguous file",
        }.get(kind, f"of unknown type {kind!r}")
        raise unsafe_type(name, described)


class _MemberData:
    """A member's data: ``size`` bytes of the tar stream, where it stands after the
    member's headers; short of them the archive is cut short."""

    def __init__(self, stream: Any, size: int, rel: str) -> None:
        self._stream = stream
        self._left = size
        self._rel = rel

    def read(self, n: int) -> bytes:
        if self._left <= 0:
            return b""
        data: bytes = self._stream.read(min(n, self._left))
        if not data:
            raise CorruptArchiveError(
                f"the archive is damaged or incomplete: the data of '{self._rel}' is cut "
                "short; download it again or check the source"
            )
        self._left -= len(data)
        return data


def _check_sparse(tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
    """A GNU sparse map must fit the file and account for exactly the data stored (tar
    and bsdtar read a map that does not as plain data; tarfile would drop the data)."""
    chunks = cast(list[tuple[int, int]], member.sparse or [])
    if member.size < 0:
        raise CorruptArchiveError(
            f"the archive is damaged: the sparse file {member.name!r} has a negative size"
        )
    end = 0
    for offset, numbytes in chunks:
        if numbytes == 0 and 0 <= offset <= member.size:
            continue  # GNU tar ends its maps with (size, 0) and pads them with (0, 0)
        if offset < end or numbytes < 0 or offset + numbytes > member.size:
            raise CorruptArchiveError(
                f"the archive is damaged: the sparse map of {member.name!r} does not fit it"
            )
        end = offset + numbytes
    stored = sum(n for _, n in chunks)
    span = cast(Any, tf).offset - member.offset_data
    if span != -(-stored // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE:
        raise CorruptArchiveError(
            f"the archive is damaged: the sparse map of {member.name!r} does not match its data"
        )
