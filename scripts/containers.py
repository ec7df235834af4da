"""Images built by scripts/build_images.sh, run without a Docker engine: `buildah run` of an image's entrypoint.

Used by the image smoke run (scripts/smoke_images.py) and by the benchmarks that measure the router as its
image runs it (loadtests/bench_peers.py --router-image). `buildah run` shares the host's network, so a
server in the container listens on the host's loopback.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

# Where a container may write (the chart mounts emptyDirs there, the root filesystem read-only), and what
# `buildah run` itself writes into the container for each run.
WRITABLE_DIRS = {"tmp", "proc", "sys", "dev", "run", "smoke"}
RUNTIME_FILES = {"etc/hosts", "etc/resolv.conf", "etc/hostname"}


def buildah_env() -> dict[str, str]:
    """The environment for buildah: chroot isolation and vfs storage unless set (no OCI runtime or overlay here; as build_images.sh)."""
    return {"BUILDAH_ISOLATION": "chroot", "STORAGE_DRIVER": "vfs", **os.environ}


def buildah(*args: str, check: bool = True) -> str:
    """`buildah ARGS...`, its output; CalledProcessError if it fails and `check`."""
    return subprocess.run(["buildah", *args], check=check, capture_output=True, text=True, env=buildah_env()).stdout.strip()


class ContainerError(Exception):
    """An image that is missing or not runnable as the chart runs it, or a container that did not finish in time."""


def image_config(image: str) -> dict[str, Any]:
    """The image's OCI config (Entrypoint, Cmd, User, ...); ContainerError if there is no such image."""
    done = subprocess.run(["buildah", "inspect", "--type", "image", image], capture_output=True, text=True, env=buildah_env())
    if done.returncode != 0:
        raise ContainerError(f"no image {image}: {done.stderr.strip()}")
    config: dict[str, Any] = json.loads(done.stdout)["OCIv1"].get("config") or {}
    return config


def entrypoint_of(image: str) -> list[str]:
    """The image's entrypoint, checked: it must have one, and run as a numeric non-root user."""
    config = image_config(image)
    entrypoint = config.get("Entrypoint") or []
    if not entrypoint:
        raise ContainerError(f"image {image} has no entrypoint: the chart's containers pass only arguments")
    user = str(config.get("User") or "")
    uid = user.split(":")[0]
    if not uid.isdigit() or int(uid) == 0:
        raise ContainerError(f"image {image} runs as user {user or 'root'!r}: it must be a numeric non-root user")
    return list(entrypoint)


class Container:
    """`buildah run` of an image's entrypoint with arguments, in its own process group."""

    def __init__(self, image: str, args: list[str], log_path: Path, volumes: dict[Path, str], env: dict[str, str] | None = None):
        self.image = image
        self.log_path = log_path
        entrypoint = entrypoint_of(image)
        self.name = buildah("from", "--quiet", image)
        mounts = [arg for host, inside in volumes.items() for arg in ("-v", f"{host}:{inside}")]
        variables = [arg for key, value in (env or {}).items() for arg in ("--env", f"{key}={value}")]
        command = ["buildah", "run", *mounts, *variables, self.name, "--", *entrypoint, *args]
        print(f"  $ {shlex.join(command)}", flush=True)
        self._log = open(log_path, "wb")
        self.started = time.time()
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, env=buildah_env())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ContainerError(f"{self.image} still running after {timeout:.0f} s:\n{self.log()}") from None

    def written_outside_tmp(self) -> list[str]:
        """Files the run created or changed outside the writable folders (a read-only root filesystem refuses them)."""
        mount = buildah("mount", self.name)
        changed = []
        try:
            for root, dirs, files in os.walk(mount):
                rel = os.path.relpath(root, mount)
                if rel == ".":
                    dirs[:] = [d for d in dirs if d not in WRITABLE_DIRS]
                for name in files:
                    path = os.path.normpath(os.path.join(rel, name))
                    try:
                        mtime = os.lstat(os.path.join(root, name)).st_mtime
                    except OSError:
                        continue
                    if mtime >= self.started and path not in RUNTIME_FILES:
                        changed.append("/" + path)
        finally:
            buildah("umount", self.name, check=False)
        return sorted(changed)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        buildah("rm", self.name, check=False)
