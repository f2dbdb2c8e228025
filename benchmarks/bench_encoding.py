"""Encoding throughput (batched vs one by one) and retrieval query latency (exact vs FAISS)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .timing import alternate, fmt


def run(texts: int = 256, sizes: tuple[int, ...] = (10_000, 100_000), repeats: int = 5) -> dict[str, Any]:
    from sfumato_retrieval.index import RetrievalIndex, search
    from sfumato_transformers.conditioning import load_text_encoder
    from sfumato_transformers.sentence import bundled_minilm_path

    encoder = load_text_encoder("all-MiniLM-L6-v2", bundled_minilm_path(), "sentence", "cpu", None)
    corpus = [f"a picture number {i} of a {['red', 'blue', 'green'][i % 3]} shape" for i in range(texts)]

    def batched() -> None:
        encoder._cache.clear()
        encoder.encode(corpus, [None] * len(corpus), 256, "last")

    def one_by_one() -> None:
        encoder._cache.clear()
        for text in corpus:
            encoder.encode([text], [None], 256, "last")

    measured = alternate({"batched": batched, "one_by_one": one_by_one}, repeats=max(2, repeats // 2))
    results: dict[str, Any] = {"encoding": {name: {**m.as_dict(), "texts_per_s": texts / m.median}
                                            for name, m in measured.items()}}
    speedup = measured["one_by_one"].median / measured["batched"].median
    print(f"  encode {texts} texts: batched {texts / measured['batched'].median:.0f}/s, "
          f"one by one {texts / measured['one_by_one'].median:.0f}/s (speed-up {speedup:.1f}x)")
    results["ratio"] = {"encoding_batched_speedup": speedup}
    rng = np.random.default_rng(0)
    try:
        import faiss  # noqa: F401
        backends = ("exact", "faiss")
    except ImportError:
        backends = ("exact",)
    for size in sizes:
        vectors = rng.standard_normal((size, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        index = RetrievalIndex(None, "bench", 384, [None] * size, vectors)  # type: ignore[arg-type]
        query = vectors[:1] + 0.01
        timings = alternate({b: (lambda b=b: search(index, query, 10, backend=b)) for b in backends}, repeats=repeats)
        results[f"query_{size}"] = {b: m.as_dict() for b, m in timings.items()}
        print(f"  query top-10 of {size}: " + ", ".join(f"{b} {fmt(m.median)}" for b, m in timings.items())
              )
        results["ratio"][f"exact_query_ms_{size}"] = timings["exact"].median * 1000
    print("  ratio: " + ", ".join(f"{k} = {v:.3g}" for k, v in results["ratio"].items()))
    return results
