import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from gsco.specialists.retrieval import RetrievalIndex, neighbours_agree


def _sklearn(train, queries, k):
    dist, idx = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(train).kneighbors(queries)
    return dist, idx


def _assert_same_neighbours(ours, theirs, tol=1e-5):
    (d1, i1), (d2, i2) = ours, theirs
    assert np.allclose(d1, d2, atol=tol)
    assert neighbours_agree(d2, i2, i1, tol)


def test_tie_aware_comparison():
    dist = np.array([[0.1, 0.2, 0.2, 0.5]])
    assert neighbours_agree(dist, np.array([[1, 2, 3, 4]]), np.array([[1, 3, 2, 4]]))  # tied pair swapped
    assert not neighbours_agree(dist, np.array([[1, 2, 3, 4]]), np.array([[2, 1, 3, 4]]))
    assert not neighbours_agree(dist, np.array([[1, 2, 3, 4]]), np.array([[1, 2, 3, 5]]))


@pytest.mark.parametrize("dim", [64, 2048])
def test_top10_equals_sklearn_cosine_brute_force(dim):
    rng = np.random.default_rng(dim)
    train = rng.normal(size=(500, dim)).astype(np.float32)
    queries = rng.normal(size=(40, dim)).astype(np.float32)
    index = RetrievalIndex(train, np.arange(500))
    ours = index.search(queries, 10)
    theirs = _sklearn(train, queries, 10)
    _assert_same_neighbours(ours, theirs)
    assert np.array_equal(ours[1], theirs[1])  # continuous random data: no ties at all


def test_high_dimensional_features_like_vit_b16():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(60, 197 * 768)).astype(np.float32)
    queries = train[:5] + 0.01 * rng.normal(size=(5, 197 * 768)).astype(np.float32)
    dist, idx = RetrievalIndex(train, np.zeros(60)).search(queries, 10, chunk_size=2)
    assert idx[:, 0].tolist() == [0, 1, 2, 3, 4] and np.all(dist[:, 0] < 1e-3)
    _assert_same_neighbours((dist, idx), _sklearn(train, queries, 10))


def test_chunking_does_not_change_results_and_index_round_trips(tmp_path):
    rng = np.random.default_rng(2)
    train, queries = rng.normal(size=(300, 32)), rng.normal(size=(23, 32))
    labels = rng.integers(0, 3, size=(300, 1))
    index = RetrievalIndex(train, labels)
    full = index.search(queries, 7)
    for chunk in (1, 5, 100):
        d, i = index.search(queries, 7, chunk_size=chunk)
        assert np.array_equal(i, full[1]) and np.allclose(d, full[0])
    loaded = RetrievalIndex.load(index.save(tmp_path / "index.safetensors"))
    assert torch.equal(loaded.features, index.features) and torch.equal(loaded.labels, index.labels)
    assert np.array_equal(loaded.search(queries, 7)[1], full[1])


def test_bad_queries_are_rejected():
    index = RetrievalIndex(np.ones((4, 3)), np.zeros(4))
    with pytest.raises(ValueError, match="top_n must be between 1 and the index size 4"):
        index.search(np.ones((1, 3)), 5)
    with pytest.raises(ValueError, match=r"queries must be \(Q, 3\)"):
        index.search(np.ones((1, 4)), 2)


def test_leave_one_out_search_equals_sklearn_without_the_query_itself():
    rng = np.random.default_rng(3)
    train = rng.normal(size=(200, 32)).astype(np.float32)
    train[7] = train[3] * 2.0  # an exact duplicate direction: 3 and 7 are each other's nearest (distance 0)
    index = RetrievalIndex(train, np.arange(200))
    dist, idx = index.search_leave_one_out(train, 10)
    assert dist.shape == idx.shape == (200, 10)
    assert not (idx == np.arange(200)[:, None]).any()
    assert idx[3, 0] == 7 and idx[7, 0] == 3 and dist[3, 0] == pytest.approx(0, abs=1e-6)
    # scikit-learn's 11 nearest with the query's own row removed
    d11, i11 = _sklearn(train, train, 11)
    for q in (0, 3, 7, 150):
        keep = i11[q] != q
        assert np.allclose(dist[q], d11[q][keep][:10], atol=1e-5)
        assert neighbours_agree(d11[q][keep][None, :10], i11[q][keep][None, :10], idx[q][None])
    with pytest.raises(ValueError, match="one query per index entry"):
        index.search_leave_one_out(train[:5], 3)


