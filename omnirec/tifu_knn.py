"""A reference batch TIFU-KNN (Hu, He, Gao & Zhang, SIGIR 2020), for the evaluator's baselines.

It is a yardstick, not part of the engine: ``omnirec evaluate --protocol leave-last-basket-out``
fits it on the same training baskets the engine learnt and scores it on the same held-out
baskets.

The user vector follows the authors' code (and its port in cornac):

- a customer's ``n`` training baskets, oldest first, are multi-hot vectors; basket ``p``
  (0-based) is weighted ``within_decay ** (n - 1 - p)``, counted from the end of the whole
  history;
- the baskets are cut into ``n_groups`` consecutive groups (fewer baskets than groups: one
  group per basket); when ``n`` does not divide evenly, the *last* ``n % n_groups`` groups hold
  one basket more. Each group is the mean of its weighted baskets;
- group ``g`` is weighted ``group_decay ** (n_groups - 1 - g)`` (also when there are fewer real
  groups than ``n_groups``, as in the authors' code), and the sum is divided by the number of
  real groups.

``within="group"`` is the paper's formula instead: a basket's decay counts from the end of its
own group (``within_decay ** (group size - 1 - j)``) and group ``g`` of ``G`` real groups is
weighted ``group_decay ** (G - 1 - g)``. On Ta-Feng with Romanov et al.'s filter it scores higher
(Recall@10 0.132 against 0.127 for the authors' code); the default stays the authors' code.

The prediction is ``alpha * u + (1 - alpha) * mean(u_j over the k nearest neighbours j)``,
neighbours by cosine similarity of the user vectors (the query user excluded). The authors'
code used Euclidean distance with the user among their own neighbours; ``metric="euclidean"``
gives the distance (still excluding the user itself).

Everything is sparse (scipy CSR) and chunked: the similarities of a chunk of query users to
all users are one sparse product, the top k per row one ``argpartition``, the neighbours'
mean one more sparse product. No loop over pairs of users.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse

N_NEIGHBORS = 300
WITHIN_DECAY = 0.9
GROUP_DECAY = 0.7
ALPHA = 0.7
N_GROUPS = 7
CHUNK = 512  # query users per similarity block (CHUNK x users dense floats)


def group_of(n: int, n_groups: int) -> tuple[list[int], list[int]]:
    """(group index of each of ``n`` baskets, size of each group), as the authors split them."""
    if n < n_groups:
        return list(range(n)), [1] * n
    base, extra = divmod(n, n_groups)
    sizes = [base] * (n_groups - extra) + [base + 1] * extra
    groups = [g for g, size in enumerate(sizes) for _ in range(size)]
    return groups, sizes


def user_weights(n: int, within_decay: float = WITHIN_DECAY, group_decay: float = GROUP_DECAY,
                 n_groups: int = N_GROUPS, within: str = "history") -> list[float]:
    """The weight of each of ``n`` baskets (oldest first) in the user vector: the authors' code
    (``within="history"``) or the paper's formula (``within="group"``)."""
    groups, sizes = group_of(n, n_groups)
    real = len(sizes)
    if within == "history":
        return [within_decay ** (n - 1 - p) * group_decay ** (n_groups - 1 - g) / sizes[g] / real
                for p, g in enumerate(groups)]
    if within != "group":
        raise ValueError(f"within must be history or group; got {within!r}")
    starts = [sum(sizes[:g]) for g in range(real)]
    return [within_decay ** (sizes[g] - 1 - (p - starts[g])) * group_decay ** (real - 1 - g) / sizes[g] / real
            for p, g in enumerate(groups)]


