"""The similar-answer tier: word fingerprints (hashed, never text), Jaccard, scoping by tenant and route."""

from __future__ import annotations

import time

from services.cache.similar import SimilarIndex
from shared.schemas.chat import Message
from shared.schemas.mesh import CachedCompletion
from shared.similarity import fingerprint, jaccard


def fp(text: str, role: str = "user") -> list[int]:
    return fingerprint([Message(role=role, content=text)])


def sim(a: str, b: str) -> float:
    return jaccard(frozenset(fp(a)), frozenset(fp(b)))


def test_fingerprint_is_words_hashed_case_and_punctuation_free() -> None:
    assert fp("What is the capital of France?") == fp("what IS the capital, of france")
    assert all(isinstance(h, int) for h in fp("hello world"))
    assert len(fp("a a a b")) == 2
    assert fingerprint([Message(role="assistant", content="ignored")]) == []


def test_similarity_orders_paraphrases_above_unrelated_text() -> None:
    q = "What is the capital of France?"
    assert sim(q, q) == 1.0
    assert sim(q, "what is the capital of france today") > 0.8
    assert sim(q, "How do I bake sourdough bread") < 0.2
    assert sim("", q) == 0.0


def test_index_returns_the_best_match_above_the_threshold_in_scope() -> None:
    idx = SimilarIndex(ttl_s=60, max_per_scope=10)
    paris = CachedCompletion(content="Paris", model="m")
    bread = CachedCompletion(content="Flour", model="m")
    idx.put("t1", "r", fp("What is the capital of France?"), paris)
    idx.put("t1", "r", fp("How do I bake sourdough bread"), bread)
    found = idx.best("t1", "r", fp("capital of France please"), 0.4)  # 3 shared words of 7
    assert found is not None
    assert found[1].content == "Paris"
    assert idx.best("t1", "r", fp("capital of Spain please"), 0.9) is None
    assert idx.best("t2", "r", fp("What is the capital of France?"), 0.5) is None  # another tenant
    assert idx.best("t1", "other", fp("What is the capital of France?"), 0.5) is None  # another route


def test_index_is_bounded_and_expires() -> None:
    idx = SimilarIndex(ttl_s=0, max_per_scope=2)
    for i in range(5):
        idx.put("t", "r", fp(f"question {i}"), CachedCompletion(content=str(i), model="m"))
    time.sleep(0.01)
    assert idx.best("t", "r", fp("question 4"), 0.1) is None
