"""The bundled sandbox images: where they come from, when they are (re)built, how refs resolve.

Bundled images are the folders under ``<repo>/images``, shipped in the wheel as
``pygent/_images`` (``PYGENT_IMAGES_DIR`` overrides both; see images_dir()):
``minimal`` (static busybox + bash, FROM scratch) and ``python`` (a
debootstrapped Debian with python3 and git). No registry is ever used: the
minimal image is made of two host files, the python image of a Debian base built
with ``images/python/build-base.sh`` (debootstrap from the machine's apt mirror).

Each build is tagged ``pygent/NAME:<context hash>`` and ``pygent/NAME:latest``;
the hash covers pygent's version and the folder's files (plus the server and
protocol for tooling), so an image is rebuilt only when what it is made of
changed. ``pygent-runner images prune`` (sandbox/image_prune.py) removes the
builds a change left behind.

``resolve_image`` sits on the sandbox-creation hot path: after the first call
for a ref it is a dict lookup, with no engine call.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ..errors import ConfigError, EngineUnavailable, ImageBuildError, ImageNotFound
from .engine import cli_env, engine_host, get_client, is_engine_error

if TYPE_CHECKING:  # docker is imported lazily
    import docker

#: Repository part of every bundled image tag: pygent/python, pygent/minimal.
REPO = "pygent"
#: Repository of the debootstrapped Debian bases (tagged by a hash of build-base.sh).
BASE_REPO = "pygent/debian-base"

LABEL_IMAGE = "io.pygent.image"
LABEL_CONTEXT = "io.pygent.context"
LABEL_BASE = "io.pygent.base-image"

#: The in-container command server, copied into images whose name is listed here.
SERVER_PY = Path(__file__).resolve().with_name("server.py")
PROTOCOL_PY = SERVER_PY.with_name("protocol.py")
_REPO_EXTRAS: dict[str, dict[str, Path]] = {"tooling": {"server.py": SERVER_PY, "protocol.py": PROTOCOL_PY}}
#: The bundled context that is not a sandbox image but what every sandbox mounts (docker/tooling.py).
TOOLING = "tooling"


class _HostFile:
    """A host binary copied into a build context (its Debian package is named when it is missing)."""

    def __init__(self, dest: str, source: str, package: str) -> None:
        self.dest, self.source, self.package = dest, source, package


_HOST_FILES: dict[str, list[_HostFile]] = {
    "minimal": [
        _HostFile("busybox", "/bin/busybox", "busybox-static"),
        _HostFile("bash", "/bin/bash-static", "bash-static"),
    ],
    "tooling": [_HostFile("bash", "/bin/bash-static", "bash-static")],
}

#: Lines of build output kept for the error message.
_TAIL = 20

_lock = threading.Lock()
_name_locks: dict[str, threading.Lock] = {}
#: (PYGENT_IMAGES_DIR, DOCKER_HOST, ref) -> resolved tag; filled once per ref.
_resolved: dict[tuple[str | None, str | None, str], str] = {}


# --------------------------------------------------------------------------- layout


#: Where the wheel puts the repository's images/ folder (pyproject.toml: force-include).
PACKAGED_IMAGES = Path(__file__).resolve().parents[1] / "_images"
#: The repository's images/ folder, seen from runner/pygent/sandbox/ in a checkout.
CHECKOUT_IMAGES = Path(__file__).resolve().parents[3] / "images"


def images_dir() -> Path:
    """The folder holding one sub-folder per bundled image.

    Why three places: ``PYGENT_IMAGES_DIR`` overrides; an installed wheel carries
    its own copy (``pygent/_images``); an editable install or a source checkout
    uses the repository's ``images/``. The checkout's folder is used only when it
    sits next to a pyproject.toml, so an unrelated ``images/`` folder three levels
    above an installed package is never mistaken for ours. Raises nothing: a
    missing folder shows up as "no bundled images" where one is looked up.
    """
    env = os.environ.get("PYGENT_IMAGES_DIR")
    if env:
        return Path(env).expanduser().resolve()
    if PACKAGED_IMAGES.is_dir():
        return PACKAGED_IMAGES
    if CHECKOUT_IMAGES.is_dir() and (CHECKOUT_IMAGES.parent / "pyproject.toml").is_file():
        return CHECKOUT_IMAGES
    return PACKAGED_IMAGES


def bundled_names() -> list[str]:
    """Names of the bundled images (folders with a Dockerfile), python first."""
    root = images_dir()
    if not root.is_dir():
        return []
    names = [p.name for p in root.iterdir() if (p / "Dockerfile").is_file()]
    return sorted(names, key=lambda n: (n != "python", n))


def _image_dir(name: str) -> Path:
    path = images_dir() / name
    if not (path / "Dockerfile").is_file():
        raise ImageNotFound(
            f"no bundled image named {name!r} (bundled: {', '.join(bundled_names()) or 'none'};"
            f" looked in {images_dir()})"
        )
    return path


def accepts_base(name: str) -> bool:
    """True when the image's Dockerfile takes ``ARG BASE`` (so --base applies)."""
    text = (_image_dir(name) / "Dockerfile").read_text(errors="replace")
    return any(line.split()[:2] == ["ARG", "BASE"] or line.strip().startswith("ARG BASE=")
               for line in text.splitlines() if line.strip())


