"""The hooks a bids-encoding plugin can implement.

A plugin is any module or object with functions decorated by
``bids_encoding.plugin_api.hookimpl`` whose names match the hooks below. An
installed distribution announces its plugin with an entry point in the group
``bids_encoding``::

    [project.entry-points.bids_encoding]
    myplugin = "my_package.plugin"

Each hook receives a ``register`` callable and calls it once per class it
provides; the host validates the class and records which distribution it came
from, so a plugin never has to repeat its name or version.
"""

import pluggy

PROJECT_NAME = "bids_encoding"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_feature_extractors(register):
    """Register stimulus feature extractors.

    Call ``register(cls)`` for each :class:`~bids_encoding.plugin_api.FeatureExtractor`
    subclass. An extractor turns a stimulus sequence (words, images or trials)
    into a :class:`~bids_encoding.plugin_api.FeatureSet`: one row per event, one
    or more named feature spaces (e.g. one per network layer).
    """


@hookspec
def register_brain_embedders(register):
    """Register brain embedders.

    Call ``register(cls)`` for each :class:`~bids_encoding.plugin_api.BrainEmbedder`
    subclass. An embedder learns a low-dimensional code of brain samples
    (samples x voxels or sensors) without labels, e.g. a sparse autoencoder or PCA.
    """
