"""The `bsadvisor` command line: a thin layer over the library, one module per command.

``app`` (the Typer application, consoles, ``main``) imports no command; importing this
package registers every command on it. Nothing here imports torch.
"""
from bsadvisor.cli import advise, convert, probe, validate  # noqa: F401  (each registers its commands)
from bsadvisor.cli.app import main

__all__ = ["main"]