def _context_files(name: str) -> list[tuple[str, Path]]:
    """(relative path, source) of every file that goes into NAME's build context."""
    root = _image_dir(name)
    files: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", ".git"))
        for fn in filenames:
            if fn.endswith((".pyc", "~", ".swp")):
                continue
            path = Path(dirpath) / fn
            files[path.relative_to(root).as_posix()] = path
    files.update(_REPO_EXTRAS.get(name, {}))
    return sorted(files.items())


def context_paths(name: str) -> list[Path]:
    """The files NAME's build context is made of (editing one changes NAME's tag)."""
    return [path for _, path in _context_files(name)]


def context_hash(name: str) -> str:
    """First 12 hex chars of a sha256 over pygent's version and NAME's context (paths, modes, bytes).

    The version is in so that an upgrade of the package gets its own builds even
    where a context file happens to be unchanged (what the image must hold may
    have changed with the code around it).
    """
    from ..version import package_version

    h = hashlib.sha256()
    h.update(f"pygent-runner {package_version()}\0".encode())
    for rel, path in _context_files(name):
        data = path.read_bytes()
        h.update(rel.encode() + b"\0")
        h.update(b"x" if path.stat().st_mode & 0o111 else b"-")
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()[:12]


def image_tag(name: str) -> str:
    """The tag NAME's current context builds to: ``pygent/NAME:<hash>``."""
    return f"{REPO}/{name}:{context_hash(name)}"


def base_tag(name: str = "python") -> str:
    """The tag of the debootstrapped base NAME builds on (keyed by its build-base.sh)."""
    script = _image_dir(name) / "build-base.sh"
    return f"{BASE_REPO}:{hashlib.sha256(script.read_bytes()).hexdigest()[:12]}"


# --------------------------------------------------------------------------- engine helpers


@contextmanager
def _engine_errors() -> Iterator[None]:
    """Turn connection failures into EngineUnavailable; let everything else through."""
    try:
        yield
    except EngineUnavailable:
        raise
    except Exception as exc:
        if is_engine_error(exc) or _is_docker_connection_error(exc):
            raise EngineUnavailable(_short(exc)) from None
        raise


def _is_docker_connection_error(exc: BaseException) -> bool:
    from docker.errors import APIError, DockerException

    return isinstance(exc, DockerException) and not isinstance(exc, APIError)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]


def _inspect(client: "docker.DockerClient", ref: str) -> dict[str, Any] | None:
    """The engine's inspect record for ref, or None when it has no such image."""
    from docker.errors import APIError, NotFound

    with _engine_errors():
        try:
            return client.api.inspect_image(ref)
        except NotFound:
            return None
        except APIError as exc:
            if exc.status_code in (400, 404):  # e.g. an invalid reference format
                return None
            raise


