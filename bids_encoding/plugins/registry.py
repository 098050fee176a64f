"""Find plugins through entry points and turn ``name:key=value,...`` into configured objects.

The host owns validation: :func:`collect` calls each plugin's hooks with a
``register`` closure that checks the class and records which distribution it
came from, so errors about a bad plugin are raised in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pluggy

from .. import __version__
from ..errors import UserError
from . import builtin as builtin_embedders
from . import hookspecs
from .types import KNOWN_MODALITIES, BrainEmbedder, FeatureExtractor, Option

NAME = re.compile(r"^[a-z][a-z0-9]*$")
KINDS = {"feature extractor": FeatureExtractor, "brain embedder": BrainEmbedder}
FLAGS = {"feature extractor": "--features", "brain embedder": "--embedder"}


def _positive(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError(f"{raw} is not a positive number")
    return value


HOST_OPTIONS: dict[str, dict[str, Option]] = {
    "image": {"fps": Option(1.0, "frames per second sampled from a movie when the events name video files (the host "
                                 "runs the image model on them, batched, as continuous features)", type=_positive)},
}
"""Options the host adds to every extractor of a modality, whatever the plugin: ``cnn:fps=2``."""


def all_options(cls: type) -> dict[str, Option]:
    """A plugin class's own options and those the host adds to its modality."""
    return {**cls.options, **HOST_OPTIONS.get(getattr(cls, "modality", ""), {})}


def host_options(plugin: Any) -> dict[str, Any]:
    """The values of the host's options on a configured plugin (for cache keys and sidecars)."""
    return {key: getattr(plugin, key) for key in HOST_OPTIONS.get(plugin.modality, {})}


@dataclass(frozen=True)
class Registered:
    """A plugin class with where it came from."""

    cls: type
    plugin: str
    distribution: str
    version: str

    @property
    def name(self) -> str:
        return self.cls.name

    @property
    def kind(self) -> str:
        return self.cls.kind

    def provenance(self) -> dict[str, str]:
        return {"Name": self.name, "Distribution": self.distribution, "Version": self.version}


def get_plugin_manager(load_entrypoints: bool = True) -> pluggy.PluginManager:
    """A plugin manager with our hookspecs and, by default, every installed plugin."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(builtin_embedders, name="builtin")
    if load_entrypoints:
        try:
            pm.load_setuptools_entrypoints(hookspecs.PROJECT_NAME)
        except Exception as exc:  # a plugin that fails to import
            raise UserError(
                f"an installed bids-encoding plugin failed to load ({type(exc).__name__}: {exc})",
                fix="Reinstall or uninstall that plugin (pip list shows what is installed)",
            ) from None
    check(pm)
    return pm


def check(pm: pluggy.PluginManager) -> None:
    """Fail on a hookimpl whose name matches no hook, naming the plugin."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise UserError(
            f"plugin '{pm.get_name(exc.plugin)}' implements a hook that bids-encoding does not define ({exc})",
            fix=f"Rename the function to one of the hooks in bids_encoding.plugins.hookspecs: {', '.join(_hook_names())}",
        ) from None


def _hook_names() -> list[str]:
    return [n for n in dir(hookspecs) if n.startswith("register_")]


def _distributions(pm: pluggy.PluginManager) -> dict[int, tuple[str, str]]:
    return {id(plugin): (dist.project_name, dist.version) for plugin, dist in pm.list_plugin_distinfo()}


Registry = dict[str, dict[str, Registered]]
"""What the plugins provide: kind (``"feature extractor"``, ``"brain embedder"``) -> name -> class.

Names are unique within a kind only, so one plugin may offer ``sae`` both as a brain
embedder (``--embedder sae``) and as a feature extractor (``--features sae:source=gpt2``).
"""

HOOKS = {"feature extractor": "register_feature_extractors", "brain embedder": "register_brain_embedders"}


