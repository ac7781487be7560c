"""Getting what the servers need: setup commands, Debian packages, jars from Maven Central."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from servers.common import StackError, say


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a build/setup command, failing loudly with its output."""
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise StackError(f"{' '.join(cmd)} failed:\n{output[-4000:]}")
    return result


def tool(name: str, apt_package: str, extra_paths: tuple[str, ...] = ()) -> str:
    """Path of a command-line tool, apt-installing its package if it is missing."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *extra_paths])
    found = shutil.which(name, path=search)
    if not found:
        apt_install(apt_package)
        found = shutil.which(name, path=search)
    if not found:
        raise StackError(f"{name} not found even after installing {apt_package}")
    return found


def apt_install(package: str) -> None:
    """Install a Debian package (apt-get update first, only when we must install)."""
    if os.geteuid() != 0:
        raise StackError(f"{package} is missing; install it with: sudo apt-get install -y {package}")
    say(f"apt-get install {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wait_for_lock = ["-o", "DPkg::Lock::Timeout=600"]
    run(["apt-get", *wait_for_lock, "update", "-q"], env=env)
    run(["apt-get", *wait_for_lock, "install", "-y", "-q", "--no-install-recommends", package], env=env)


def maven_fetch(target: Path, coordinates: list[str]) -> Path:
    """Copy jars and their dependencies from Maven Central into target/lib, once.

    A throwaway pom lists the artifacts; a marker naming them makes the second
    run skip Maven (and the network) entirely.
    """
    lib, marker = target / "lib", target / "complete"
    wanted = "\n".join(coordinates)
    if marker.exists() and marker.read_text() == wanted:
        return lib
    mvn = tool("mvn", "maven")
    tool("java", "openjdk-17-jre-headless")
    say(f"fetching {', '.join(coordinates)} from Maven Central")
    dependencies = "".join(
        "<dependency><groupId>{}</groupId><artifactId>{}</artifactId><version>{}</version></dependency>".format(
            *c.split(":")
        )
        for c in coordinates
    )
    target.mkdir(parents=True, exist_ok=True)
    (target / "pom.xml").write_text(
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>local.stack</groupId><artifactId>deps</artifactId><version>1</version>"
        f"<dependencies>{dependencies}</dependencies></project>\n"
    )
    shutil.rmtree(lib, ignore_errors=True)
    run([mvn, "-q", "-B", "-f", str(target / "pom.xml"), "dependency:copy-dependencies",
         f"-DoutputDirectory={lib}", "-DincludeScope=runtime"])
    marker.write_text(wanted)
    return lib
