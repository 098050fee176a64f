"""Plugin discovery through real entry points, registration checks, and spec parsing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bids_encoding.errors import UserError
from bids_encoding.plugin_api import FeatureExtractor, FeatureSet, Option, hookimpl, int_list
from bids_encoding.plugins.registry import check, collect, get_plugin_manager, installed_plugins, instantiate, parse_spec

ROOT = Path(__file__).resolve().parents[2]


class Layered(FeatureExtractor):
    name = "layered"
    modality = "text"
    description = "test extractor with typed options"
    options = {"layers": Option([1], "layers", type=int_list), "context": Option(8, "tokens"),
               "scale": Option(1.0, "gain"), "lower": Option(False, "lowercase first"),
               "pool": Option("last", "pooling", choices=("last", "mean"))}

    def extract(self, stimuli):
        return FeatureSet.single(stimuli, np.ones((len(stimuli), 1)))


class InTestPlugin:
    @staticmethod
    @hookimpl
    def register_feature_extractors(register):
        register(Layered)


def with_plugin(obj, name="intest"):
    pm = get_plugin_manager()
    pm.register(obj, name=name)
    return pm


def test_builtin_plugins_are_found_through_entry_points():
    plugins = installed_plugins()["feature extractor"]
    assert {"wordrate", "wordlength", "frequency", "trialtype"} <= set(plugins)
    assert plugins["trialtype"].distribution == "bids-encoding-trialtype"
    assert plugins["wordrate"].version == "0.1.0"
    assert plugins["wordrate"].kind == "feature extractor"


def test_an_in_test_plugin_is_collected_and_configured_from_a_spec():
    pm = with_plugin(InTestPlugin)
    try:
        registry = collect(pm)
        extractor, entry = instantiate("layered:layers=6,9;context=256;scale=0.5;lower=true;pool=mean", registry)
        assert entry.plugin == "intest" and "not installed" in entry.distribution
        assert extractor.layers == [6, 9] and extractor.context == 256 and extractor.scale == 0.5
        assert extractor.lower is True and extractor.pool == "mean"
        defaults, _ = instantiate("layered", registry)
        assert defaults.get_options() == {"layers": [1], "context": 8, "scale": 1.0, "lower": False, "pool": "last"}
    finally:
        pm.unregister(name="intest")


@pytest.mark.parametrize("spec,expected", [
    ("gpt2", ("gpt2", {})),
    ("GPT2 ", ("gpt2", {})),
    ("gpt2:layers=6,9;context=256", ("gpt2", {"layers": "6,9", "context": "256"})),
    ("gpt2:layers=6,9,context=256", ("gpt2", {"layers": "6,9", "context": "256"})),
    ("gpt2: layers = 6 , context=256", ("gpt2", {"layers": "6", "context": "256"})),
    ("glove:path=/data/glove.6B.300d.txt", ("glove", {"path": "/data/glove.6B.300d.txt"})),
])
def test_parse_spec(spec, expected):
    assert parse_spec(spec) == expected


def test_a_spec_without_key_is_explained():
    with pytest.raises(UserError, match="key=value"):
        parse_spec("gpt2:6")


def test_misnamed_hookimpl_fails_at_load_naming_the_plugin():
    class Typo:
        @staticmethod
        @hookimpl
        def register_feature_extractor(register):
            pass

    pm = get_plugin_manager()
    pm.register(Typo, name="typo")
    with pytest.raises(UserError) as err:
        check(pm)
    assert "typo" in err.value.message and "register_feature_extractors" in err.value.message


def test_unknown_name_lists_known_ones_and_bad_options_are_explained():
    registry = installed_plugins()
    with pytest.raises(UserError) as err:
        instantiate("wordrat", registry)
    assert "wordrate" in err.value.message and "trialtype" in err.value.message
    with pytest.raises(UserError) as err:
        instantiate("wordlength:units=letters", registry)
    assert "'units'" in err.value.message and "unit" in err.value.message
    pm = with_plugin(InTestPlugin)
    try:
        with pytest.raises(UserError, match="'context'.*'abc'"):
            instantiate("layered:context=abc", collect(pm))
        with pytest.raises(UserError, match="'pool'"):
            instantiate("layered:pool=max", collect(pm))
    finally:
        pm.unregister(name="intest")


@pytest.mark.parametrize("bad,reason", [
    (type("NotAnExtractor", (), {"name": "x", "modality": "text"}), "not a subclass"),
    (type("NoName", (FeatureExtractor,), {"name": "", "modality": "text"}), "lowercase alphanumeric"),
    (type("BadName", (FeatureExtractor,), {"name": "My-Plugin", "modality": "text"}), "lowercase alphanumeric"),
    (type("BadModality", (FeatureExtractor,), {"name": "smell", "modality": "odour"}), "modality"),
])
def test_bad_registrations_are_refused(bad, reason):
    class Bad:
        @staticmethod
        @hookimpl
        def register_feature_extractors(register):
            register(bad)

    pm = with_plugin(Bad, "bad")
    with pytest.raises(UserError, match=reason):
        collect(pm)


def test_two_plugins_with_one_name_are_refused():
    class Again:
        @staticmethod
        @hookimpl
        def register_feature_extractors(register):
            register(type("WordRate2", (FeatureExtractor,), {"name": "wordrate", "modality": "text"}))

    pm = with_plugin(Again, "again")
    with pytest.raises(UserError, match="two plugins register the feature extractor name 'wordrate'"):
        collect(pm)


def list_plugins_in_subprocess(pythonpath: str | None) -> dict:
    env = {"PYTHONPATH": pythonpath} if pythonpath else {}
    code = ("import json; from bids_encoding.plugins.registry import installed_plugins; "
            "print(json.dumps({n: r.distribution for n, r in installed_plugins()['feature extractor'].items()}))")
    import json
    import os

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, **env}, check=True)
    return json.loads(result.stdout)


@pytest.mark.slow
def test_the_template_plugin_installed_for_real_is_found_by_the_unchanged_core(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(target), str(ROOT / "plugins" / "template")], check=True, capture_output=True)
    assert "vowelcount" not in list_plugins_in_subprocess(None)
    found = list_plugins_in_subprocess(str(target))
    assert found["vowelcount"] == "bids-encoding-template"


def test_the_core_imports_no_plugin():
    code = """
