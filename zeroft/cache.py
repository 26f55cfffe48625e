"""Bounded, observable caches: object masks and embeddings, prompt embeddings, whole pipelines.

Every cache is an LRU with a size bound and hit/miss counters, so tests and benchmarks can
check that a repeated photo runs neither the masker nor the encoder, and an app process can
report what it holds. Keys are content hashes, never user or session ids: two users who upload
the same photo share an embedding, and no one can reach another's data except by having the
same pixels.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Hashable

import numpy as np
from PIL import Image


_MISSING = object()  # distinguishes 'not cached' from a cached None


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    size: int = 0
    maxsize: int = 0


class LRUCache:
    """A thread-safe least-recently-used cache.

    Example:
        >>> cache = LRUCache(maxsize=2)
        >>> cache.get_or_create("a", lambda: 1), cache.get_or_create("a", lambda: 2)
        (1, 1)
        >>> cache.stats.hits, cache.stats.misses
        (1, 1)
    """

    def __init__(self, maxsize: int, max_bytes: int | None = None):
        """``maxsize`` entries at most; with ``max_bytes``, also at most that many bytes of tensor values (the
        most recent entry is kept even when it alone is larger)."""
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.RLock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
            return default

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            if key in self._items:
                self.bytes -= value_bytes(self._items[key])
            self._items[key] = value
            self.bytes += value_bytes(value)
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize or (
                    self.max_bytes is not None and self.bytes > self.max_bytes and len(self._items) > 1):
                self.bytes -= value_bytes(self._items.popitem(last=False)[1])

    def get_or_create(self, key: Hashable, create: Callable[[], Any]) -> Any:
        """Return the cached value, or ``create()`` it, store it and return it.

        ``create`` runs outside the lock so that a slow computation (loading a model) does not
        block lookups of other keys; two callers racing on one new key may both compute it.
        """
        value = self.get(key, _MISSING)
        if value is _MISSING:
            value = create()
            self.put(key, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = self.misses = self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    @property
    def stats(self) -> CacheStats:
        return CacheStats(self.hits, self.misses, len(self._items), self.maxsize)


def value_bytes(value: Any) -> int:
    """Bytes held by a cached value's tensors and arrays (in tuples, lists and dicts too); 0 for anything else."""
    if hasattr(value, "element_size") and hasattr(value, "numel"):
        return int(value.element_size() * value.numel())
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, (tuple, list)):
        return sum(map(value_bytes, value))
    if isinstance(value, dict):
        return sum(map(value_bytes, value.values()))
    return 0


def image_digest(image: Image.Image) -> str:
    """Content hash of an RGB image's pixels and size."""
    digest = hashlib.sha256()
    digest.update(f"{image.mode}{image.size}".encode())
    digest.update(np.asarray(image).tobytes())
    return digest.hexdigest()


def mask_digest(mask: np.ndarray) -> str:
    """Content hash of a soft mask, quantised to 8 bits so float noise does not miss the cache."""
    quantised = np.round(np.asarray(mask, dtype=np.float32) * 255).astype(np.uint8)
    return hashlib.sha256(f"{quantised.shape}".encode() + quantised.tobytes()).hexdigest()
