"""Containers for the lab: images built from Debian's packages and pods run from the Helm chart.

No container registry is reachable from the project's machines, so the base images are made
locally: ``mmdebstrap`` writes a minimal Debian with the packages asked for, ``podman import``
turns it into an image. Each is tagged with a digest of its recipe, so it is built once per
machine and rebuilt only when the recipe changes. The project's image is built from the
repository's Dockerfile on top of that base (``--build-arg BASE_IMAGE``), with the host's CA
bundle for pip (downloads are TLS-intercepted here).

Podman runs with ``runc`` and explicit ulimits (the default ``crun`` fails on cgroups hybrid mode,
and ``runc`` fails to set RLIMIT_NOFILE unless given one), from a private ``containers.conf``.

``Pod`` runs a Kubernetes pod spec, as the chart renders it, with ``podman run``: every field the
chart can render is translated (user and groups, read-only root, capabilities, no-new-privileges,
volumes with ``subPath`` and ``readOnly``, ConfigMaps and Secrets as files, env), and a field it
does not know stops it, so the lab never silently runs something other than the chart says.
``podman kube play`` (4.3) is no substitute: it ignores ``subPath`` and turns ``emptyDir`` into
named volumes shared between pods. The pod uses the host's network namespace, so that everything
it talks to (the provider simulator, the test scraping it) is on loopback.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("podman", "buildah", "runc", "mmdebstrap")
SUITE = "bookworm"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
#: What the project's image needs of its base: python3 with venv, useradd/groupadd (passwd).
BASE_PACKAGES = ("passwd", "python3", "python3-venv", "ca-certificates")
#: Left out of the images: documentation nobody reads in a container.
EXCLUDES = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*", "/usr/share/info/*")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
runtime = "runc"
"""


