"""Numbers derived from text and embedding columns, so that they are tested like numerical columns.

Text: per row, its length in characters, its word count, the share of its words outside the reference's
vocabulary and the share of its characters that are not letters. A reference row's out-of-vocabulary share
counts the words no other reference row uses (leave one out), so that new text from the reference's own
source scores like the reference does. Embeddings (a vector per row): the projections on the reference's
first principal axes (at most ``AXES``), which move when the mix of what is embedded changes.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

AXES = 5
DESCRIPTORS = ("length", "words", "oov_share", "non_letter_share")
_WORD = re.compile(r"[^\W\d_]+")


def _texts(series: pd.Series) -> tuple[list[str | None], int, int, tuple[str, ...]]:
    """Each row as text (None when missing or not text); counts of missing and invalid rows."""
    texts: list[str | None] = []
    missing = invalid = 0
    examples: list[str] = []
    for value in series.to_numpy(dtype=object):
        if isinstance(value, str):
            texts.append(value)
        elif value is None or (isinstance(value, float) and math.isnan(value)):
            texts.append(None)
            missing += 1
        else:
            texts.append(None)
            invalid += 1
            if len(examples) < 3:
                examples.append(repr(value)[:40])
    return texts, missing, invalid, tuple(examples)


def _describe(texts: list[str | None], vocabulary: Counter, leave_one_out: bool) -> dict[str, np.ndarray]:
    import numpy as np

    rows = [t for t in texts if t is not None]
    out = {name: np.empty(len(rows)) for name in DESCRIPTORS}
    for i, text in enumerate(rows):
        words = _WORD.findall(text.lower())
        letters = sum(len(w) for w in words)
        out["length"][i] = len(text)
        out["words"][i] = len(words)
        unseen_at = 1 if leave_one_out else 0  # a reference row's own words count once in the vocabulary
        unseen = sum(1 for w in words if vocabulary[w] <= unseen_at)
        out["oov_share"][i] = unseen / len(words) if words else 0.0
        out["non_letter_share"][i] = 1 - letters / len(text) if text else 0.0
    return out


def text_columns(name: str, reference: pd.Series, current: pd.Series) -> tuple[dict, dict]:
    """``{f"{name}:{descriptor}": (reference values, current values)}`` and the rows' counts per side."""
    ref_texts, ref_missing, ref_invalid, _ = _texts(reference)
    cur_texts, cur_missing, cur_invalid, examples = _texts(current)
    vocabulary: Counter = Counter()
    for text in ref_texts:
        if text is not None:
            vocabulary.update(set(_WORD.findall(text.lower())))
    ref = _describe(ref_texts, vocabulary, leave_one_out=True)
    cur = _describe(cur_texts, vocabulary, leave_one_out=False)
    counts = {"reference": (len(ref_texts), ref_missing, ref_invalid, ()),
              "current": (len(cur_texts), cur_missing, cur_invalid, examples)}
    return {f"{name}:{d}": (ref[d], cur[d]) for d in DESCRIPTORS}, counts


def _vectors(series: pd.Series, dimension: int | None) -> tuple[np.ndarray, int, int, tuple[str, ...], int]:
    """The rows' vectors (rows x dimension); invalid rows (not a list of finite numbers of the dimension)."""
    import numpy as np

    kept: list[Any] = []
    missing = invalid = 0
    examples: list[str] = []
    values = series.to_numpy(dtype=object)
    if dimension is None:
        sizes = Counter(len(v) for v in values if isinstance(v, list | tuple | np.ndarray) and len(v))
        dimension = sizes.most_common(1)[0][0] if sizes else 0
    for value in values:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            missing += 1
            continue
        try:
            vector = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            vector = None
        if vector is None or vector.ndim != 1 or vector.size != dimension or not np.isfinite(vector).all():
            invalid += 1
            if len(examples) < 3:
                examples.append(repr(value)[:40])
            continue
        kept.append(vector)
    matrix = np.vstack(kept) if kept else np.empty((0, dimension))
    return matrix, missing, invalid, tuple(examples), dimension


def embedding_vectors(name: str, reference: pd.Series, current: pd.Series) -> tuple[dict, dict]:
    """``{name: (reference vectors, current vectors)}`` (rows x dimension), tested as one (``mmd``), and the rows'
    counts per side."""
    ref, ref_missing, ref_invalid, _, dimension = _vectors(reference, None)
    cur, cur_missing, cur_invalid, examples, _ = _vectors(current, dimension)
    counts = {"reference": (len(reference), ref_missing, ref_invalid, ()),
              "current": (len(current), cur_missing, cur_invalid, examples)}
    return ({name: (ref, cur)} if ref.shape[0] >= 2 and dimension else {}), counts


def embedding_columns(name: str, reference: pd.Series, current: pd.Series) -> tuple[dict, dict]:
    """``{f"{name}:axis{i}": (reference projections, current projections)}`` and the rows' counts per side."""
    import numpy as np

    ref, ref_missing, ref_invalid, _, dimension = _vectors(reference, None)
    cur, cur_missing, cur_invalid, examples, _ = _vectors(current, dimension)
    counts = {"reference": (len(reference), ref_missing, ref_invalid, ()),
              "current": (len(current), cur_missing, cur_invalid, examples)}
    if ref.shape[0] < 2 or dimension == 0:
        return {}, counts
    center = ref.mean(axis=0)
    fit = ref[np.random.default_rng(0).permutation(ref.shape[0])[:5_000]] - center
    _, _, axes = np.linalg.svd(fit, full_matrices=False)
    axes = axes[:min(AXES, dimension)]
    ref_projected = (ref - center) @ axes.T
    cur_projected = (cur - center) @ axes.T if cur.shape[0] else np.empty((0, axes.shape[0]))
    return {f"{name}:axis{i + 1}": (ref_projected[:, i], cur_projected[:, i]) for i in range(axes.shape[0])}, counts
