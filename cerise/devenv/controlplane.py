"""The embedded Kubernetes control plane: etcd, kube-apiserver and kube-controller-manager.

Binaries come from `tools/build-binaries.sh` (built from the Kubernetes Go modules at a
pinned release, cached outside the repository); `CERISE_BIN_DIR` names their directory.
Everything listens on 127.0.0.1 at ports chosen at run time. RBAC is on; the admin is a
client certificate in `system:masters`, and further identities are static bearer tokens.
"""

from __future__ import annotations

import base64
import os
import secrets
import ssl
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cerise.devenv import pki as pki_module
from cerise.devenv.process import Daemon, StartupError, free_port

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
RBAC = REPO / "deploy" / "rbac"
"""ClusterRoles for Cerise's users (`cerise-user`) and its operator (`cerise-operator`)."""


@dataclass(frozen=True)
class Identity:
    """A user of the control plane, authenticated by a static bearer token."""

    name: str
    token: str
    groups: tuple[str, ...]


@dataclass
class ControlPlane:
    """A running control plane and how to reach it."""

    workdir: Path
    bindir: Path
    api_url: str
    ca_cert: Path
    kubeconfig: Path
    identities: dict[str, Identity]
    daemons: list[Daemon] = field(default_factory=list)
    started_in: float = 0.0

    def kubectl(
        self, *args: str, user: str = "admin", check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl as `user` (a context of the kubeconfig)."""
        return subprocess.run(
            [str(self.bindir / "kubectl"), "--kubeconfig", str(self.kubeconfig),
             "--context", user, *args],
            capture_output=True, text=True, check=check, input=stdin, timeout=120,
        )

    def kubeconfig_for(self, user: str) -> Path:
        """A kubeconfig whose current context is `user`'s (for programs without --context)."""
        config = yaml.safe_load(self.kubeconfig.read_text())
        config["current-context"] = user
        path = self.workdir / f"kubeconfig-{user}"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    def daemon(self, name: str) -> Daemon:
        """The daemon called `name` (etcd, kube-apiserver, kube-controller-manager)."""
        return next(d for d in self.daemons if d.name == name)

    def stop(self) -> None:
        """Stop the daemons in reverse order of start."""
        for daemon in reversed(self.daemons):
            daemon.stop()


def bin_dir() -> Path:
    """Directory of the pinned binaries, from CERISE_BIN_DIR."""
    value = os.environ.get("CERISE_BIN_DIR")
    if not value:
        raise StartupError(
            "CERISE_BIN_DIR is not set: run tools/build-binaries.sh and export the directory "
            "it prints (the README's commands do this)"
        )
    path = Path(value)
    missing = [b for b in ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")
               if not (path / b).is_file()]
    if missing:
        raise StartupError(f"{path} lacks {', '.join(missing)}: run tools/build-binaries.sh")
    return path


def _kubeconfig(
    api_url: str, pki: pki_module.Pki, identities: dict[str, Identity], namespaces: dict[str, str]
) -> str:
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    users: list[dict[str, object]] = [
        {"name": "admin", "user": {"client-certificate-data": b64(pki.admin.cert),
                                   "client-key-data": b64(pki.admin.key)}},
    ]
    contexts: list[dict[str, object]] = [
        {"name": "admin", "context": {"cluster": "cerise-dev", "user": "admin"}},
    ]
    for identity in identities.values():
        users.append({"name": identity.name, "user": {"token": identity.token}})
        context = {"cluster": "cerise-dev", "user": identity.name}
        if identity.name in namespaces:
            context["namespace"] = namespaces[identity.name]
        contexts.append({"name": identity.name, "context": context})
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cerise-dev", "cluster": {
            "server": api_url, "certificate-authority-data": b64(pki.ca.cert)}}],
        "users": users,
        "contexts": contexts,
        "current-context": "admin",
    }
    return yaml.safe_dump(config, sort_keys=False)


def _go_env() -> dict[str, str]:
    """The Go daemons' environment: their collector runs a quarter as often (GOGC=400: a
    heap may grow to five times what is live, not twice), which a local control plane's
    memory affords. For the same requests (400 ConfigMaps created, each patched four
    times; two runs each way) the API server took about 15 % less CPU, and etcd 12 %."""
    return {**os.environ, "GOGC": "400"}


