"""SecantusDB: a MongoDB wire-protocol server over WiredTiger, built from crates.io.

``secantusd-rs`` (crate ``secantus-mdb``, GPL-2.0, a beta) is one process with
its own storage, so unlike FerretDB it needs no PostgreSQL. It announces
itself as a one-node replica set (``secantus``), which gives drivers
transactions and change streams as on a replica-set ``mongod``.

It is built once with ``cargo install`` into the stack's cache. The crate
asks for a newer Rust than it needs (``rust-version``), hence
``--ignore-rust-version``; ``--locked`` builds the dependency versions it was
published with. WiredTiger is compiled from bundled C source, which needs
CMake and a C compiler.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from servers.common import BIND_HOST, CACHE, StackError, say
from servers.install import run, tool

CRATE = "secantus-mdb"
VERSION = "0.5.3-beta.196"

#: WiredTiger's cache; its default (4 GB) is sized for a server of its own.
CACHE_SIZE = "256M"


class Secantus:
    """How the stack builds and runs SecantusDB (the ``mongodb`` service)."""

    flavour = "secantus"

    @property
    def root(self) -> Path:
        """``cargo install --root``: a directory per version, so a new version builds anew."""
        return CACHE / f"secantus-{VERSION}"

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "secantusd-rs"

    def install(self) -> None:
        if not self.binary.exists():
            self.build()

    def build(self) -> None:
        cargo = tool_or_rustup("cargo")
        tool("cmake", "cmake")
        tool("cc", "gcc")
        say(f"building SecantusDB {VERSION} with cargo (first time only; several minutes)")
        partial = self.root.with_name(self.root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        run([cargo, "install", CRATE, "--version", VERSION, "--locked", "--ignore-rust-version",
             "--root", str(partial)])
        shutil.rmtree(self.root, ignore_errors=True)
        partial.replace(self.root)  # complete builds only: the binary marks one

    def prepare(self, data: Path) -> None:
        # An explicit (empty) config file: secantusd-rs would otherwise read
        # ./secantusd.toml, ~/.secantus/ or /etc/secantus/ if one exists.
        (data / "secantusd.toml").write_text("# Written by scripts/stack.py; settings are its flags.\n")

    def command(self, data: Path, address: str) -> list[str]:
        port = address.rsplit(":", 1)[1]
        # --sync-on-commit: an acknowledged write survives kill -9 of the
        # server, as on a replica-set mongod (journaled majority writes).
        return [str(self.binary), "--config", str(data / "secantusd.toml"), "--host", BIND_HOST,
                "--port", port, "--storage-path", str(data / "secantus"), "--cache-size", CACHE_SIZE,
                "--sync-on-commit"]


def tool_or_rustup(name: str) -> str:
    """A Rust tool from PATH or rustup's ~/.cargo/bin (Debian's Rust is older
    than the crate's dependencies need, so it is not apt-installed)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path.home() / ".cargo" / "bin"))
    if not found:
        raise StackError(f"{name} not found: install Rust with rustup (https://rustup.rs), "
                         "or set MONGODB_SERVER=ferretdb")
    return found