def _labels(info: dict[str, Any] | None) -> dict[str, str]:
    if not info:
        return {}
    return dict((info.get("Config") or {}).get("Labels") or {})


def _name_lock(name: str) -> threading.Lock:
    with _lock:
        return _name_locks.setdefault(name, threading.Lock())


@contextmanager
def process_lock(key: str) -> Iterator[None]:
    """Serialise builds of one tag across processes (e.g. parallel test workers)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"pygent-build-{digest}.lock"
    try:
        handle = open(path, "a")
    except OSError:  # e.g. created by another user: build without the lock
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def clear_cache() -> None:
    """Forget resolved refs (after images were removed or rebuilt)."""
    with _lock:
        _resolved.clear()


# --------------------------------------------------------------------------- progress


class _Progress:
    """Build output on stderr: a live spinner on a terminal, compact lines otherwise.

    ``step`` lines (Dockerfile steps, phases) are always shown; ``detail`` lines
    (RUN output, debootstrap chatter) only move the spinner. Everything goes into
    a tail kept for the error message.
    """

    def __init__(self, title: str, quiet: bool = False) -> None:
        from rich.console import Console

        self.title = title
        self.console = Console(stderr=True, highlight=False)
        self.live = not quiet and self.console.is_terminal
        self.tail: deque[str] = deque(maxlen=_TAIL)
        self.current = ""
        self._status: Any = None
        self._started = time.monotonic()

    def __enter__(self) -> "_Progress":
        if self.live:
            from rich.text import Text

            self._status = self.console.status(Text(self.title), spinner="dots")
            self._status.start()
        else:
            self._emit(f"{self.title} ...")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def _emit(self, line: str) -> None:
        if self.live:
            from rich.text import Text

            self.console.print(Text(line, style="dim"), soft_wrap=True)
        else:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    def _update(self, detail: str = "") -> None:
        if self._status is None:
            return
        from rich.text import Text

        width = max(self.console.width - 4, 20)
        text = Text(self.title, style="bold")
        if self.current:
            text.append("  " + self.current[: max(width - len(self.title) - 2, 10)])
        if detail:
            text.append("\n  " + detail[: width - 2], style="dim")
        self._status.update(text)

    def step(self, line: str) -> None:
        line = line.rstrip()
        if not line:
            return
        self.tail.append(line)
        self.current = line
        self._emit(f"  {line[:160]}")
        self._update()

    def detail(self, line: str) -> None:
        line = line.rstrip()
        if not line:
            return
        self.tail.append(line)
        self._update(line)

    def done(self, message: str) -> None:
        elapsed = time.monotonic() - self._started
        self.__exit__()
        line = f"{message} ({elapsed:.1f}s)"
        if self.live:
            from rich.text import Text

            self.console.print(Text.assemble(("✓ ", "green"), line))
        else:
            self._emit(line)


class _Condenser:
    """Collapse runs of similar lines ("I: Retrieving x", "I: Retrieving y", ...) into one."""

    def __init__(self, progress: _Progress) -> None:
        self.progress = progress
        self.key: str | None = None
        self.first = ""
        self.count = 0

    #: debootstrap alternates "Retrieving x" / "Validating x": one run, not two.
    _ALIASES = {"Validating": "Retrieving", "Extracting": "Extracting"}

    @classmethod
    def _key(cls, line: str) -> str | None:
        """Lines with the same key collapse; None means always show the line."""
        words = line.split()
        if not words or words[0] in ("W:", "E:") or words[0].startswith("build-base:"):
            return None
        if words[0] == "I:" and len(words) >= 2:
            return "I:" + cls._ALIASES.get(words[1], words[1])
        return re.sub(r"[0-9%.]+", "#", " ".join(words[:2]))

    def feed(self, line: str) -> None:
        line = line.rstrip()
        if not line:
            return
        key = self._key(line)
        if key is not None and key == self.key:
            self.count += 1
            self.progress.detail(line)
            return
        self.flush()
        if key is None:
            self.progress.step(line)
        else:
            self.key, self.first, self.count = key, line, 1
            self.progress.detail(line)

    def flush(self) -> None:
        if self.key is not None:
            more = f" (+{self.count - 1} more)" if self.count > 1 else ""
            self.progress.step(self.first + more)
        self.key, self.first, self.count = None, "", 0


def _run_streamed(cmd: list[str], progress: _Progress, *, condense: bool = False) -> int:
    """Run cmd, feeding its combined output line by line into progress; return its status."""
    try:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, errors="replace", bufsize=1, env={**cli_env(), "DEBIAN_FRONTEND": "noninteractive"},
        )
    except OSError as exc:
        progress.step(f"{cmd[0]}: {exc}")
        return 127
    sink = _Condenser(progress) if condense else None
    assert proc.stdout is not None
    for line in proc.stdout:
        if sink is not None:
            sink.feed(line)
        else:
            progress.detail(line)
    if sink is not None:
        sink.flush()
    return proc.wait()


def _failure(what: str, error: str, progress: _Progress) -> ImageBuildError:
    tail = "\n".join(f"  | {line}" for line in progress.tail)
    return ImageBuildError(f"{what} failed: {error.strip()}\n--- last {len(progress.tail)} lines of the build log ---\n{tail}")


# --------------------------------------------------------------------------- host files (minimal)


def _is_static_elf(path: str) -> bool:
    """True for an ELF executable with no program interpreter (statically linked)."""
    try:
        with open(path, "rb") as f:
            hdr = f.read(64)
            if len(hdr) < 52 or hdr[:4] != b"\x7fELF":
                return False
            e = "<" if hdr[5] == 1 else ">"
            if hdr[4] == 2:  # 64-bit
                (phoff,) = struct.unpack_from(e + "Q", hdr, 0x20)
                phentsize, phnum = struct.unpack_from(e + "HH", hdr, 0x36)
            else:
                (phoff,) = struct.unpack_from(e + "I", hdr, 0x1C)
                phentsize, phnum = struct.unpack_from(e + "HH", hdr, 0x2A)
            f.seek(phoff)
            for _ in range(phnum):
                entry = f.read(phentsize)
                if len(entry) < 4:
                    return False
                if struct.unpack_from(e + "I", entry, 0)[0] == 3:  # PT_INTERP
                    return False
            return True
    except OSError:
        return False


def _host_files(name: str, progress: _Progress) -> list[_HostFile]:
    """The host files NAME needs; raises ImageBuildError (with the install command) when one is missing."""
    from . import host_packages

    wanted = _HOST_FILES.get(name, [])

    def ok(hf: _HostFile) -> bool:
        return os.path.isfile(hf.source) and _is_static_elf(hf.source)

    missing = [hf for hf in wanted if not ok(hf)]
    if missing:
        raise host_packages.missing([hf.package for hf in missing],
                                    f"building {name} (static {', '.join(hf.source for hf in missing)})")
    return wanted


# --------------------------------------------------------------------------- building


def _ensure_base(name: str, *, quiet: bool) -> str:
    """Build NAME's debootstrap base (once per build-base.sh version); return its tag."""
    tag = base_tag(name)
    client = get_client()
    if _inspect(client, tag) is not None:
        return tag
    script = _image_dir(name) / "build-base.sh"
    from .host_packages import require_debootstrap

    require_debootstrap(f"building the Debian base of {name} ({tag})")
    with _name_lock(tag), process_lock(f"base:{name}"):
        if _inspect(client, tag) is not None:
            return tag
        with _Progress(f"building base {tag} (debootstrap)", quiet) as progress:
            status = _run_streamed(["bash", str(script), tag], progress, condense=True)
            if status != 0:
                raise _failure(f"building base {tag}", f"build-base.sh exited with status {status}", progress)
            if _inspect(client, tag) is None:
                raise _failure(f"building base {tag}", "build-base.sh finished but the image is not on the engine", progress)
            progress.done(f"built {tag}")
    return tag


