"""Checksums: the algorithms a job may name, ``ALGO:HEX``, the digests computed while
downloading, and the comparison that fails a job with ``checksum_mismatch`` (pure)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dropfetch.errors import BadJobError, ChecksumMismatchError, fragment

__all__ = ["ALGORITHMS", "Checksum", "Digests", "parse_checksum", "verify"]

# name -> (constructor, hex digits); blake2b is BLAKE2b-512, as b2sum writes it
ALGORITHMS: dict[str, tuple[Callable[[], Any], int]] = {
    "sha256": (hashlib.sha256, 64),
    "sha512": (hashlib.sha512, 128),
    "sha1": (hashlib.sha1, 40),
    "md5": (hashlib.md5, 32),
    "blake2b": (hashlib.blake2b, 128),
}
SHOWN = {"sha256": "SHA-256", "sha512": "SHA-512", "sha1": "SHA-1", "md5": "MD5"}
_HEX = re.compile(r"[0-9a-fA-F]+")


@dataclass(frozen=True, slots=True)
class Checksum:
    """An expected digest: ``algo`` a key of :data:`ALGORITHMS`, ``hex`` lower case."""

    algo: str
    hex: str

    @property
    def shown(self) -> str:
        return SHOWN.get(self.algo, "BLAKE2b")


def checksum_of(algo: str, digest: str, *, what: str) -> Checksum:
    """``Checksum(algo, digest)`` once both are valid; else a :class:`BadJobError` that
    names ``what`` (e.g. "option checksum") and the expected length."""
    algo = algo.strip().lower()
    if algo not in ALGORITHMS:
        raise BadJobError(
            f"{what}: unknown algorithm {fragment(algo)}; use one of {', '.join(ALGORITHMS)}"
        )
    digest = digest.strip()
    length = ALGORITHMS[algo][1]
    if len(digest) != length or not _HEX.fullmatch(digest):
        raise BadJobError(f"{what}: a {algo} digest is {length} hexadecimal digits")
    return Checksum(algo, digest.lower())


def parse_checksum(value: object) -> Checksum:
    """The ``checksum:`` option, ``ALGO:HEX`` (ALGO in any case)."""
    if not isinstance(value, str) or ":" not in value:
        raise BadJobError(
            "option checksum must be ALGO:HEX, e.g. sha512:0a1b..., with ALGO one of "
            + ", ".join(ALGORITHMS)
        )
    algo, _, digest = value.partition(":")
    return checksum_of(algo, digest, what="option checksum")


class Digests:
    """The digests of one download: SHA-256 always (the sidecar's ``archive.sha256``),
    and each other algorithm asked for. ``update`` feeds them all."""

    def __init__(self, algorithms: Iterable[str] = ()) -> None:
        self.algorithms = tuple(dict.fromkeys(("sha256", *algorithms)))
        self._hashers = [ALGORITHMS[a][0]() for a in self.algorithms]

    def update(self, data: bytes | memoryview) -> None:
        for hasher in self._hashers:
            hasher.update(data)

    def hexdigest(self) -> str:
        """The SHA-256."""
        return str(self._hashers[0].hexdigest())

    def hexdigests(self) -> dict[str, str]:
        return {a: h.hexdigest() for a, h in zip(self.algorithms, self._hashers, strict=True)}

    def fresh(self) -> Digests:
        """The same algorithms, no bytes seen."""
        return Digests(self.algorithms)


def verify(expected: Iterable[Checksum], digests: Mapping[str, str]) -> None:
    """Raise ``checksum_mismatch`` unless every expected digest is the download's."""
    for want in expected:
        got = digests[want.algo]
        if got != want.hex:
            raise ChecksumMismatchError(
                f"the download's {want.shown} is {got}, but the job asks for {want.hex}; "
                "nothing was published (wrong file, or a corrupted download)"
            )
