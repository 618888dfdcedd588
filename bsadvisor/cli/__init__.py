"""The `bsadvisor` command line: a thin layer over the library, one module per command.

``app`` (the Typer application, consoles, ``main``) imports no command; importing this
package registers every command on it. Nothing here imports torch.
"""
# Each module registers its commands; --help lists them in this order.
from bsadvisor.cli import convert, advise, export, probe, validate, demo  # noqa: F401,I001
from bsadvisor.cli.app import main

__all__ = ["main"]
