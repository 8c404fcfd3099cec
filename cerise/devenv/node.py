"""A real Kubernetes node on this machine, joined to the embedded control plane.

containerd (Debian's) with runc runs the pods; the CNI bridge plugin puts them on a bridge
of their own whose gateway address is the node's address (where the host's daemons, such
as the test sshd and the API server, are reached from pods); kube-proxy makes Services
work; kube-scheduler and a second kube-controller-manager (Deployments, ReplicaSets, Jobs,
EndpointSlices, volume binding, the node's not-ready taint) make workloads run; a
StorageClass of local volumes, the cluster's default, serves PersistentVolumeClaims. Images
are imported into containerd from archives (tools/build-image.sh), the sandbox image
included: no registry is involved.

A second node can join the first (`join`): its own containerd, kubelet, bridge and pod
subnet on the same host, for tests of what happens when one node is lost while the other
runs on. What is cluster-wide (DNS, kube-proxy, the workload controllers, the storage) is
the first node's.

The settings that this kind of host needs (cgroup v1, no CAP_SYS_RESOURCE, no systemd) are
explained where they are set. Everything runs as root under exclusive state directories
(cerise/devenv/statedir.py), so a crashed run's daemons are reaped by the next one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cerise.devenv import statedir
from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.process import Daemon, StartupError, free_port, wait_until
from cerise.devenv.system import require_programs


@dataclass(frozen=True)
class Place:
    """Where a node sits on this host: its name, its pods' bridge and subnet, and its address
    (the pods' gateway on the bridge, which the host answers on)."""

    name: str
    component: str
    """Its state directory's component name (cerise/devenv/statedir.py)."""
    bridge: str
    pod_cidr: str
    address: str


FIRST = Place("cerise-node", "node", "cerise0", "10.244.0.0/24", "10.244.0.1")
SECOND = Place("cerise-node-2", "node2", "cerise1", "10.244.1.0/24", "10.244.1.1")
PLACES = (FIRST, SECOND)
NAME = FIRST.name
ADDRESS = FIRST.address
"""The first node's address, where host daemons that pods use listen (the DNS server, the
test sshd); pods of the second node reach it through the host."""
CLUSTER_CIDR = "10.244.0.0/16"
STORAGE_CLASS = "cerise-local"
VOLUMES = 8
"""Local PersistentVolumes made at start (each claim binds one; a released one is not reused)."""
VOLUME_LABEL = "cerise.dev/test-node-volume"
CNI_BIN = Path("/usr/lib/cni")
"""Where Debian's containernetworking-plugins puts the plugins."""
SHIM = "containerd-shim-runc-v2"
WORKLOAD_DAEMONS = ("kube-controller-manager-workloads", "kube-scheduler")
"""What makes and places pods; stopped first, so that a drained node stays empty."""
API_SERVICE = "10.0.0.1"
"""Service `kubernetes`: the first address of the control plane's service range."""
DOMAIN = "cluster.local"


@dataclass
class Node:
    """A running node; `stop` removes its pods, then its daemons, mounts and network."""

    plane: ControlPlane
    place: Place
    state: statedir.StateDir
    socket: Path
    daemons: list[Daemon] = field(default_factory=list)
    started_in: float = 0.0

    @property
    def first(self) -> bool:
        """Whether this node runs the cluster-wide parts (DNS, kube-proxy, controllers)."""
        return self.place == FIRST

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run containerd's `ctr` against this node's containerd, in Kubernetes' namespace."""
        return subprocess.run(
            ["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args],
            capture_output=True, text=True, check=True, timeout=600,
        )

    def import_image(self, archive: Path) -> list[str]:
        """Load a docker-archive into containerd; returns the names it carries."""
        self.ctr("images", "import", str(archive))
        return archive_names(archive)

    def tag(self, source: str, target: str) -> None:
        """Give an imported image another name (a "new" image for a rollout)."""
        self.ctr("images", "tag", "--force", source, target)

    def signal(self, signum: int, *, pods: bool = False) -> None:
        """Send `signum` to the kubelet; with `pods`, to containerd and every process of the
        node's containers too. SIGSTOP with `pods` is a node that hangs or loses its network
        (nothing on it runs or answers); SIGSTOP alone is a kubelet stopped while its pods
        run on; SIGCONT brings either back."""
        pids = [d.pid for d in self.daemons if d.name == "kubelet"]
        if pods:
            pids += [d.pid for d in self.daemons if d.name == "containerd"]
            pids += [pid for shim in _shims(self.socket) for pid in [shim, *_descendants(shim)]]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def stop(self) -> None:
        """Stop making pods (the first node) or placing them here (a joined one), delete
        them and wait for the kubelet to stop them, then stop everything else."""
        if self.first:
            for daemon in (d for d in self.daemons if d.name in WORKLOAD_DAEMONS):
                daemon.stop()
        else:
            self.plane.kubectl("cordon", self.place.name, check=False)
        self.signal(signal.SIGCONT, pods=True)
        if any(d.name == "kubelet" and d.alive() for d in self.daemons):
            with contextlib.suppress(Exception):
                _drain(self.plane, self.place.name)
        for daemon in reversed(self.daemons):
            daemon.stop()
        if self.first:
            _remove_service_rules(self.plane)
        _kill_shims(self.socket)
        _remove_network(self.place)
        self.plane.kubectl("delete", "node", self.place.name, "--ignore-not-found",
                           check=False)
        if self.first:
            self.plane.kubectl("delete", "pv", "-l", VOLUME_LABEL, "--wait=false",
                               check=False)
        self.state.release()


def archive_names(archive: Path) -> list[str]:
    """The image names (RepoTags) in a docker-archive."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None, f"{archive} has no manifest.json"
        manifest = json.load(member)
    return [tag for entry in manifest for tag in entry.get("RepoTags") or []]


def start(plane: ControlPlane, *, pause: Path, images: Sequence[Path] = (),
          timeout: float = 120.0) -> Node:
    """Start the first node for `plane`, with `pause` as its sandbox image and `images`
    loaded."""
    began = time.monotonic()
    require_programs("containerd", "ctr", "runc", "iptables", "ip", "dnsmasq",
                     str(CNI_BIN / "bridge"))
    for binary in ("kubelet", "kube-proxy", "kube-scheduler"):
        if not (plane.bindir / binary).is_file():
            raise StartupError(f"{plane.bindir} lacks {binary}: run tools/build-binaries.sh")
    state = statedir.claim(FIRST.component, exclusive=True)
    # What a crashed run left beyond its daemons (no other node runs: the claim is exclusive,
    # and a joined node's is reaped here, as it cannot outlive the first).
    statedir.reap_stale(SECOND.component)
    _kill_shims(None)
    _remove_service_rules(plane)
    for place in PLACES:
        _remove_network(place)
    node = Node(plane=plane, place=FIRST, state=state, socket=state.path / "containerd.sock")
    try:
        _network(FIRST)
        _start_dns(node)
        _start_containerd(node, pause, images)
        _start_workload_controllers(node)
        _start_kubelet(node, timeout)
        _start_kube_proxy(node)
        _publish_api_server(plane)
        _storage(node)
    except BaseException:
        node.stop()
        raise
    node.started_in = time.monotonic() - began
    return node


def join(first: Node, *, pause: Path, images: Sequence[Path] = (),
         timeout: float = 120.0) -> Node:
    """Start a second node beside `first`, in the same cluster: its own containerd, kubelet,
    bridge and pod subnet; the first node's DNS, kube-proxy and controllers serve it."""
    began = time.monotonic()
    state = statedir.claim(SECOND.component, exclusive=True)
    _remove_network(SECOND)
    node = Node(plane=first.plane, place=SECOND, state=state,
                socket=state.path / "containerd.sock")
    try:
        _network(SECOND)
        _start_containerd(node, pause, images)
        _start_kubelet(node, timeout)
    except BaseException:
        node.stop()
        raise
    node.started_in = time.monotonic() - began
    return node


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=60)


# -- network ---------------------------------------------------------------------------

def _network(place: Place) -> None:
    """The pods' bridge with the node's address, made before any pod so that host daemons
    can listen on the address from the start; the bridge plugin adopts it. The host routes
    between the nodes' bridges."""
    _run("ip", "link", "add", place.bridge, "type", "bridge")
    _run("ip", "addr", "add", f"{place.address}/24", "dev", place.bridge)
    _run("ip", "link", "set", place.bridge, "up")
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")


def _remove_network(place: Place) -> None:
    if _run("ip", "link", "show", place.bridge, check=False).returncode == 0:
        _run("ip", "link", "delete", place.bridge)


def _cni_config(state: Path, place: Place) -> Path:
    directory = state / "cni"
    directory.mkdir()
    (directory / "10-cerise.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0",
        "name": "cerise",
        "plugins": [
            {"type": "bridge", "bridge": place.bridge, "isGateway": True, "ipMasq": True,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "subnet": place.pod_cidr,
                      "gateway": place.address,
                      "dataDir": str(state / "ipam"), "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }, indent=2))
    return directory


def _start_dns(node: Node) -> None:
    """dnsmasq on the node's address: the cluster domain's one name that in-cluster clients
    look up (the API server's Service, which kopf's in-cluster login names); every other
    name in it is unknown, and nothing is forwarded anywhere."""
    dns = node.state.start(Daemon("dnsmasq", [
        "dnsmasq", "--keep-in-foreground", "--log-facility=-", "--no-resolv", "--no-hosts",
        "--conf-file=/dev/null", f"--listen-address={ADDRESS}", "--bind-interfaces",
        f"--pid-file={node.state.path / 'dnsmasq.pid'}", f"--local=/{DOMAIN}/",
        f"--host-record=kubernetes.default.svc.{DOMAIN},{API_SERVICE}",
    ], log=node.state.path / "dnsmasq.log"))
    node.daemons.append(dns)


# -- containerd --------------------------------------------------------------------------

def _start_containerd(node: Node, pause: Path, images: Sequence[Path]) -> None:
    """containerd with `pause` as its sandbox image and `images` imported."""
    state = node.state.path
    pause_name = archive_names(pause)[0]
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    config = state / "containerd.toml"
    config.write_text(f"""\
version = 2
root = "{state / 'containerd'}"
state = "{state / 'containerd-state'}"
[grpc]
  address = "{node.socket}"
[{cri}]
  # The locally built pause image; no registry is reachable.
  sandbox_image = "{pause_name}"
  # Without CAP_SYS_RESOURCE runc cannot lower a sandbox's OOM score; without this every
  # sandbox fails with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  enable_selinux = false
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [{cri}.cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{_cni_config(state, node.place)}"
""")
    daemon = node.state.start(Daemon(
        "containerd", ["containerd", "--config", str(config)], log=state / "containerd.log"))
    node.daemons.append(daemon)
    daemon.wait_ready(lambda: _run("ctr", "--address", str(node.socket), "version",
                                   check=False).returncode == 0)
    for archive in (pause, *images):
        node.import_image(archive)


def _kill_shims(socket: Path | None) -> None:
    """Kill the runc shims of this node's containerd (of any node's when `socket` is None,
    for what a crashed run left) and every process of their containers: a stopped kubelet
    or containerd leaves them running."""
    for shim in _shims(socket):
        for pid in [*_descendants(shim), shim]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _shims(socket: Path | None) -> list[int]:
    """The runc shims of the containerd at `socket` (of every node's when None)."""
    marker = str(socket) if socket is not None else f"{statedir.DEFAULT_BASE}/node"
    return [pid for pid in _pids() if (cmdline := _cmdline(pid))
            and Path(cmdline[0]).name == SHIM and marker in " ".join(cmdline)]


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for each in _pids():
        try:
            stat = Path(f"/proc/{each}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(each)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


# -- the Kubernetes parts ------------------------------------------------------------------

def _start_workload_controllers(node: Node) -> None:
    """kube-scheduler, and the controllers that turn workloads into pods (the control
    plane's own kube-controller-manager runs only those that need no node)."""
    plane, state = node.plane, node.state.path
    manager = node.state.start(Daemon(WORKLOAD_DAEMONS[0], [
        str(plane.bindir / "kube-controller-manager"),
        f"--kubeconfig={plane.kubeconfig}", "--leader-elect=false", "--secure-port=0",
        "--controllers=deployment-controller,replicaset-controller,job-controller,"
        "endpointslice-controller,endpoints-controller,persistentvolume-binder-controller,"
        "persistentvolumeclaim-protection-controller,persistentvolume-protection-controller,"
        "pod-garbage-collector-controller,node-lifecycle-controller",
        "--use-service-account-credentials=false",
    ], log=state / "kube-controller-manager.log"))
    node.daemons.append(manager)
    scheduler = node.state.start(Daemon("kube-scheduler", [
        str(plane.bindir / "kube-scheduler"), f"--kubeconfig={plane.kubeconfig}",
        "--leader-elect=false", "--secure-port=0",
    ], log=state / "kube-scheduler.log"))
    node.daemons.append(scheduler)


def _start_kubelet(node: Node, timeout: float) -> None:
    plane, state = node.plane, node.state.path
    pki = plane.workdir / "pki"
    resolv = state / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions ndots:1\n")
    config = state / "kubelet.yaml"
    config.write_text(yaml.safe_dump({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # No systemd here, and the host has cgroup v1, which v1.35 refuses unless told.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        # Keep the kubelet out of the host's cgroup tree (no QoS hierarchy to make).
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "containerRuntimeEndpoint": f"unix://{node.socket}",
        "address": node.place.address,
        "port": free_port(),
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": (healthz := free_port()),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(plane.ca_cert)}},
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(pki / "apiserver.crt"),
        "tlsPrivateKeyFile": str(pki / "apiserver.key"),
        "resolvConf": str(resolv),
        # The first node's DNS server, for every node's pods.
        "clusterDNS": [ADDRESS],
        # Each node's own: a kubelet removes the log directories of pods it does not run.
        "podLogsDir": str(state / "pod-logs"),
        "clusterDomain": DOMAIN,
        "failSwapOn": False,
        "serializeImagePulls": False,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "maxPods": 50,
    }))
    kubelet = node.state.start(Daemon("kubelet", [
        str(plane.bindir / "kubelet"), f"--config={config}",
        f"--kubeconfig={plane.kubeconfig}", f"--root-dir={state / 'kubelet'}",
        f"--hostname-override={node.place.name}", f"--node-ip={node.place.address}",
        "--v=1",
    ], log=state / "kubelet.log"))
    node.daemons.append(kubelet)
    kubelet.wait_answering(f"http://127.0.0.1:{healthz}/healthz",
                           lambda answer: answer.text == "ok", timeout=timeout)
    # each poll is a kubectl run (50 ms of CPU): twice a second, not ten times
    wait_until(lambda: _node_ready(plane, node.place.name), timeout=timeout,
               what=f"node {node.place.name} Ready", log=kubelet.log, alive=kubelet.alive,
               interval=0.5)


def _node_ready(plane: ControlPlane, name: str) -> bool:
    """Ready, and without taints: the node lifecycle controller removes the not-ready one
    a few seconds after the kubelet reports Ready; until then pods are placed elsewhere."""
    out = plane.kubectl("get", "node", name, "-o", "jsonpath={.status.conditions"
                        "[?(@.type=='Ready')].status} {.spec.taints}", check=False)
    return out.stdout.strip() == "True"


def _start_kube_proxy(node: Node) -> None:
    plane, state = node.plane, node.state.path
    healthz = free_port()
    config = state / "kube-proxy.yaml"
    config.write_text(yaml.safe_dump({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(plane.kubeconfig)},
        "hostnameOverride": NAME,
        "mode": "iptables",
        # One kube-proxy: the host's iptables rules serve every node's pods.
        "clusterCIDR": CLUSTER_CIDR,
        "healthzBindAddress": f"127.0.0.1:{healthz}",
        "metricsBindAddress": f"127.0.0.1:{free_port()}",
        # Leave the host's conntrack table size alone (setting it needs a writable /proc/sys).
        "conntrack": {"maxPerCore": 0},
        # No NodePorts on 127.0.0.1: they need the host-wide route_localnet sysctl, which
        # would outlive the node.
        "iptables": {"localhostNodePorts": False},
    }))
    proxy = node.state.start(Daemon("kube-proxy", [
        str(plane.bindir / "kube-proxy"), f"--config={config}",
    ], log=state / "kube-proxy.log"))
    node.daemons.append(proxy)
    proxy.wait_answering(f"http://127.0.0.1:{healthz}/healthz")


def _remove_service_rules(plane: ControlPlane) -> None:
    """Remove the iptables chains kube-proxy and the kubelet leave when they stop (all
    named KUBE-*), and the rules that jump to them."""
    _run(str(plane.bindir / "kube-proxy"), "--cleanup", check=False)
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            rules = _run(f"{tool}-save", "-t", table, check=False).stdout.splitlines()
            chains = [line[1:].split()[0] for line in rules if line.startswith(":KUBE-")]
            for rule in rules:
                words = shlex.split(rule)
                if words[:1] == ["-A"] and not words[1].startswith("KUBE-") and any(
                        chain in words for chain in chains):
                    _run(tool, "-t", table, "-D", *words[1:], check=False)
            for flag in ("-F", "-X"):
                for chain in chains:
                    _run(tool, "-t", table, flag, chain, check=False)


def _publish_api_server(plane: ControlPlane) -> None:
    """The endpoints of Service `kubernetes` (the API server keeps none: its endpoint
    reconciler is off): the node's address and the API server's port, which is how pods
    reach it (KUBERNETES_SERVICE_HOST)."""
    port = int(plane.api_url.rsplit(":", 1)[1])
    plane.kubectl("apply", "-f", "-", stdin=yaml.safe_dump({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes",
                                "endpointslice.kubernetes.io/managed-by": "cerise-devenv"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ADDRESS], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    }))


def _storage(node: Node) -> None:
    """A default StorageClass of local volumes on this node, and a pool of volumes."""
    volumes = node.state.path / "volumes"
    objects: list[dict[str, object]] = [{
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": STORAGE_CLASS, "annotations": {
            "storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "kubernetes.io/no-provisioner",
        "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Retain",
    }]
    for index in range(VOLUMES):
        path = volumes / f"v{index}"
        path.mkdir(parents=True)
        objects.append({
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"{NAME}-v{index}", "labels": {VOLUME_LABEL: "true"}},
            "spec": {
                "capacity": {"storage": "10Gi"},
                # One host: every pod that mounts it, on either node, shares the one
                # directory, as ReadWriteMany promises.
                "accessModes": ["ReadWriteOnce", "ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": STORAGE_CLASS,
                "local": {"path": str(path)},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{
                    "key": "kubernetes.io/hostname", "operator": "In",
                    "values": [place.name for place in PLACES]}]}]}},
            },
        })
    node.plane.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objects))


def _drain(plane: ControlPlane, name: str) -> None:
    """Delete every pod of node `name` and wait until its kubelet has stopped them all."""
    selector = f"spec.nodeName={name}"
    plane.kubectl("delete", "pods", "-A", "--field-selector", selector, "--wait=false",
                  check=False)
    wait_until(lambda: not plane.kubectl("get", "pods", "-A", "--field-selector", selector,
                                         "-o", "name").stdout.strip(),
               timeout=90, what="the node's pods to stop", interval=0.5)

