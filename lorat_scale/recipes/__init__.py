"""Training recipes as code: each module's ``get_config()`` returns the typed ``Config`` of one recipe.

    paper          LoRAT's full recipe per variant: LaSOT + GOT-10k vot_train + TrackingNet + COCO, 170 epochs
    got10k         the GOT-10k one-shot protocol: GOT-10k train only, 100 epochs, scored on GOT-10k test
    quickstart     the README's main job: S-224 on the sample sequences, minutes on a CPU
    memory_saving  the paper's recipe with a memory-saving set (the sets the memory estimate and dry run use)

    lorat-scale train --recipe paper --variant L-224 --data-root /datasets [section.key=value ...]

Each module's docstring holds its run example; dotted overrides apply on top of the recipe, as on
top of a bare variant preset (``lorat-scale train --variant L-224`` without ``--recipe``).
"""
from __future__ import annotations

import importlib
import inspect

from ..config import Config, ConfigError, apply_overrides

NAMES = ("paper", "got10k", "quickstart", "memory_saving")


def get_config(name: str, variant: str | None = None, data_root: str | None = None,
               overrides: list[str] | None = None) -> Config:
    """The config of recipe ``name`` (its own defaults where ``variant``/``data_root`` are None), then ``overrides``."""
    if name not in NAMES:
        raise ConfigError(f"unknown recipe {name!r}; expected one of {', '.join(NAMES)}")
    module = importlib.import_module(f"{__name__}.{name}")
    params = inspect.signature(module.get_config).parameters
    kwargs = {}
    for key, value in (("variant", variant), ("data_root", data_root)):
        if value is None:
            continue
        if key not in params:
            raise ConfigError(f"recipe {name!r} takes no {key.replace('_', '-')}")
        kwargs[key] = value
    cfg = module.get_config(**kwargs)
    return apply_overrides(cfg, overrides or [])
