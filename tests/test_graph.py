import math
import time

import matplotlib
import networkx as nx
import pytest
import torch
from scipy import stats

import unravel
from unravel import graph, models

matplotlib.use("Agg")


def _enumerate_lengths(G):
    """Brute force: every simple source-target path of the multigraph, with its length."""
    counts = [0] * (G.graph["n"] + 1)
    if G.graph["source"] == G.graph["target"]:  # no units: the one empty path (networkx < 3.1 yields none)
        counts[0] = 1
        return counts
    for path in nx.all_simple_edge_paths(G, G.graph["source"], G.graph["target"]):
        counts[sum(G.edges[e]["length"] for e in path)] += 1
    return counts


@pytest.mark.parametrize("n", [0, 1, 2, 5, 12])
def test_chain_counts_are_binomial(n):
    g = unravel.unravel(n)
    assert g.length_counts() == [math.comb(n, k) for k in range(n + 1)]
    assert g.num_paths == 2 ** n
    if n <= 12:
        assert _enumerate_lengths(g.graph) == g.length_counts()


def test_resnet110_counts_fast_and_exact():
    start = time.perf_counter()
    counts = unravel.unravel(models.resnet_cifar(110)).length_counts()
    elapsed = time.perf_counter() - start
    assert counts == [math.comb(54, k) for k in range(55)] and sum(counts) == 2 ** 54
    assert all(isinstance(c, int) for c in counts)
    assert elapsed < 5  # "well under a second" on a quiet machine; generous for shared CI


@pytest.mark.parametrize("depth", [10, 16, 22])
def test_densenet_counts_match_enumeration(depth):
    g = unravel.unravel(models.densenet_bc(depth, growth=2))
    G = g.to_networkx()
    layers = [v for v, d in G.nodes(data=True) if d["kind"] == "layer"]
    assert len(layers) == g.n
    # every layer reads the block input and every earlier layer of its block
    per_block = g.n // 3
    first = layers[per_block - 1]
    assert G.in_degree(first) == per_block
    assert g.length_counts() == _enumerate_lengths(G)


def test_graph_structure_and_attributes():
    net = models.resnet_cifar(14)
    g = unravel.unravel(net)
    G = g.to_networkx()
    assert isinstance(G, nx.MultiDiGraph)
    assert G.number_of_nodes() == 7 and G.number_of_edges() == 12
    e = G.edges["x2", "x3", "residual"]
    assert e["kind"] == "residual" and e["unit"] == 2 and e["name"] == "stage2.0" and e["projection"]
    assert G.edges["x2", "x3", "shortcut"]["length"] == 0
    assert nx.is_directed_acyclic_graph(G)
    G.remove_node("x1")  # a copy: the graph object itself is untouched
    assert g.graph.has_node("x1")


def test_plain_units_have_one_path():
    g = unravel.unravel(models.plain_cifar(14))
    assert g.length_counts() == [0, 0, 0, 0, 0, 0, 1]
    assert list(g.paths()) == [tuple(range(6))]


def test_paths_yield_each_once_in_order():
    g = unravel.unravel(6)
    all_ = list(g.paths())
    assert len(all_) == 64 and len(set(all_)) == 64
    assert [len(p) for p in all_] == sorted(len(p) for p in all_)
    assert list(g.paths(length=2)) == sorted(p for p in all_ if len(p) == 2)
    dense = unravel.unravel(models.densenet_bc(16, growth=2))
    ds = list(dense.paths(length=3))
    assert len(ds) == len(set(ds)) == dense.length_counts()[3]
    assert list(dense.paths(length=dense.n + 1)) == []


def test_paths_are_lazy():
    g = unravel.unravel(54)
    it = g.paths(length=27)
    first = next(it)
    assert first == tuple(range(27))  # 2e15 paths of this length: only the first was made


def test_length_distribution_frame():
    df = unravel.unravel(4).length_distribution()
    assert df.columns.tolist() == ["length", "count", "fraction"]
    assert df["count"].tolist() == [1, 4, 6, 4, 1] and df["fraction"].sum() == pytest.approx(1.0)
    big = unravel.unravel(200).length_distribution()
    assert big["count"].iloc[100] == math.comb(200, 100)  # exact beyond int64


