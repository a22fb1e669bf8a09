"""Model registry on disk.

    <root>/<model_name>/<version>/   the model's own files (model.ubj | model.txt | *.safetensors + JSON)
                                     and meta.json
    <root>/<model_name>/champion     the champion version (one line)

meta.json: kind, ordered feature list, label definition, training span, data sha256, library versions
(xgboost, lightgbm, torch, numpy, python), metrics, created_at, git SHA when known, and the sha256 of
every model file. `load()` refuses — with `ModelLoadError` and the reason — a missing version or file,
a file whose sha256 differs (corruption), a feature list other than the caller's, and a major-version
change of a library the model depends on.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import platform
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from signals.models.base import DirectionModel, ModelLoadError

META = "meta.json"
CHAMPION = "champion"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# which libraries a model kind depends on (numpy always)
KIND_LIBS: dict[str, tuple[str, ...]] = {
    "xgboost": ("xgboost", "numpy"),
    "lightgbm": ("lightgbm", "numpy"),
    "nhits": ("torch", "numpy"),
    "patchtst": ("torch", "numpy"),
}
_KIND_CLASSES: dict[str, str] = {
    "xgboost": "signals.models.gbm:XGBoostModel",
    "lightgbm": "signals.models.gbm:LightGBMModel",
    "nhits": "signals.models.nhits:NHiTSDirectionModel",
    "patchtst": "signals.models.patchtst:PatchTSTDirectionModel",
}


def model_class(kind: str) -> type[DirectionModel]:
    """The DirectionModel class for a kind (imported lazily, so torch loads only when needed)."""
    ref = _KIND_CLASSES.get(kind)
    if ref is None:
        raise ModelLoadError(f"unknown model kind {kind!r}; known: {sorted(_KIND_CLASSES)}")
    mod, _, name = ref.partition(":")
    try:
        cls = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as e:
        raise ModelLoadError(f"model kind {kind!r}: cannot import {ref}: {e}") from e
    return cls  # type: ignore[no-any-return]


def register_kind(kind: str, ref: str, libs: Sequence[str] = ("numpy",)) -> None:
    """Add a model kind: `ref` is "module:Class"."""
    _KIND_CLASSES[kind] = ref
    KIND_LIBS[kind] = tuple(libs)


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"numpy": np.__version__, "python": platform.python_version()}
    for lib in ("xgboost", "lightgbm", "torch"):
        try:
            from importlib.metadata import version

            out[lib] = version(lib)
        except Exception:
            out[lib] = None
    return out


def _major(v: str | None) -> str | None:
    return None if v is None else v.split(".")[0]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _git_sha() -> str | None:
    try:
        r = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None


@dataclass(frozen=True)
class ModelMeta:
    name: str
    version: str
    kind: str
    features: tuple[str, ...]
    label: dict[str, Any]
    training_span: dict[str, Any]  # e.g. {"start_ms", "end_ms", "symbols", "timeframe", "rows"}
    data_sha256: str
    library_versions: dict[str, str | None]
    metrics: dict[str, Any]
    created_at: str
    files: dict[str, str]  # file name → sha256
    git_sha: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["features"] = list(self.features)
        return json.dumps(d, indent=2, sort_keys=True, default=str)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelMeta:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["features"] = tuple(known.get("features", ()))
        return cls(**known)


@dataclass(frozen=True)
class LoadedModel:
    model: DirectionModel
    meta: ModelMeta
    path: Path


class ModelRegistry:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # ---------------------------------------------------------------- write
    def save(
        self,
        name: str,
        model: DirectionModel,
        *,
        features: Sequence[str],
        label: Mapping[str, Any],
        training_span: Mapping[str, Any],
        data_sha256: str,
        metrics: Mapping[str, Any] | None = None,
        version: str | None = None,
        extra: Mapping[str, Any] | None = None,
        make_champion: bool = False,
    ) -> ModelMeta:
        """Write a new version (never overwrites one); returns its meta."""
        for what, v in (("model name", name), ("version", version or "x")):
            if not _NAME_RE.match(v):
                raise ValueError(f"invalid {what} {v!r}")
        now = datetime.now(UTC)
        version = version or now.strftime("%Y%m%dT%H%M%S%fZ")
        folder = self.root / name / version
        if folder.exists():
            raise FileExistsError(f"model {name} version {version} already exists at {folder}")
        tmp = self.root / name / f".{version}.tmp-{os.getpid()}"
        tmp.mkdir(parents=True)
        model.save(tmp)
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file() and p.name != META}
        if not files:
            raise RuntimeError(f"{model.kind} model wrote no files")
        meta = ModelMeta(
            name=name,
            version=version,
            kind=model.kind,
            features=tuple(features),
            label=dict(label),
            training_span=dict(training_span),
            data_sha256=data_sha256,
            library_versions=library_versions(),
            metrics=dict(metrics or {}),
            created_at=now.isoformat(),
            files=files,
            git_sha=_git_sha(),
            extra=dict(extra or {}),
        )
        (tmp / META).write_text(meta.to_json())
        tmp.rename(folder)  # a version appears complete or not at all
        if make_champion:
            self.set_champion(name, version)
        return meta

    def set_champion(self, name: str, version: str) -> None:
        if not (self.root / name / version / META).is_file():
            raise ModelLoadError(f"cannot promote {name} {version}: no such version")
        p = self.root / name / CHAMPION
        tmp = p.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(version + "\n")
        tmp.replace(p)

    # ---------------------------------------------------------------- read
    def versions(self, name: str) -> list[str]:
        d = self.root / name
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))

    def champion(self, name: str) -> str | None:
        p = self.root / name / CHAMPION
        return p.read_text().strip() or None if p.is_file() else None

    def resolve(self, name: str, version: str) -> str:
        if version == CHAMPION:
            v = self.champion(name)
            if v is None:
                raise ModelLoadError(f"model {name}: no champion set under {self.root / name}")
            return v
        return version

    def meta(self, name: str, version: str = CHAMPION) -> ModelMeta:
        v = self.resolve(name, version)
        p = self.root / name / v / META
        if not p.is_file():
            raise ModelLoadError(f"model {name} version {v}: {p} is missing")
        try:
            return ModelMeta.from_dict(json.loads(p.read_text()))
        except (ValueError, TypeError) as e:
            raise ModelLoadError(f"model {name} version {v}: unreadable {META}: {e}") from e

    def verify(self, name: str, version: str, expected_features: Sequence[str] | None) -> ModelMeta:
        """All checks of `load` without deserialising the model."""
        meta = self.meta(name, version)
        folder = self.root / name / meta.version
        where = f"model {name} version {meta.version}"
        for fname, sha in meta.files.items():
            p = folder / fname
            if not p.is_file():
                raise ModelLoadError(f"{where}: file {fname} is missing")
            got = _sha256(p)
            if got != sha:
                raise ModelLoadError(
                    f"{where}: file {fname} is corrupted (sha256 {got[:12]}…, meta.json says {sha[:12]}…)"
                )
        if expected_features is not None and tuple(expected_features) != meta.features:
            exp, have = list(expected_features), list(meta.features)
            missing = [f for f in have if f not in exp]
            added = [f for f in exp if f not in have]
            detail = (
                f"missing {missing}, new {added}" if (missing or added) else "same names, different order"
            )
            raise ModelLoadError(f"{where}: feature list differs from the caller's ({detail})")
        now = library_versions()
        for lib in KIND_LIBS.get(meta.kind, ("numpy",)):
            saved, cur = meta.library_versions.get(lib), now.get(lib)
            if cur is None:
                raise ModelLoadError(f"{where}: needs {lib} (saved with {saved}) but it is not installed")
            if _major(saved) != _major(cur):
                raise ModelLoadError(
                    f"{where}: saved with {lib} {saved}, running {cur} — major version differs; retrain"
                )
        return meta

    def load(
        self, name: str, version: str = CHAMPION, expected_features: Sequence[str] | None = None
    ) -> LoadedModel:
        """Verify and load. `expected_features`: the caller's ordered feature list (None skips that check,
        e.g. for the torch forecasters that read return windows only)."""
        meta = self.verify(name, version, expected_features)
        folder = self.root / name / meta.version
        cls = model_class(meta.kind)
        try:
            model = cls.load(folder)
        except ModelLoadError as e:
            raise ModelLoadError(f"model {name} version {meta.version}: {e}") from e
        except Exception as e:
            raise ModelLoadError(f"model {name} version {meta.version}: {type(e).__name__}: {e}") from e
        if model.kind != meta.kind:
            raise ModelLoadError(
                f"model {name} version {meta.version}: meta says {meta.kind}, file is {model.kind}"
            )
        return LoadedModel(model, meta, folder)
