"""Good archives built at test time, in every format the daemon reads."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import zipfile

import zstandard

OS_TEMPLATE = {
    "metainfo.xml": b"<metainfo><name>debian-7</name></metainfo>\n",
    "initrd.gz": gzip.compress(b"initrd image " * 1000),
    "install.cfg": b"d-i debian-installer/locale string en_US\n",
    "linux": bytes(range(256)) * 400,
    "pxelinux.0/pxelinux.0": b"\x7fELF pxelinux" * 100,
    "pxelinux.0/ldlinux.c32": b"ldlinux" * 300,
    "pxelinux.conf": b"default linux\n",
}


def tar_bytes(files: dict[str, bytes], *, compression: str = "") -> bytes:
    """A tar of ``files`` (dirs implied), compressed with '', gz, bz2, xz or zst."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        dirs = sorted(
            {"/".join(n.split("/")[:i]) for n in files for i in range(1, n.count("/") + 1)}
        )
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tf.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))
    return compress(raw.getvalue(), compression)


def compress(data: bytes, compression: str | None) -> bytes:
    """``data`` compressed with '' (or None: as it is), gz, bz2, xz or zst; gzip with
    mtime 0, so the same input gives the same bytes."""
    if not compression:
        return data
    if compression == "gz":
        return gzip.compress(data, mtime=0)
    if compression == "bz2":
        return bz2.compress(data)
    if compression == "xz":
        return lzma.compress(data)
    if compression == "zst":
        return zstandard.ZstdCompressor().compress(data)
    raise ValueError(f"unknown compression {compression!r}")


def zip_bytes(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return raw.getvalue()