def _assemble_context(name: str, dest: Path, progress: _Progress) -> None:
    src = _image_dir(name)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".git"))
    for rel, path in _REPO_EXTRAS.get(name, {}).items():
        target = dest / rel
        shutil.copyfile(path, target)
        target.chmod(0o644)
    for hf in _host_files(name, progress):
        target = dest / hf.dest
        shutil.copyfile(hf.source, target)
        target.chmod(0o755)


def build_image(name: str, *, base: str | None = None, quiet: bool = False, force: bool = False) -> str:
    """Build bundled image NAME unless its current hash tag exists; return that tag.

    ``base`` replaces the debootstrapped Debian base for images whose Dockerfile
    takes ``ARG BASE`` (e.g. ``debian:bookworm-slim`` where a registry is reachable).
    ``force`` rebuilds without the layer cache even when the tag exists (the
    debootstrap base is reused when present). Progress goes to stderr.
    """
    name = _bundled_name(name) or name
    folder = _image_dir(name)
    if base is not None and not accepts_base(name):
        raise ConfigError(f"image {name!r} takes no base image (its Dockerfile has no ARG BASE)")
    client = get_client()
    tag = image_tag(name)
    with _name_lock(name), process_lock(f"image:{name}"):
        if not force:
            info = _inspect(client, tag)
            if info is not None and (base is None or _labels(info).get(LABEL_BASE) == base):
                _tag_latest(client, info["Id"], name)
                _remember(name, tag)
                return tag
        replaced = _inspect(client, tag)
        own_base = base is None
        if base is None and (folder / "build-base.sh").is_file():
            base = _ensure_base(name, quiet=quiet)
        elif base is None and accepts_base(name):  # the tooling builds on the python image's Debian base
            base = _ensure_base("python", quiet=quiet)
        image_id = _build(client, name, tag, base=base, quiet=quiet, nocache=force, network=not own_base)
        _tag_latest(client, image_id, name)
        if replaced is not None and replaced["Id"] != image_id:
            _remove_quietly(client, replaced["Id"])
        _remember(name, tag)
        return tag


