"""Session fixtures for tests that run pods: the images and a real node (cerise/devenv/node.py)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cerise.devenv import node as devenv_node
from cerise.devenv import sshd as devenv_sshd
from cerise.devenv.controlplane import REPO, ControlPlane
from cerise.devenv.process import log_tail


@dataclass(frozen=True)
class Images:
    """Archives of the images tools/build-image.sh made (docker-archive format)."""

    pause: Path
    cerise: Path


@pytest.fixture(scope="session")
def images() -> Images:
    """The Cerise image and the sandbox image, built once and then reused by content."""
    result = subprocess.run(["bash", str(REPO / "tools" / "build-image.sh")],
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, f"tools/build-image.sh failed:\n{result.stderr[-4000:]}"
    *_, pause, cerise = result.stdout.split()
    return Images(pause=Path(pause), cerise=Path(cerise))


@pytest.fixture(scope="session")
def node(control_plane: ControlPlane, images: Images) -> Iterator[devenv_node.Node]:
    """A node of the session's control plane, with the Cerise image loaded."""
    if os.geteuid() != 0:
        pytest.fail("a node needs root (containerd, a bridge, iptables)")
    yield from _running(devenv_node.start(control_plane, pause=images.pause,
                                          images=[images.cerise]))


@pytest.fixture(scope="module")
def second_node(node: devenv_node.Node, images: Images) -> Iterator[devenv_node.Node]:
    """A second node beside `node` (its own containerd, kubelet and pod subnet), with the
    Cerise image loaded: for tests where one node is lost while the other runs on. Per
    module, so that no later test's pods land where its images are not."""
    yield from _running(devenv_node.join(node, pause=images.pause, images=[images.cerise]))


def _running(started: devenv_node.Node) -> Iterator[devenv_node.Node]:
    """A started node for a fixture's life, its start-up time printed; stopped after."""
    print(f"\nnode {started.place.name} Ready in {started.started_in:.1f} s")
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def node_sshd(node: devenv_node.Node) -> Iterator[devenv_sshd.SshEndpoint]:
    """The test sshd on the node's address, where pods reach it."""
    server = devenv_sshd.start(listen=devenv_node.ADDRESS)
    try:
        yield server.endpoint
    finally:
        server.stop()


def kubelet_log(node: devenv_node.Node) -> str:
    """The end of the kubelet's log, for a failure message."""
    return log_tail(node.state.path / "kubelet.log", 60)
