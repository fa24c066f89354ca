"""What a data set says about itself and the command line says about it: its name and rating scale (from `--dataset-
name`/`RATING_SCALE`, else `dataset.toml` beside the data, else the settings), applied to the settings."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineInputError
from pipeline.settings import Settings

DATASET_FILE = "dataset.toml"  # beside the data: what the data say about themselves (`rating_scale = "1-5"`)
DATASET_KEYS = ("name", "rating_scale", "unrated_value")


def parse_rating_scale(text: str, where: str) -> tuple[int, int]:
    """`1-5`, `1..5`, `1–5` or `0 to 100` → (1, 5); anything else is an input error naming `where`."""
    match = re.fullmatch(r"\s*(-?\d+)\s*(?:-|–|\.\.|to)\s*(-?\d+)\s*", str(text))
    if not match or int(match[1]) >= int(match[2]):
        raise PipelineInputError(f"{where}: rating scale {text!r} is not MIN-MAX with whole numbers MIN < MAX "
                                 "(e.g. 1-5)")
    return int(match[1]), int(match[2])


def dataset_name_of(text: str, where: str) -> str:
    """A data set name as it appears in run names, tags and folder names: letters, digits, `.`, `_` and `-`
    (other characters become `-`), at most 64 characters."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.")[:64]
    if not name:
        raise PipelineInputError(f"{where}: data set name {text!r} has no letters or digits")
    return name


def _declared(path: Path) -> dict:
    """The settings `dataset.toml` at `path` declares (none when there is no such file), checked."""
    if not path.is_file():
        return {}
    try:
        declared = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PipelineInputError(f"{path}: not valid TOML ({exc})") from exc
    unknown = sorted(set(declared) - set(DATASET_KEYS))
    if unknown:
        raise PipelineInputError(f"{path}: unknown key {', '.join(unknown)} (known: {', '.join(DATASET_KEYS)})")
    update: dict = {}
    if "name" in declared:
        update["dataset_name"] = dataset_name_of(declared["name"], str(path))
    if "rating_scale" in declared:
        update["rating_min"], update["rating_max"] = parse_rating_scale(declared["rating_scale"], str(path))
    if "unrated_value" in declared:
        if not isinstance(declared["unrated_value"], int):
            raise PipelineInputError(f"{path}: unrated_value must be a whole number")
        update["unrated_value"] = declared["unrated_value"]
    return update


@dataclass(frozen=True)
class DatasetOrigins:
    """Where a run's data set name and rating scale came from (printed beside them)."""

    name: str  # --dataset-name, a dataset.toml path, settings, or "folder name"
    rating_scale: str  # RATING_SCALE, a dataset.toml path, settings or default


def for_dataset(settings: Settings, data: Path, rating_scale: str | None = None,
                dataset_name: str | None = None) -> tuple[Settings, DatasetOrigins]:
    """The settings for one data set, and where its name and rating scale came from. Each is taken from the
    command line (`rating_scale`, `dataset_name`), else `dataset.toml` beside the data (in the folder, or beside a
    .zip), else the settings; the name otherwise from the data folder (or the .zip without its suffix)."""
    update: dict = {}
    scale_origin = "default" if "rating_min" not in settings.model_fields_set else "settings"
    name_origin = "settings" if "dataset_name" in settings.model_fields_set else "folder name"
    folder_name = data.stem if data.suffix.lower() == ".zip" else data.name
    update["dataset_name"] = (dataset_name_of(settings.dataset_name, "ANIMEREC_DATASET_NAME") if settings.dataset_name
                              else dataset_name_of(folder_name, str(data)))
    path = (data if data.is_dir() else data.parent) / DATASET_FILE
    declared = _declared(path)
    update.update(declared)
    name_origin = str(path) if "dataset_name" in declared else name_origin
    scale_origin = str(path) if "rating_min" in declared else scale_origin
    if rating_scale:
        update["rating_min"], update["rating_max"] = parse_rating_scale(rating_scale, "RATING_SCALE")
        scale_origin = "RATING_SCALE"
    if dataset_name:
        update["dataset_name"], name_origin = dataset_name_of(dataset_name, "--dataset-name"), "--dataset-name"
    settings = settings.model_copy(update=update)
    if settings.rating_min <= settings.unrated_value <= settings.rating_max:
        raise PipelineInputError(f"rating scale {settings.rating_scale} ({scale_origin}) contains the unrated marker "
                                 f"{settings.unrated_value}: set unrated_value outside the scale")
    return settings, DatasetOrigins(name_origin, scale_origin)
