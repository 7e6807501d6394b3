r"""Approximate kNN by an inverted file, in torch alone (any device).

The nodes are clustered by k-means into :math:`L` lists. A node's
neighbours are searched among the lists whose centroids lie nearest to
its own list's centroid (:math:`n_\mathrm{probe}` of them, its own
first), so that the queries of one list share their candidates and the
search is one block matrix product and top-k per list, on the CPU and on
CUDA alike, with no package beyond torch. A query near its list's border
can lose neighbours that lie in a list outside that probe set;
:func:`pyg_lego.data.backends.knn_search` widens :math:`n_\mathrm{probe}`
until a sample of queries reaches its recall target.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from pyg_lego.data.similarity import knn_scores, prepare

#: k-means rounds of the list centroids.
KMEANS_ITERS = 10
#: Training points per list (at most): k-means runs on a sample.
TRAIN_PER_LIST = 64


class TorchIVF:
    r"""An inverted file over the rows of :obj:`x`: k-means centroids
    (trained on a sample of :obj:`TRAIN_PER_LIST` points per list), every
    node's list, and the nodes sorted by list.

    Args:
        x (torch.Tensor): Features :math:`(N, d)`.
        nlist (int): Lists :math:`L`, :math:`1 \le L \le N`.
        similarity (str, optional): :obj:`"cosine"` (spherical k-means),
            :obj:`"dot"` or :obj:`"rbf"` (Euclidean k-means; lists and
            neighbours ranked by the similarity). (default: :obj:`"cosine"`)
        iters (int, optional): k-means rounds. (default: :obj:`10`)
        seed (int, optional): Seed of the training sample and of the first
            centroids. (default: :obj:`0`)
        block_bytes (int, optional): Bytes of one block of scores.
            (default: :obj:`256 MiB`)
    """

    def __init__(self, x: Tensor, nlist: int, similarity: str = 'cosine',
                 iters: int = KMEANS_ITERS, seed: int = 0,
                 block_bytes: int = 256 * 2**20):
        n = x.size(0)
        if not 1 <= nlist <= n:
            raise ValueError(f"nlist must be in [1, N = {n}], got {nlist}")
        if iters < 0:
            raise ValueError(f"iters must be >= 0, got {iters}")
        self.similarity, self.block_bytes = similarity, block_bytes
        self.z = prepare(x.detach(), similarity)
        self.sq = (self.z * self.z).sum(-1) if similarity == 'rbf' else None
        gen = torch.Generator().manual_seed(seed)
        train = torch.randperm(n, generator=gen, device='cpu')[
            :TRAIN_PER_LIST * nlist]
        train = train.to(x.device)
        points = self.z[train]
        centroids = points[:nlist].clone()
        # Trained in the similarity's geometry, except for 'dot', whose
        # lists are trained as Euclidean clusters (training by inner
        # product favours the longest centroids); the nodes are then
        # listed, and the lists ranked, by the similarity itself, as in
        # faiss's inner-product IVF.
        fit = 'cosine' if similarity == 'cosine' else 'rbf'
        for _ in range(iters):
            assign = self._nearest(points, centroids, fit)
            sums = torch.zeros_like(centroids).index_add_(0, assign, points)
            # Counted and selected on the device: no round trip to the host
            # per iteration (bincount and masks wait for it on a GPU).
            count = assign.new_zeros(nlist, 1).index_add_(
                0, assign, assign.new_ones(assign.numel(), 1))
            # An empty list keeps its centroid.
            centroids = torch.where(
                count > 0, sums / count.clamp_min(1).to(sums.dtype),
                centroids)
            if fit == 'cosine':
                centroids = torch.nn.functional.normalize(centroids, dim=-1)
        self.centroids = centroids
        self.assign = self._nearest(self.z, centroids, similarity)
        self.order = torch.argsort(self.assign, stable=True)
        count = torch.bincount(self.assign, minlength=nlist)
        self.ptr = torch.cat([count.new_zeros(1), count.cumsum(0)]).tolist()
        # Lists ranked by their centroids' similarity to each centroid,
        # its own first.
        s = knn_scores(centroids, centroids, similarity,
                       self._sq(centroids, similarity))
        s.fill_diagonal_(float('inf'))
        self.ranked = s.argsort(dim=1, descending=True)

    @property
    def nlist(self) -> int:
        return self.centroids.size(0)

    @staticmethod
    def _sq(c: Tensor, similarity: str) -> Optional[Tensor]:
        return (c * c).sum(-1) if similarity == 'rbf' else None

    def _rows(self, cols: int) -> int:
        return max(1, self.block_bytes //
                   max(1, self.z.element_size() * cols))

    def _nearest(self, q: Tensor, centroids: Tensor,
                 similarity: str) -> Tensor:
        sq = self._sq(centroids, similarity)
        rows = self._rows(centroids.size(0))
        return torch.cat([
            knn_scores(q[s:s + rows], centroids, similarity, sq).argmax(1)
            for s in range(0, q.size(0), rows)]) if q.size(0) else \
            torch.zeros(0, dtype=torch.long, device=q.device)

    def search(self, nodes: Tensor, k: int, nprobe: int,
               progress: bool = False) -> Tuple[Tensor, Tensor]:
        r"""The :obj:`k` best scores and ids :math:`(|S|, k)` of the
        queries :obj:`nodes` (themselves included when found: drop them
        as :func:`~pyg_lego.data.backends._drop_self` does), among the
        :obj:`nprobe` lists nearest to each query's list. Where those
        lists hold fewer than :obj:`k` nodes, the rest are :obj:`-1`
        (score :obj:`-inf`)."""
        nprobe = max(1, min(nprobe, self.nlist))
        device = self.z.device
        lists = self.assign[nodes]
        by_list = torch.argsort(lists, stable=True)
        count = torch.bincount(lists, minlength=self.nlist).tolist()
        ranked = self.ranked[:, :nprobe].tolist()
        ids = torch.full((nodes.numel(), k), -1, dtype=torch.long,
                         device=device)
        sims = torch.full((nodes.numel(), k), float('-inf'),
                          dtype=self.z.dtype, device=device)
        starts = range(self.nlist)
        if progress:
            from tqdm.auto import tqdm
            starts = tqdm(starts, desc='torch IVF kNN', unit='list')
        done = 0
        for c in starts:
            if count[c] == 0:
                continue
            queries = by_list[done:done + count[c]]
            done += count[c]
            cand = torch.cat([self.order[self.ptr[p]:self.ptr[p + 1]]
                              for p in ranked[c]])
            take = min(k, cand.numel())
            z, sq = self.z[cand], None if self.sq is None else self.sq[cand]
            rows = self._rows(cand.numel())
            for s in range(0, queries.numel(), rows):
                q = queries[s:s + rows]
                score = knn_scores(self.z[nodes[q]], z, self.similarity, sq)
                best, at = score.topk(take, dim=1)
                sims[q, :take], ids[q, :take] = best, cand[at]
        return sims, ids
