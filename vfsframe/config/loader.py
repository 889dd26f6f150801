"""Reading a config file and explaining what is wrong with it."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from vfsframe.config.models import LAYER_TAG, ConfigModels, default_models, duplicate_problems

BUILTIN_PREFIX = "builtin:"
BUILTIN_DIR = Path(__file__).parent / "builtin"


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` are one-line "field.path: reason" strings."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems

    def report(self) -> str:
        lines = [f"{self.source}: invalid config"]
        lines += [f"  {problem}" for problem in self.problems]
        return "\n".join(lines)


def builtin_configs() -> list[str]:
    """Names of the configs shipped with vfsframe (``builtin:NAME``)."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))


def resolve(source: str | Path) -> Path:
    text = str(source)
    if text.startswith(BUILTIN_PREFIX):
        name = text.removeprefix(BUILTIN_PREFIX)
        path = BUILTIN_DIR / f"{name}.toml"
        if not path.is_file():
            raise ConfigError(
                text, [f"no built-in config {name!r}; there are: {', '.join(builtin_configs())}"]
            )
        return path
    return Path(source)


def read_document(path: Path) -> Any:
    """Parse TOML, YAML or JSON by the file's extension."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), [exc.strerror or str(exc)]) from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            return tomllib.loads(raw.decode())
        if suffix in (".yaml", ".yml"):
            return yaml.safe_load(raw) or {}
        if suffix == ".json":
            return json.loads(raw)
    except (
        tomllib.TOMLDecodeError,
        yaml.YAMLError,
        json.JSONDecodeError,
        UnicodeDecodeError,
    ) as exc:
        raise ConfigError(str(path), [f"not valid {suffix[1:].upper()}: {exc}"]) from None
    raise ConfigError(str(path), [f"unknown config format {suffix!r}: use .toml, .yaml or .json"])


def load_config(source: str | Path, models: ConfigModels | None = None) -> Any:
    """The validated ``ServerConfig`` of a file (or ``builtin:NAME``); ConfigError if not."""
    path = resolve(source)
    return validate_config(read_document(path), str(source), models)


def validate_config(
    document: Any, source: str = "<config>", models: ConfigModels | None = None
) -> Any:
    models = models or default_models()
    try:
        config = models.server.model_validate(document)
    except ValidationError as exc:
        type_names = set(models.registry.backends) | set(models.registry.middleware)
        raise ConfigError(
            source, [_describe(error, models, type_names) for error in exc.errors()]
        ) from None
    problems = duplicate_problems(config.shares)
    if problems:
        raise ConfigError(source, problems)
    return config


def _describe(error: Any, models: ConfigModels, type_names: set[str]) -> str:
    loc = _user_location(error["loc"], type_names)
    message = error["msg"]
    kind = error["type"]
    if kind == "union_tag_invalid" or (kind == "literal_error" and loc.endswith(".type")):
        tag = error["ctx"]["tag"] if kind == "union_tag_invalid" else error["input"]
        loc = loc.removesuffix(".type")
        table = models.registry.middleware if "middleware" in loc else models.registry.backends
        message = f"unknown type {tag!r}; installed: {', '.join(sorted(table)) or 'none'}"
        broken = models.registry.broken
        if broken:
            message += f" (failed to load: {', '.join(sorted(broken))})"
    elif kind == "union_tag_not_found":
        message = "missing 'type' (which plugin to use)"
    elif kind == "missing":
        message = "required, but missing"
    elif kind == "extra_forbidden":
        message = "unknown option"
    elif kind == "value_error":
        message = message.removeprefix("Value error, ")
    return f"{loc or '(top level)'}: {message}"


def _user_location(loc: tuple[Any, ...], type_names: set[str]) -> str:
    """ "share[0].backend.capacity" from pydantic's ('shares', 0, 'backend', 'memory', ...)."""
    out = ""
    for index, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == LAYER_TAG or (part in type_names and _is_tag(loc, index)):
            pass  # a discriminator pydantic inserts; the user never wrote it
        else:
            name = "share" if part == "shares" else part
            out += f".{name}" if out else name
    return out


def _is_tag(loc: tuple[Any, ...], index: int) -> bool:
    """Whether the type name at ``loc[index]`` is a union tag rather than a field so named:
    tags follow a list index (not a share's), a backend field, or stand before a field of
    their model (nested backend fields)."""
    previous = loc[index - 1] if index else None
    if isinstance(previous, int):
        return loc[index - 2] not in ("share", "shares") if index >= 2 else True
    if previous in ("backend", "upper"):
        return True
    return index + 1 < len(loc) and isinstance(loc[index + 1], str)