def user_matrix(histories: Sequence[Sequence[Sequence[str]]], within_decay: float = WITHIN_DECAY,
                group_decay: float = GROUP_DECAY, n_groups: int = N_GROUPS, within: str = "history"
                ) -> tuple[sparse.csr_matrix, list[str]]:
    """The users' TIFU vectors as a CSR matrix (users x items) and the item of each column
    (items sorted, so ties between equal scores go to the smaller SKU)."""
    items = sorted({sku for baskets in histories for basket in baskets for sku in basket})
    column = {sku: j for j, sku in enumerate(items)}
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for u, baskets in enumerate(histories):
        weights = user_weights(len(baskets), within_decay, group_decay, n_groups, within)
        for weight, basket in zip(weights, baskets):
            for sku in set(basket):
                rows.append(u)
                cols.append(column[sku])
                vals.append(weight)
    matrix = sparse.csr_matrix((np.asarray(vals, dtype=np.float64), (rows, cols)),
                               shape=(len(histories), len(items)))
    matrix.sum_duplicates()
    return matrix, items


def neighbors(matrix: sparse.csr_matrix, queries: Sequence[int], k: int = N_NEIGHBORS,
              metric: str = "cosine", chunk: int = CHUNK):
    """Yield (query rows, their k nearest neighbours' row indices), chunk by chunk."""
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be cosine or euclidean; got {metric!r}")
    n_users = matrix.shape[0]
    k = min(k, n_users - 1)
    squares = np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel()
    if metric == "cosine":
        norms = np.sqrt(squares)
        norms[norms == 0] = 1.0
        base = sparse.diags(1.0 / norms) @ matrix
    else:
        base = matrix
    base = base.tocsr()
    base_t = base.T.tocsr()
    queries = np.asarray(queries, dtype=np.int64)
    for start in range(0, len(queries), chunk):
        rows = queries[start:start + chunk]
        if k <= 0:
            yield rows, np.zeros((len(rows), 0), dtype=np.int64)
            continue
        sim = (base[rows] @ base_t).toarray()
        if metric == "euclidean":  # nearest = largest 2ab - |b|^2 (|a|^2 is the same on a row)
            sim = 2 * sim - squares[None, :]
        sim[np.arange(len(rows)), rows] = -np.inf  # never one's own neighbour
        if k < n_users - 1:
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        else:
            top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        yield rows, top


def predict(histories: Sequence[Sequence[Sequence[str]]], queries: Sequence[int],
            depth: int | Sequence[int] = 10, k: int = N_NEIGHBORS, within_decay: float = WITHIN_DECAY,
            group_decay: float = GROUP_DECAY, alpha: float = ALPHA, n_groups: int = N_GROUPS,
            metric: str = "cosine", within: str = "history", chunk: int = CHUNK) -> list[list[str]]:
    """TIFU-KNN's ranked items for each user in ``queries`` (row indices into ``histories``):
    at most ``depth`` items (one depth for all, or one per query), only items with a positive
    score, best first, ties by SKU."""
    matrix, items = user_matrix(histories, within_decay, group_decay, n_groups, within)
    depths = [depth] * len(queries) if isinstance(depth, int) else list(depth)
    out: list[list[str]] = []
    n_items = len(items)
    for rows, top in neighbors(matrix, queries, k, metric, chunk):
        n_rows, n_nb = top.shape
        own = matrix[rows].toarray()
        if n_nb:
            indptr = np.arange(0, n_rows * n_nb + 1, n_nb)
            mean = sparse.csr_matrix((np.full(n_rows * n_nb, 1.0 / n_nb), top.ravel(), indptr),
                                     shape=(n_rows, matrix.shape[0]))
            scores = alpha * own + (1 - alpha) * (mean @ matrix).toarray()
        else:
            scores = own
        for i in range(n_rows):
            want = min(depths[len(out)], n_items)
            row = scores[i]
            if want <= 0:
                out.append([])
                continue
            cut = np.argpartition(-row, want - 1)[:want] if want < n_items else np.arange(n_items)
            threshold = row[cut].min()
            candidates = np.flatnonzero(row >= threshold)  # all ties at the cut, then by SKU
            order = candidates[np.lexsort((candidates, -row[candidates]))]
            out.append([items[j] for j in order[:want] if row[j] > 0])
    return out