import importlib, pkgutil, sys
import bids_encoding
for module in pkgutil.walk_packages(bids_encoding.__path__, "bids_encoding."):
    if module.name != "bids_encoding.__main__":  # that one runs the program
        importlib.import_module(module.name)
loaded = [m for m in sys.modules if m.startswith(("bids_encoding_", "torch", "transformers"))]
assert not loaded, loaded
from bids_encoding.plugins.registry import installed_plugins
assert "wordrate" in installed_plugins()["feature extractor"]
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def test_one_name_may_serve_two_kinds_and_the_builtin_pca_comes_from_the_core():
    from bids_encoding.plugins.builtin import PCAEmbedder
    from bids_encoding.plugin_api import BrainEmbedder

    class Both:
        @staticmethod
        @hookimpl
        def register_feature_extractors(register):
            register(Layered)

        @staticmethod
        @hookimpl
        def register_brain_embedders(register):
            register(type("LayeredEmbedder", (BrainEmbedder,), {"name": "layered"}))

    pm = with_plugin(Both, "both")
    try:
        registry = collect(pm)
        assert registry["feature extractor"]["layered"].cls is Layered
        assert registry["brain embedder"]["layered"].kind == "brain embedder"
        assert registry["brain embedder"]["pca"].cls is PCAEmbedder
        assert registry["brain embedder"]["pca"].distribution == "bids-encoding"
        with pytest.raises(UserError, match="no brain embedder called 'wordrate'.*layered, pca"):
            instantiate("wordrate", registry, "brain embedder")
        with pytest.raises(UserError, match="--embedder pca:latents=VALUE"):
            instantiate("pca:size=3", registry, "brain embedder")
    finally:
        pm.unregister(name="both")
