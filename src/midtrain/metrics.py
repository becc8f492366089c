"""Sample-level metrics shared by evaluation, the synthetic world and RL logs: one implementation each.

- ``pass_at_k(n, c, k)``: the unbiased estimator 1 − C(n−c, k)/C(n, k) (Chen et al. 2021), computed as a
  numerically stable product.
- ``mean_at_k``: the mean correctness over the k samples of each problem (the papers' mean@16 / mean@64),
  averaged over problems.
- ``majority_vote``: the most frequent non-empty answer among samples (ties → the earliest).
- ``token_f1``: bag-of-words F1 of two texts after case folding and punctuation removal (SQuAD-style), the rule
  judge of continuations.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Hashable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct) is correct."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if k < 1 or k > n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):  # C(n-c, k)/C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i)
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def mean_pass_at_k(correct: Sequence[Sequence[bool]], k: int) -> float:
    """pass@k averaged over problems; each problem needs at least k samples."""
    if not correct:
        return 0.0
    return sum(pass_at_k(len(s), sum(map(bool, s)), k) for s in correct) / len(correct)


def mean_at_k(correct: Sequence[Sequence[bool]]) -> float:
    """Mean over problems of the fraction of correct samples (mean@k with k = samples per problem)."""
    rows = [s for s in correct if len(s)]
    if not rows:
        return 0.0
    return sum(sum(map(bool, s)) / len(s) for s in rows) / len(rows)


def majority_vote(answers: Sequence[Hashable | None]) -> Hashable | None:
    """The most frequent non-None answer; ties go to the answer seen first."""
    valid = [a for a in answers if a is not None and a != ""]
    if not valid:
        return None
    counts = Counter(valid)
    best = max(counts.values())
    return next(a for a in valid if counts[a] == best)


def ks_for(n: int, ks: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128)) -> list[int]:
    """The standard k values that n samples per problem support."""
    return [k for k in ks if k <= n]


_PUNCT = str.maketrans("", "", string.punctuation)


def tokens_for_f1(text: str) -> list[str]:
    return text.casefold().translate(_PUNCT).split()


def token_f1(candidate: str, reference: str) -> float:
    """Bag-of-words F1 after case folding and punctuation removal (1.0 when both are empty)."""
    a, b = tokens_for_f1(candidate), tokens_for_f1(reference)
    if not a or not b:
        return float(a == b)
    common = sum((Counter(a) & Counter(b)).values())
    if common == 0:
        return 0.0
    p, r = common / len(a), common / len(b)
    return 2 * p * r / (p + r)