def available() -> str | None:
    """Why containers cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "the container lab needs root (rootful podman)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"Debian packages {' '.join(missing)} are not installed (run make setup as root)"
    return None


class Podman:
    """The ``podman`` command with the lab's ``containers.conf``."""

    def __init__(self, conf_dir: Path) -> None:
        conf_dir.mkdir(parents=True, exist_ok=True)
        conf = conf_dir / "containers.conf"
        conf.write_text(CONTAINERS_CONF)
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}

    def __call__(self, *args: str, check: bool = True, timeout: float = 600,
                 stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``podman args``; a failure raises with podman's own message."""
        done = subprocess.run(["podman", *args], capture_output=True, text=True, env=self.env, input=stdin,
                              timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)[:300]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done

    def inspect(self, kind: str, name: str) -> dict[str, Any]:
        """``podman KIND inspect NAME`` as a dictionary."""
        return json.loads(self(kind, "inspect", name).stdout)[0]

    def exists(self, image: str) -> bool:
        """Whether the local store has ``image``."""
        return self("image", "exists", image, check=False).returncode == 0


def debian_image(podman: Podman, name: str, packages: tuple[str, ...]) -> str:
    """``localhost/mtaq-lab-NAME:DIGEST``, a minimal Debian with ``packages``, built unless the
    machine has it already (the tag is a digest of the recipe)."""
    recipe = json.dumps([SUITE, MIRRORS, sorted(packages), EXCLUDES, PATH])
    image = f"localhost/mtaq-lab-{name}:{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
    if podman.exists(image):
        return image
    with tempfile.TemporaryDirectory(prefix="mtaq-mmdebstrap-") as scratch:
        tarball = Path(scratch) / "rootfs.tar"
        done = subprocess.run(["mmdebstrap", "--variant=essential", f"--include={','.join(packages)}",
                               *(f"--dpkgopt=path-exclude={path}" for path in EXCLUDES),
                               "--format=tar", SUITE, str(tarball), *MIRRORS],
                              capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"mmdebstrap of {image} failed:\n{done.stderr[-3000:]}")
        # An imported tarball has no configuration: give it the PATH a Debian shell would have.
        podman("import", "--change", f"ENV=PATH={PATH}", str(tarball), image)
    return image


@dataclass(frozen=True)
class Build:
    """The project's image as built: its reference, how long the build took and its size."""

    image: str
    seconds: float
    size_bytes: int


def build_project_image(podman: Podman, base: str, image: str, *, version: str, revision: str) -> Build:
    """Build the repository's Dockerfile on ``base`` as ``image`` (Docker format: OCI images have
    no HEALTHCHECK); the image it replaces and the untagged build stage are removed, so that
    builds do not pile up on a machine that keeps its images (a rebuild takes seconds)."""
    previous = podman.inspect("image", image)["Id"] if podman.exists(image) else None
    started = time.monotonic()
    podman("build", "--format", "docker", "--network", "host",
           "--volume", f"{HOST_CA}:/etc/ssl/certs/host-ca.crt:ro", "--build-arg", "PIP_CERT=/etc/ssl/certs/host-ca.crt",
           "--build-arg", f"BASE_IMAGE={base}", "--build-arg", f"VERSION={version}",
           "--build-arg", f"REVISION={revision}", "--tag", image, str(ROOT), timeout=900)
    seconds = time.monotonic() - started
    built = podman.inspect("image", image)
    if previous and previous != built["Id"]:
        podman("rmi", previous, check=False)  # still in use by a container: left alone
    podman("image", "prune", "--force", check=False)
    return Build(image, seconds, int(built["Size"]))


# ---------------------------------------------------------------------------------------------
# A Kubernetes pod spec run with podman
# ---------------------------------------------------------------------------------------------

#: Container fields the translation handles; probes, ports and resources mean nothing to a
#: podman pod on the host network (the tests check probes on the rendered chart, and the image's
#: HEALTHCHECK with podman).
CONTAINER_FIELDS = {"name", "image", "imagePullPolicy", "command", "args", "env", "ports", "livenessProbe",
                    "readinessProbe", "resources", "securityContext", "volumeMounts"}
SECURITY_FIELDS = {"runAsUser", "runAsGroup", "runAsNonRoot", "readOnlyRootFilesystem", "allowPrivilegeEscalation",
                   "capabilities", "seccompProfile"}
POD_FIELDS = {"containers", "volumes", "securityContext", "automountServiceAccountToken", "imagePullSecrets",
              "shareProcessNamespace", "nodeSelector", "tolerations", "affinity"}
POD_SECURITY_FIELDS = {"supplementalGroups", "runAsNonRoot", "seccompProfile"}


def _only(fields: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"the container lab cannot run {where} field(s) {', '.join(unknown)}")


class Pod:
    """A pod spec (``spec.template.spec`` of a rendered Deployment) run as a podman pod named
    ``name``; ``objects`` are the rendered ConfigMaps and Secrets its volumes refer to, by name.
    Volumes live under ``workdir``: an ``emptyDir`` is a directory there, as the kubelet makes it."""

    def __init__(self, podman: Podman, name: str, spec: dict[str, Any], objects: dict[str, dict[str, Any]],
                 workdir: Path) -> None:
        _only(spec, POD_FIELDS, "pod")
        _only(spec.get("securityContext", {}), POD_SECURITY_FIELDS, "pod securityContext")
        self.podman = podman
        self.name = name
        self.spec = spec
        self.objects = objects
        self.workdir = workdir
        self.volumes: dict[str, Path] = {}

    def container_name(self, container: str) -> str:
        """The podman name of the pod's container ``container``."""
        return f"{self.name}-{container}"

    def _volume(self, volume: dict[str, Any]) -> Path:
        path = self.workdir / "volumes" / volume["name"]
        path.mkdir(parents=True)
        if "emptyDir" in volume:
            path.chmod(0o777)  # what the kubelet gives an emptyDir
        elif "configMap" in volume or "secret" in volume:
            source = volume.get("configMap") or volume["secret"]
            obj = self.objects[source.get("name") or source["secretName"]]
            for key, value in (obj.get("data") or {}).items():
                data = base64.b64decode(value) if obj["kind"] == "Secret" else value.encode()
                (path / key).write_bytes(data)
                (path / key).chmod(0o644)  # defaultMode
        else:
            raise ValueError(f"the container lab cannot run volume {volume['name']}: {sorted(volume)}")
        return path

    def run_arguments(self, container: dict[str, Any]) -> list[str]:
        """``podman run`` arguments for one container of the pod (without the image's command)."""
        _only(container, CONTAINER_FIELDS, f"container {container['name']}")
        pod_security = self.spec.get("securityContext", {})
        security = {**{k: v for k, v in pod_security.items() if k in SECURITY_FIELDS},
                    **container.get("securityContext", {})}
        _only(security, SECURITY_FIELDS, f"container {container['name']} securityContext")
        args = ["--detach", "--pod", self.name, "--name", self.container_name(container["name"]),
                "--restart", "always", "--pull", "never"]
        if "runAsUser" in security:
            args += ["--user", f"{security['runAsUser']}:{security.get('runAsGroup', security['runAsUser'])}"]
        if security.get("runAsNonRoot") and security.get("runAsUser", 0) == 0:
            raise ValueError(f"container {container['name']}: runAsNonRoot without a non-root runAsUser")
        for gid in pod_security.get("supplementalGroups", []):
            args += ["--group-add", str(gid)]
        if security.get("readOnlyRootFilesystem"):
            args += ["--read-only", "--read-only-tmpfs=false"]  # Kubernetes adds no tmpfs either
        if security.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        for cap in security.get("capabilities", {}).get("drop", []):
            args += ["--cap-drop", cap]
        for cap in security.get("capabilities", {}).get("add", []):
            args += ["--cap-add", cap]
        for variable in container.get("env", []):
            if "value" not in variable:
                raise ValueError(f"container {container['name']}: env {variable['name']} needs a literal value")
            args += ["--env", f"{variable['name']}={variable['value']}"]
        for mount in container.get("volumeMounts", []):
            source = self.volumes[mount["name"]]
            if mount.get("subPath"):
                source = source / mount["subPath"]
                source.mkdir(exist_ok=True)  # the kubelet creates a missing subPath
            options = ",ro=true" if mount.get("readOnly") else ""
            args += ["--mount", f"type=bind,source={source},destination={mount['mountPath']}{options}"]
        if container.get("command"):
            args += ["--entrypoint", json.dumps(container["command"])]
        return [*args, container["image"], *container.get("args", [])]

    def start(self) -> Pod:
        """Create the pod, its volumes, and start its containers in order."""
        share = ["--share", "ipc,uts,pid"] if self.spec.get("shareProcessNamespace") else []
        self.podman("pod", "create", "--name", self.name, "--network", "host", *share)
        for volume in self.spec.get("volumes", []):
            self.volumes[volume["name"]] = self._volume(volume)
        for container in self.spec["containers"]:
            self.podman("run", *self.run_arguments(container))
        return self

    def exec(self, container: str, *command: str, stdin: str | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``command`` in the pod's container ``container``."""
        return self.podman("exec", *(["--interactive"] if stdin is not None else []),
                           self.container_name(container), *command, stdin=stdin, check=check)

    def inspect(self, container: str) -> dict[str, Any]:
        """``podman inspect`` of the pod's container ``container``."""
        return self.podman.inspect("container", self.container_name(container))

    def logs(self, container: str) -> str:
        """What the container wrote to its standard output and error."""
        done = self.podman("logs", self.container_name(container), check=False)
        return done.stdout + done.stderr

    def remove(self) -> None:
        """Stop and remove the pod and its containers (quietly if it is gone)."""
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.podman("pod", "rm", "--force", "--time", "5", self.name, check=False, timeout=120)
