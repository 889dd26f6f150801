"""Server configuration: pydantic models built from the installed plugins, and the loader."""

from vfsframe.config.loader import ConfigError, builtin_configs, load_config, validate_config
from vfsframe.config.models import ConfigModels, ShareBase, default_models

__all__ = [
    "ConfigError",
    "ConfigModels",
    "ShareBase",
    "builtin_configs",
    "default_models",
    "load_config",
    "validate_config",
]