def _build(
    client: "docker.DockerClient", name: str, tag: str, *, base: str | None, quiet: bool, nocache: bool,
    network: bool = False,
) -> str:
    """Run the engine's build; RUN steps get no network unless ``network`` (a user's --base may need apt)."""
    from docker.errors import APIError

    labels = {LABEL_CONTEXT: tag.rsplit(":", 1)[1]}
    if base is not None:
        labels[LABEL_BASE] = base
    with _Progress(f"building {tag}", quiet) as progress, tempfile.TemporaryDirectory(prefix="pygent-build-") as tmp:
        ctx = Path(tmp) / "context"
        _assemble_context(name, ctx, progress)
        image_id: str | None = None
        error: str | None = None
        try:
            with _engine_errors():
                stream = client.api.build(
                    path=str(ctx), tag=tag, rm=True, forcerm=True, decode=True, pull=False,
                    nocache=nocache, buildargs={"BASE": base} if base else None, labels=labels,
                    network_mode=None if network else "none",
                )
                for chunk in stream:
                    if "error" in chunk:
                        error = str(chunk.get("error") or chunk.get("errorDetail"))
                        progress.detail(error)
                    elif "stream" in chunk:
                        for line in str(chunk["stream"]).splitlines():
                            if line.startswith("Step ") or line.startswith("Successfully"):
                                progress.step(line)
                            else:
                                progress.detail(line.removeprefix(" ---> "))
                    elif "status" in chunk:
                        progress.detail(f"{chunk['status']} {chunk.get('progress', '')}")
                    aux = chunk.get("aux")
                    if isinstance(aux, dict) and aux.get("ID"):
                        image_id = str(aux["ID"])
        except APIError as exc:
            error = str(exc.explanation or exc)
        if error is not None:
            if base is not None and _inspect(client, base) is None:
                error += f" (the base image {base!r} is not on the engine and could not be pulled: `docker load` it)"
            raise _failure(f"building {tag}", error, progress)
        if image_id is None:
            info = _inspect(client, tag)
            if info is None:
                raise _failure(f"building {tag}", "the engine reported no image", progress)
            image_id = info["Id"]
        progress.done(f"built {tag}")
        return image_id


