"""The sandboxed server process: namespaces and a minimal root, capability drop,
no_new_privs and a syscall filter (docs/security.md).

``make_plan`` computes what the sandbox will contain from a validated config; `vfsframe
serve` carries it out with ``enter.prepare`` and ``enter.enter``. Plugins declare what they
need with ``SandboxNeeds`` (``PluginType.sandbox_needs``).
"""

from .idmap import IdMapping
from .needs import SandboxNeeds, UndeclaredNeeds, no_sandbox_needs, share_needs
from .plan import SandboxMode, SandboxPlan, SeccompMode, make_plan

__all__ = [
    "IdMapping",
    "SandboxMode",
    "SandboxNeeds",
    "SandboxPlan",
    "SeccompMode",
    "UndeclaredNeeds",
    "make_plan",
    "no_sandbox_needs",
    "share_needs",
]