def collect(pm: pluggy.PluginManager) -> Registry:
    """Every extractor and embedder the plugins register, by kind and name."""
    found: Registry = {kind: {} for kind in KINDS}
    dists = _distributions(pm)
    for kind, base in KINDS.items():
        for impl in getattr(pm.hook, HOOKS[kind]).get_hookimpls():
            plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)
            dist, version = dists.get(id(impl.plugin), _builtin(impl.plugin, plugin_name))

            def register(cls, _base=base, _kind=kind, _plugin=plugin_name, _dist=dist, _version=version):
                _validate(cls, _base, _plugin)
                if cls.name in found[_kind]:
                    other = found[_kind][cls.name]
                    raise UserError(
                        f"two plugins register the {_kind} name '{cls.name}': {other.distribution} and {_dist}",
                        fix="Uninstall one of them",
                    )
                found[_kind][cls.name] = Registered(cls, _plugin, _dist, _version)

            impl.function(register=register)
    return found


def _builtin(plugin: Any, plugin_name: str) -> tuple[str, str]:
    """Distribution and version of a plugin registered by hand: the core's own, or one a test registered."""
    if plugin is builtin_embedders:
        return "bids-encoding", __version__
    return f"(not installed: {plugin_name})", "unknown"


def _validate(cls: Any, base: type, plugin: str) -> None:
    def bad(what: str) -> UserError:
        return UserError(f"plugin '{plugin}' registered {cls!r}, which {what}", fix="Fix the plugin, or uninstall it")

    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise bad(f"is not a subclass of bids_encoding.plugin_api.{base.__name__}")
    if not NAME.match(cls.name or ""):
        raise bad("needs a lowercase alphanumeric 'name'")
    if base is FeatureExtractor and cls.modality not in KNOWN_MODALITIES:
        raise bad(f"has modality {cls.modality!r}, not one of {', '.join(KNOWN_MODALITIES)}")


@lru_cache(maxsize=1)
def installed_plugins() -> Registry:
    """What the installed distributions provide (cached for the process)."""
    return collect(get_plugin_manager())


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``"gpt2:layers=6,9;context=256"`` or ``"gpt2:layers=6,9,context=256"``.

    Options are separated by ``;`` or ``,``; a comma-separated piece without ``=``
    continues the previous value, so list values need no quoting.
    """
    name, _, rest = spec.strip().partition(":")
    options: dict[str, str] = {}
    last = None
    for piece in re.split(r"[;,]", rest) if rest else []:
        piece = piece.strip()
        if not piece:
            continue
        if "=" in piece:
            key, _, value = piece.partition("=")
            last = key.strip()
            options[last] = value.strip()
        elif last is not None:
            options[last] += "," + piece
        else:
            raise UserError(
                f"cannot read the options of '{spec}'",
                fix="Write options as NAME:key=value,key2=value (e.g. gpt2:layers=6,9;context=256)",
            )
    return name.strip().lower(), options


def instantiate(spec: str, registry: Registry, kind: str = "feature extractor") -> tuple[Any, Registered]:
    """Build a configured plugin object from a spec string, or explain what is wrong."""
    name, raw = parse_spec(spec)
    of_kind = registry.get(kind, {})
    if name not in of_kind:
        raise UserError(
            f"no {kind} called '{name}' is installed (known: {', '.join(sorted(of_kind)) or 'none'})",
            fix="Check the spelling, or install the plugin that provides it; 'bids-encoding plugins' lists them",
        )
    entry = of_kind[name]
    options = all_options(entry.cls)
    values = {}
    for key, value in raw.items():
        if key not in options:
            raise UserError(
                f"{kind} '{name}' has no option '{key}' (valid options: {', '.join(options) or 'none'})",
                fix=f"Use one of its options, e.g. {FLAGS[kind]} {name}:{next(iter(options), 'key')}=VALUE",
            )
        try:
            values[key] = options[key].parse(value)
        except (TypeError, ValueError) as exc:
            raise UserError(
                f"option '{key}' of {kind} '{name}' cannot take the value '{value}' ({exc})",
                fix=f"{options[key].help or 'See bids-encoding plugins'} (default: {options[key].default!r})",
            ) from None
    added = HOST_OPTIONS.get(getattr(entry.cls, "modality", ""), {})
    host = {key: values.pop(key, option.default) for key, option in added.items()}
    try:
        plugin = entry.cls(**values)
        for key, value in host.items():
            setattr(plugin, key, value)
        return plugin, entry
    except UserError:
        raise
    except Exception as exc:
        raise UserError(
            f"{kind} '{name}' from {entry.distribution} {entry.version} rejected its options ({type(exc).__name__}: {exc})",
            fix="Change the options given after its name",
        ) from None