@pytest.mark.parametrize("dim", [16, 512])
def test_euclidean_index_equals_sklearns_default_nearest_neighbours(dim):
    """MedMNIST+'s kNN: NearestNeighbors(n_neighbors=11) — Minkowski p=2, i.e. Euclidean, on unnormalised features."""
    rng = np.random.default_rng(dim)
    train = (rng.normal(size=(400, dim)) * rng.uniform(0.1, 5, size=(400, 1))).astype(np.float32)  # varied norms
    queries = rng.normal(size=(30, dim)).astype(np.float32)
    ours = RetrievalIndex(train, np.arange(400), metric="euclidean").search(queries, 11, chunk_size=7)
    theirs = NearestNeighbors(n_neighbors=11).fit(train).kneighbors(queries)
    _assert_same_neighbours(ours, theirs, tol=1e-3)
    assert not np.array_equal(ours[1], _sklearn(train, queries, 11)[1])  # cosine would pick other neighbours
    with pytest.raises(ValueError, match="metric 'manhattan'"):
        RetrievalIndex(train, np.arange(400), metric="manhattan")


# ------------------------------------------------------------------------------------------- the faiss backend
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_faiss_backend_and_memory_mapped_blocks_equal_sklearn(metric, tmp_path):
    from gsco.specialists.retrieval import exact_search

    rng = np.random.default_rng(7)
    train = rng.normal(size=(3000, 96)).astype(np.float32)
    queries = rng.normal(size=(50, 96)).astype(np.float32)
    theirs = NearestNeighbors(n_neighbors=10, metric=metric, algorithm="brute").fit(train).kneighbors(queries)
    _assert_same_neighbours(RetrievalIndex(train, np.arange(3000), metric=metric, backend="faiss").search(queries, 10),
                            theirs)
    np.save(tmp_path / "train.npy", train)
    mapped = np.load(tmp_path / "train.npy", mmap_mode="r")  # read 700 rows at a time, never whole
    _assert_same_neighbours(exact_search(mapped, queries, 10, metric, block_rows=700), theirs)


def test_faiss_leave_one_out_and_ties_keep_the_earlier_row():
    from gsco.specialists.retrieval import exact_search

    train = np.array([[1, 0], [1, 0], [0, 1], [1, 0.1]], dtype=np.float32)  # rows 0 and 1 tie exactly
    dist, idx = exact_search(train, train[:1], 3, "cosine", block_rows=1)  # the tie spans two blocks
    assert idx.tolist() == [[0, 1, 3]] and dist[0, 0] == dist[0, 1] == 0
    index = RetrievalIndex(train, np.arange(4), backend="faiss")
    torch_index = RetrievalIndex(train, np.arange(4))
    (d1, i1), (d2, i2) = index.search_leave_one_out(train, 2), torch_index.search_leave_one_out(train, 2)
    assert not (i1 == np.arange(4)[:, None]).any() and neighbours_agree(d2, i2, i1)  # rows 0 and 1 tie for row 3
    assert np.allclose(d1, d2, atol=1e-6)


def test_an_unknown_or_missing_backend_is_one_clear_error(monkeypatch):
    import importlib.util

    with pytest.raises(ValueError, match="key 'retrieval_backend': 'annoy'; expected one of torch, faiss"):
        RetrievalIndex(np.zeros((2, 2)), np.arange(2), backend="annoy")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "faiss" else real(name, *a))
    from gsco.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match="retrieval_backend=faiss needs faiss: pip install faiss-cpu"):
        RetrievalIndex(np.zeros((2, 2)), np.arange(2), backend="faiss")
