"""Reading a ``--config`` settings file (TOML), every way it can be wrong one ``ConfigError`` line."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from sgdwalk.errors import ConfigError

CONFIG_MAX_BYTES = 1 << 20  # a settings file is a few lines; anything this big is a mistake


def load_toml(path: Path, names: set[str]) -> dict[str, Any]:
    """Read a ``--config`` file: top-level keys named like the flags (dashes or underscores),
    or the same keys in a ``[run]`` table; ``names``: the settings there are."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    if not path.is_file():
        raise ConfigError(f"config file {path} is not a regular file")
    try:
        if path.stat().st_size > CONFIG_MAX_BYTES:
            raise ConfigError(f"config file {path} is larger than 1 MiB; is it a settings file?")
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    raw = raw.get("run", raw)  # allow a [run] table
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: 'run' must be a table of settings ([run])")
    out = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in names:
            raise ConfigError(f"config file {path}: unknown key {key!r}")
        out[name] = value
    return out