def start(
    workdir: Path,
    *,
    identities: Sequence[tuple[str, tuple[str, ...]]] = (),
    namespaces: dict[str, str] | None = None,
    controller_manager: bool = True,
    bind_address: str = "127.0.0.1",
    timeout: float = 90.0,
) -> ControlPlane:
    """Start etcd, kube-apiserver and (optionally) kube-controller-manager under `workdir`.

    `identities` are (user, groups) pairs that get bearer tokens; `namespaces` maps a user
    to the default namespace of its kubeconfig context; kube-apiserver listens on
    `bind_address`. On any failure everything already
    started is stopped before the StartupError propagates.
    """
    began = time.monotonic()
    bindir = bin_dir()
    workdir.mkdir(parents=True, exist_ok=True)
    pki = pki_module.create(workdir / "pki")
    users = {name: Identity(name, secrets.token_hex(16), groups) for name, groups in identities}
    tokens = workdir / "pki" / "tokens.csv"
    tokens.write_text("".join(
        f'{u.token},{u.name},{u.name},"{",".join(u.groups)}"\n' for u in users.values()))
    tokens.chmod(0o600)

    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    api_url = f"https://127.0.0.1:{api_port}"
    plane = ControlPlane(
        workdir=workdir, bindir=bindir, api_url=api_url, ca_cert=pki.ca.cert,
        kubeconfig=workdir / "kubeconfig", identities=users,
    )
    plane.kubeconfig.write_text(_kubeconfig(api_url, pki, users, namespaces or {}))
    plane.kubeconfig.chmod(0o600)
    try:
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        etcd = Daemon("etcd", [
            str(bindir / "etcd"), "--name", "cerise", "--data-dir", str(workdir / "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"cerise={peer_url}", "--unsafe-no-fsync",
            "--log-level", "warn",
        ], log=workdir / "etcd.log", env=_go_env()).start()
        plane.daemons.append(etcd)
        etcd.wait_answering(f"{etcd_url}/health", lambda answer: "true" in answer.text)

        apiserver = Daemon("kube-apiserver", [
            str(bindir / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            # The tests bind every address: a test node's pods reach it at the node's
            # (cerise/devenv/node.py). `./dev up` keeps it on the loopback.
            f"--bind-address={bind_address}", "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--tls-cert-file={pki.apiserver.cert}", f"--tls-private-key-file={pki.apiserver.key}",
            f"--cert-dir={workdir / 'pki'}",
            f"--client-ca-file={pki.ca.cert}", f"--token-auth-file={tokens}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--authorization-mode=RBAC",
            # Logs and exec of a test node's pods: the kubelet is reached at its address,
            # as the admin.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={pki.admin.cert}",
            f"--kubelet-client-key={pki.admin.key}",
            "--allow-privileged=false",
            "--endpoint-reconciler-type=none", "--profiling=false",
        ], log=workdir / "kube-apiserver.log", env=_go_env()).start()
        plane.daemons.append(apiserver)
        apiserver.wait_answering(f"{api_url}/readyz",
                                 verify=ssl.create_default_context(cafile=pki.ca.cert),
                                 timeout=timeout)
        apiserver.wait_answering(f"{api_url}/api/v1/namespaces/default",
                                 verify=_as_admin(pki), timeout=timeout)
        if controller_manager:
            _start_controller_manager(plane, pki, timeout)
        install_crds(plane)
        plane.kubectl("apply", "-f", str(RBAC))
    except BaseException:
        plane.stop()
        raise
    plane.started_in = time.monotonic() - began
    return plane


def _start_controller_manager(plane: ControlPlane, pki: pki_module.Pki, timeout: float) -> None:
    manager = Daemon("kube-controller-manager", [
        str(plane.bindir / "kube-controller-manager"),
        f"--kubeconfig={plane.kubeconfig}", "--leader-elect=false", "--secure-port=0",
        "--controllers=namespace-controller,garbage-collector-controller,"
        "clusterrole-aggregation-controller,serviceaccount-controller,"
        "serviceaccount-token-controller,root-ca-certificate-publisher-controller",
        f"--service-account-private-key-file={pki.service_account_key}",
        f"--root-ca-file={pki.ca.cert}",
        "--use-service-account-credentials=false",
    ], log=plane.workdir / "kube-controller-manager.log", env=_go_env()).start()
    plane.daemons.append(manager)
    # its service-account controller at work
    manager.wait_answering(f"{plane.api_url}/api/v1/namespaces/default/serviceaccounts/default",
                           verify=_as_admin(pki), timeout=timeout)


def _as_admin(pki: pki_module.Pki) -> ssl.SSLContext:
    """TLS to the API server as the admin (its client certificate), for start-up polls over
    one connection: a `kubectl get` every 0.1 s costs 50 ms of CPU each time."""
    context = ssl.create_default_context(cafile=pki.ca.cert)
    context.load_cert_chain(pki.admin.cert, pki.admin.key)
    return context


def install_crds(plane: ControlPlane) -> None:
    """Apply the CRDs of `crds/` and wait until the API server serves them."""
    plane.kubectl("apply", "-f", str(CRDS))
    plane.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                  "-f", str(CRDS))


def create_tenant(plane: ControlPlane, namespace: str, group: str) -> None:
    """Create `namespace` and let members of `group` use Cerise there (role `cerise-user`)."""
    manifest = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "cerise-users", "namespace": namespace},
            "subjects": [{"kind": "Group", "name": group,
                          "apiGroup": "rbac.authorization.k8s.io"}],
            "roleRef": {"kind": "ClusterRole", "name": "cerise-user",
                        "apiGroup": "rbac.authorization.k8s.io"},
        },
    ]
    plane.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(manifest))


def bind_cluster_role(plane: ControlPlane, role: str, group: str) -> None:
    """Grant ClusterRole `role` to the members of `group`, cluster-wide."""
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"{role}-{group.replace(':', '-')}"},
        "subjects": [{"kind": "Group", "name": group, "apiGroup": "rbac.authorization.k8s.io"}],
        "roleRef": {"kind": "ClusterRole", "name": role, "apiGroup": "rbac.authorization.k8s.io"},
    }
    plane.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(binding))
