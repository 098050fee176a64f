"""The package reads top-down: no import cycle between its top-level units, and no chain of imports longer than 8
units (``__main__ -> cli -> workflows -> analyses -> fmri -> contrasts -> stimuli -> errors`` is the longest).

import-linter's contracts in pyproject.toml (run by ``make test``) keep the layers; this test keeps their depth.
"""

from __future__ import annotations

import functools

import grimp

MAX_CHAIN = 8


def unit_graph() -> dict[str, set[str]]:
    """Top-level unit -> the top-level units it imports (function-level imports included)."""
    graph = grimp.build_graph("bids_encoding")
    unit = lambda module: module.split(".")[1] if module.count(".") else None  # noqa: E731
    edges: dict[str, set[str]] = {}
    for module in graph.modules:
        source = unit(module)
        if source is None:
            continue
        edges.setdefault(source, set())
        for imported in graph.find_modules_directly_imported_by(module):
            target = unit(imported) if imported.startswith("bids_encoding.") else None
            if target and target != source:
                edges[source].add(target)
    return edges


def test_no_cycle_and_no_chain_longer_than_eight_units():
    edges = unit_graph()

    @functools.lru_cache(maxsize=None)
    def longest(unit: str, path: tuple[str, ...] = ()) -> tuple[str, ...]:
        assert unit not in path, f"import cycle: {' -> '.join(path + (unit,))}"
        chains = [longest(target, path + (unit,)) for target in sorted(edges.get(unit, ()))]
        return (unit,) + max(chains, key=len, default=())

    chain = max((longest(unit) for unit in sorted(edges)), key=len)
    assert len(chain) <= MAX_CHAIN, f"{len(chain)} units: {' -> '.join(chain)}"
    assert {"analyses", "fmri", "meeg", "models", "plan", "runner", "options"} <= set(edges)
