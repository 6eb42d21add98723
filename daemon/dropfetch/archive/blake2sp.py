"""BLAKE2sp, the checksum RAR 5 may store instead of CRC-32 (``rar -htb``): eight
BLAKE2s leaves fed 64-byte blocks in turn, and a root over their digests (the BLAKE2
paper's parallel mode), on :mod:`hashlib`'s BLAKE2s tree parameters (pure)."""

from __future__ import annotations

import hashlib

__all__ = ["Blake2sp"]

_LEAVES = 8
_BLOCK = 64
_STRIPE = _LEAVES * _BLOCK


def _node(offset: int, depth: int, last: bool) -> hashlib.blake2s:
    return hashlib.blake2s(
        digest_size=32,
        fanout=_LEAVES,
        depth=2,
        node_offset=offset,
        node_depth=depth,
        inner_size=32,
        last_node=last,
    )


class Blake2sp:
    def __init__(self) -> None:
        self._leaves = [_node(i, 0, i == _LEAVES - 1) for i in range(_LEAVES)]
        self._pos = 0  # bytes hashed so far

    def update(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self._pos % _STRIPE:  # up to a stripe's start
            view = self._block(view)
        whole = len(view) - len(view) % _STRIPE
        for i, leaf in enumerate(self._leaves):
            for start in range(i * _BLOCK, whole, _STRIPE):
                leaf.update(view[start : start + _BLOCK])
        self._pos += whole
        view = view[whole:]
        while view:
            view = self._block(view)

    def _block(self, view: memoryview) -> memoryview:
        """Hash the start of ``view`` up to the end of the current leaf's block."""
        take = _BLOCK - self._pos % _BLOCK
        self._leaves[self._pos // _BLOCK % _LEAVES].update(view[:take])
        self._pos += min(take, len(view))
        return view[take:]

    def digest(self) -> bytes:
        root = _node(0, 1, True)
        for leaf in self._leaves:
            root.update(leaf.digest())
        return root.digest()
