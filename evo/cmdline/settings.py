"""Settings files: TOML tables whose keys are command-line options.

    # evovae.toml
    [search]
    population = 20
    offspring = 20
    bind = "tcp://*:5557"
    server-key-secret = "/etc/evovae/keys/head.key_secret"

    [worker]
    connect = "tcp://head-node:5557"

``evovae search --config evovae.toml`` reads ``[search]``, ``evovae worker
--config ...`` reads ``[worker]``. A key is an option's long name (dashes or
underscores); flags given on the command line override the file.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["SettingsError", "apply_settings", "load_settings"]


class SettingsError(ValueError):
    """A settings file that cannot be used (missing, not TOML, unknown keys, wrong types)."""


def load_settings(path: str | Path, section: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise SettingsError(f"settings file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"settings file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"settings file {path} is not valid TOML: it is not UTF-8 text") from None
    except OSError as exc:  # a directory, no permission
        raise SettingsError(f"settings file {path} cannot be read: {exc.strerror or exc}") from None
    table = data.get(section, {})
    if not isinstance(table, dict):
        raise SettingsError(f"{path}: [{section}] must be a table of options")
    return {key.replace("-", "_"): value for key, value in table.items()}


def apply_settings(parser: argparse.ArgumentParser, argv: Sequence[str], section: str) -> None:
    """If ``argv`` has ``--config FILE``, make the file's ``[section]`` the parser's defaults."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if not known.config:
        return
    values = load_settings(known.config, section)
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    unknown = sorted(set(values) - set(actions))
    if unknown:
        raise SettingsError(f"{known.config}: unknown option(s) in [{section}]: {', '.join(unknown)}")
    for dest, value in values.items():
        action = actions[dest]
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            if not isinstance(value, bool):
                raise SettingsError(f"{known.config}: [{section}] {dest} must be true or false, got {value!r}")
        elif isinstance(action, argparse._AppendAction) or action.nargs in ("*", "+"):
            if not isinstance(value, list):
                raise SettingsError(f"{known.config}: [{section}] {dest} must be a list, got {value!r}")
        elif callable(action.type) and not isinstance(value, bool):  # (a type given by name is not used here)
            try:
                value = action.type(value)
            except (TypeError, ValueError) as exc:  # evo.cmdline.validate's OptionError says what the option takes
                why = f": {exc}" if str(exc).startswith("expected") else ""
                raise SettingsError(f"{known.config}: [{section}] {dest} = {value!r} is not valid{why}") from None
        if action.choices is not None and not isinstance(value, list) and value not in action.choices:
            raise SettingsError(f"{known.config}: [{section}] {dest} = {value!r}; choose from {list(action.choices)}")
        if action.required:
            action.required = False
        parser.set_defaults(**{dest: value})
