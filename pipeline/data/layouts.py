"""The file layouts the pipeline reads (Kaggle CooperUnion, Kaggle 2020): their files and typed columns, and how a data
folder's layout and files are found (plain, compressed or inside a .zip)."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pyarrow as pa

from pipeline.errors import PipelineInputError

ANIME_FILE = "anime.csv"
COMPRESSED_SUFFIXES = ("", ".gz", ".bz2", ".zst")  # read as they are (pyarrow decompresses by extension)
INBOX_SUFFIXES = tuple(f".csv{suffix}" for suffix in COMPRESSED_SUFFIXES)

# MyAnimeList list statuses (Kaggle 2020 `watching_status.csv`); 0 = watched, status not given (a −1 row).
WATCHING_STATUSES = {0: "watched", 1: "watching", 2: "completed", 3: "on hold", 4: "dropped", 6: "plan to watch"}


@dataclass(frozen=True)
class Columns:
    """The columns read from one kind of file: canonical name → type, and the header names accepted for each
    (compared by `header_key`; the canonical name itself when not listed)."""

    types: dict[str, pa.DataType]
    required: tuple[str, ...]
    accepted: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def header_names(self, name: str) -> tuple[str, ...]:
        return self.accepted.get(name, (name,))


# Rating files from other domains name the item `item_id` (or `itemId`, `Item ID`): read as the anime id.
RATING_COLUMNS = Columns({"user_id": pa.int64(), "anime_id": pa.int64(), "rating": pa.int64()},
                         required=("user_id", "anime_id", "rating"), accepted={"anime_id": ("anime_id", "item_id")})
WATCH_LIST_COLUMNS = Columns({"user_id": pa.int64(), "anime_id": pa.int64(), "rating": pa.int64(),
                              "watching_status": pa.int64()},
                             required=("user_id", "anime_id", "rating", "watching_status"))
# The Kaggle 2020 anime.csv is read through the same names: `MAL_ID`, `Genres` (`Genders` in older copies) and
# `Score` (its mean score; its `Rating` is the age rating, so `score` is looked for first); its `Studios`, `Source`
# and `Premiered` too. Only anime_id and name are required; the rest is null when absent.
ANIME_COLUMNS = Columns({
    "anime_id": pa.int64(), "name": pa.string(), "genre": pa.string(), "type": pa.string(),
    "episodes": pa.string(),  # "Unknown" for airing shows; cast after reading
    "rating": pa.string(),  # mean score; "Unknown" in the Kaggle 2020 file; cast after reading
    "members": pa.string(),  # cast after reading: a count that does not parse is a neutral feature, not a bad row
    "studios": pa.string(), "source": pa.string(), "premiered": pa.string(),  # Kaggle 2020 only
}, required=("anime_id", "name"), accepted={
    "anime_id": ("anime_id", "mal_id"), "genre": ("genre", "genres", "genders"), "rating": ("score", "rating")})


@dataclass(frozen=True)
class Layout:
    """How a downloaded data set names its files."""

    name: str
    rating_file: str
    watch_list_file: str | None = None  # list entries with a watching status (interactions), if the layout has one


COOPERUNION = Layout("Kaggle CooperUnion", "rating.csv")
KAGGLE_2020 = Layout("Kaggle 2020", "rating_complete.csv", watch_list_file="animelist.csv")
LAYOUTS = (KAGGLE_2020, COOPERUNION)  # first match wins: a 2020 folder has no rating.csv, but check it first


@dataclass(frozen=True)
class DataFile:
    """A CSV as found on disk: plain, compressed, or a member of a .zip (read in place, never unpacked)."""

    path: Path  # the file on disk (the .zip for a member)
    member: str | None = None

    @property
    def name(self) -> str:
        return f"{self.path}/{self.member}" if self.member else str(self.path)

    def open(self):
        """A fresh binary stream over the (decompressed) CSV text."""
        if self.member is not None:
            return zipfile.ZipFile(self.path).open(self.member)
        return pa.input_stream(str(self.path), compression="detect")

    def readable(self):
        """What pyarrow's reader takes: the path itself when it can (parallel, memory-mapped), else a stream."""
        return str(self.path) if self.member is None else self.open()

    def sha256(self) -> str:
        """Of the file on disk (for a member: of its whole .zip)."""
        digest = hashlib.sha256()
        with self.path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()


def find_file(location: Path, name: str) -> DataFile | None:
    """`name` in a folder (plain or compressed), or inside a .zip there (or `location` itself being a .zip)."""
    if location.is_dir():
        for suffix in COMPRESSED_SUFFIXES:
            if (location / f"{name}{suffix}").exists() or (location / f"{name}{suffix}").is_symlink():
                return DataFile(location / f"{name}{suffix}")
        archives = sorted(location.glob("*.zip"))
    else:
        archives = [location] if location.suffix.lower() == ".zip" and location.is_file() else []
    for archive in archives:
        try:
            members = zipfile.ZipFile(archive).namelist()
        except zipfile.BadZipFile as exc:
            raise PipelineInputError(f"{archive}: not a readable zip file ({exc})") from exc
        found = [m for m in members if PurePosixPath(m).name.lower() == name and not m.startswith("__MACOSX/")]
        if found:
            return DataFile(archive, min(found, key=len))
    return None


def detect_layout(location: Path) -> tuple[Layout, DataFile]:
    """The layout of a data folder or .zip, from the rating file it holds."""
    if location.is_file() and location.suffix.lower() != ".zip":
        raise PipelineInputError(f"{location}: is a file; give the folder that holds it (or a .zip of the data)")
    for layout in LAYOUTS:
        found = find_file(location, layout.rating_file)
        if found is not None:
            return layout, found
    missing = location / COOPERUNION.rating_file if location.is_dir() else location
    raise PipelineInputError(
        f"{missing}: file not found (expected columns "
        f"{','.join(RATING_COLUMNS.required)}; or {KAGGLE_2020.rating_file} of the Kaggle 2020 layout; plain, "
        f"{', '.join(s for s in COMPRESSED_SUFFIXES if s)} or inside a .zip)")