def _remove_quietly(client: "docker.DockerClient", image_id: str) -> None:
    """Drop an image a rebuild replaced; keep it when containers or other tags still use it."""
    from docker.errors import APIError

    try:
        client.api.remove_image(image_id, force=False, noprune=False)
    except (APIError, Exception):
        pass


def _tag_latest(client: "docker.DockerClient", image_id: str, name: str) -> None:
    latest = _inspect(client, f"{REPO}/{name}:latest")
    if latest is not None and latest.get("Id") == image_id:
        return
    with _engine_errors():
        client.api.tag(image_id, f"{REPO}/{name}", "latest", force=True)


def _remember(name: str, tag: str) -> None:
    with _lock:
        dirs, host = os.environ.get("PYGENT_IMAGES_DIR"), engine_host()
        for ref in (name, f"{REPO}/{name}", f"{REPO}/{name}:latest", tag):
            _resolved[(dirs, host, ref)] = tag


# --------------------------------------------------------------------------- resolving


def _bundled_name(ref: str) -> str | None:
    """NAME when ref is "NAME", "pygent/NAME" or "pygent/NAME:tag" for a bundled NAME."""
    if ref.startswith(f"{REPO}/"):
        name = ref[len(REPO) + 1 :].partition(":")[0]
    elif any(c in ref for c in ":/@"):
        return None
    else:
        name = ref
    return name if name and name in bundled_names() else None


def resolve_image(ref: str, *, build_missing: bool = True) -> str:
    """The image to run for ref: bundled names are built if needed, others must exist.

    Returns the full ``pygent/NAME:<hash>`` tag for a bundled image, ref itself
    for any other image on the engine. Cached per process: repeated calls make
    no engine call.
    """
    key = (os.environ.get("PYGENT_IMAGES_DIR"), engine_host(), ref)
    hit = _resolved.get(key)
    if hit is not None:
        return hit
    ref = ref.strip()
    if not ref:
        raise ConfigError("empty image reference")
    name = _bundled_name(ref)
    if name is not None:
        result = _resolve_bundled(ref, name, build_missing=build_missing)
    else:
        client = get_client()
        if _inspect(client, ref) is None:
            raise ImageNotFound(
                f"image {ref!r} is not on the engine and is not bundled"
                f" (bundled: {', '.join(bundled_names()) or 'none'})."
                " Build it, or `docker load` it; no registry is used."
            )
        result = ref
    with _lock:
        _resolved[key] = result
    return result


def _resolve_bundled(ref: str, name: str, *, build_missing: bool) -> str:
    current = image_tag(name)
    wanted = ref.partition(":")[2] if ref.startswith(f"{REPO}/") else ""
    client = get_client()
    if wanted and wanted not in ("latest", current.rsplit(":", 1)[1]):
        # a pinned earlier build: use it if the engine still has it
        pinned = f"{REPO}/{name}:{wanted}"
        if _inspect(client, pinned) is None:
            raise ImageNotFound(
                f"image {ref!r} is not on the engine; the current build of {name!r} is {current!r}"
                f" (`pygent-runner images build {name}`)"
            )
        return pinned
    if _inspect(client, current) is not None:
        return current
    if not build_missing:
        raise ImageNotFound(
            f"bundled image {name!r} is not built yet ({current}); run `pygent-runner images build {name}`"
        )
    return build_image(name)


def list_images() -> list[dict[str, Any]]:
    """One record per bundled image: name, tag, built, current, size (bytes or None), id."""
    client = get_client()
    out: list[dict[str, Any]] = []
    for name in bundled_names():
        tag = image_tag(name)
        info = _inspect(client, tag)
        current = info is not None
        if info is None:
            info = _inspect(client, f"{REPO}/{name}:latest")
        if info is None:
            with _engine_errors():
                found = client.api.images(name=f"{REPO}/{name}")
            info = _inspect(client, found[0]["Id"]) if found else None
        out.append({
            "name": name,
            "tag": tag,
            "built": info is not None,
            "current": current,
            "size": int(info["Size"]) if info is not None else None,
            "id": info["Id"] if info is not None else None,
        })
    return out