def _chi_square_uniform(samples, population):
    observed = [samples.count(p) for p in population]
    return stats.chisquare(observed).pvalue


def test_sampling_is_uniform_chain_and_generic():
    g = unravel.unravel(6)
    population = list(g.paths(length=3))
    fast = g.sample_paths(3, 4000, generator=torch.Generator().manual_seed(0))
    assert _chi_square_uniform(fast, population) > 1e-3
    generic = graph.sample_paths(g.graph, 3, 4000, generator=1)
    assert _chi_square_uniform(generic, population) > 1e-3
    dense = unravel.unravel(models.densenet_bc(16, growth=2))  # 3 blocks of 2 layers
    population = list(dense.paths(length=2))
    assert _chi_square_uniform(dense.sample_paths(2, 3000, generator=2), population) > 1e-3


def test_sampling_detects_non_uniformity():
    # the test above could not pass by accident: a biased sampler fails it
    population = list(unravel.unravel(6).paths(length=3))
    biased = population[:10] * 300 + population[10:] * 100
    assert _chi_square_uniform(biased, population) < 1e-6


def test_sampling_is_seedable_and_validates():
    g = unravel.unravel(10)
    assert g.sample_paths(4, 5, generator=3) == g.sample_paths(4, 5, generator=3)
    assert graph.sample_paths(g.graph, 4, 5, generator=3) == graph.sample_paths(g.graph, 4, 5, generator=3)
    with pytest.raises(ValueError, match="no path has length 11"):
        graph.sample_paths(g.graph, 11, 2)
    with pytest.raises(ValueError, match="no path has length 2; lengths with paths: 6..6"):
        unravel.unravel(models.plain_cifar(14)).sample_paths(2, 1)
    with pytest.raises(TypeError, match="generator"):
        graph.sample_paths(g.graph, 1, 1, generator="seed")


def test_unravel_inputs():
    units = unravel.find_units(models.resnet_cifar(8))
    assert unravel.unravel(units).n == 3
    with pytest.raises(ValueError, match="non-negative"):
        unravel.unravel(-1)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        unravel.unravel("resnet")
    with pytest.raises(unravel.UnsupportedModelError):
        unravel.unravel(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("source", [3, 6, "resnet110", "densenet"])
def test_drawings_render_to_png(tmp_path, source):
    import matplotlib.pyplot as plt

    g = {"resnet110": lambda: unravel.unravel(models.resnet_cifar(110)),
         "densenet": lambda: unravel.unravel(models.densenet_bc(22, growth=2))}.get(source, lambda: unravel.unravel(source))()
    ax = g.draw()
    path = tmp_path / "g.png"
    ax.figure.savefig(path)
    plt.close(ax.figure)
    assert path.stat().st_size > 5000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if isinstance(source, int):  # every path spelled out: one row per path
        assert len(ax.get_yticks()) == 2 ** source


def test_path_length_distribution_plot(tmp_path):
    import matplotlib.pyplot as plt
    import pandas as pd

    frames = [unravel.unravel(n).length_distribution().assign(model=f"n={n}") for n in (10, 20)]
    ax = unravel.plots.path_length_distribution(pd.concat(frames), hue="model")
    ax.figure.savefig(tmp_path / "d.png")
    plt.close(ax.figure)
    assert (tmp_path / "d.png").stat().st_size > 5000
    with pytest.raises(ValueError, match="missing \\['length'\\]"):
        unravel.plots.path_length_distribution(pd.DataFrame({"fraction": [1.0]}))


def test_densenet_graph_holds_only_nodes_on_paths():
    import networkx as nx

    G = unravel.unravel(unravel.models.densenet_bc(22, growth=4)).graph
    sources = [v for v in G if G.in_degree(v) == 0]
    sinks = [v for v in G if G.out_degree(v) == 0]
    assert sources == [G.graph["source"]] and sinks == [G.graph["target"]]
    on_paths = nx.descendants(G, G.graph["source"]) & nx.ancestors(G, G.graph["target"])
    assert set(G) == on_paths | {G.graph["source"], G.graph["target"]}
