"""The anime catalog as people see it: names (found forgivingly), genres and types, for lists and filters.

Built from the accepted rows of anime.csv. An anime rated in the data but missing from anime.csv has no row:
it is shown by its id with "(not in anime.csv)" (and served with a null name).
"""

from __future__ import annotations

import difflib
import html
import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.errors import UnknownIdError

NOT_IN_METADATA = "(not in anime.csv)"


def normalize_title(title: str) -> str:
    """Forgiving key for names: HTML entities decoded, case folded, punctuation and spacing dropped."""
    without_apostrophes = re.sub(r"['’`]", "", html.unescape(title).casefold())
    return re.sub(r"[\W_]+", " ", without_apostrophes).strip()


@dataclass
class Catalog:
    anime: pd.DataFrame  # indexed by anime_id: name, genre, type, episodes, rating, members

    @classmethod
    def of(cls, table: pa.Table) -> Catalog:
        return cls(table.to_pandas().drop_duplicates("anime_id").set_index("anime_id"))

    def find(self, query: str, modelled: np.ndarray) -> int:
        """Anime id for an id or a name (among the `modelled` ids), forgiving case, punctuation and HTML
        entities; a miss suggests close names."""
        if query.strip().isdigit():
            return int(query)
        names = self.anime["name"].dropna()
        keys = names.map(normalize_title)
        wanted = normalize_title(query)
        known = set(modelled.tolist())
        for candidates in (keys[keys == wanted], keys[keys.str.contains(wanted, regex=False)] if wanted else keys[:0]):
            found = [anime_id for anime_id in candidates.index if anime_id in known]
            if found:
                return int(min(found, key=lambda anime_id: len(keys[anime_id])))
        close = (difflib.get_close_matches(wanted, keys.tolist(), n=5, cutoff=0.5)
                 or difflib.get_close_matches(wanted, keys.tolist(), n=5, cutoff=0.0))  # the nearest, however far
        suggestions = [names[keys == key].iloc[0] for key in close]
        hint = f"; did you mean: {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        raise UnknownIdError(f"no anime named {query!r}{hint}")

    def card(self, anime_id: int) -> dict:
        """What a person reads of one anime: name (None when missing from anime.csv), type, genres, episodes."""
        return self._cards.get(anime_id) or {"name": None, "type": None, "genres": [], "episodes": None}

    @cached_property
    def _cards(self) -> dict[int, dict]:
        def text(value) -> str | None:
            return value if isinstance(value, str) and value else None

        def whole(value) -> int | None:
            return None if value is None or pd.isna(value) else int(value)

        columns = [self.anime[c] for c in ("name", "type", "genre", "episodes")]
        return {int(anime_id): {"name": text(name), "type": text(kind),
                                "genres": [g.strip() for g in genres.split(",")] if text(genres) else [],
                                "episodes": whole(episodes)}
                for anime_id, name, kind, genres, episodes in zip(self.anime.index, *columns, strict=True)}

    @cached_property
    def genres(self) -> list[str]:
        """Every genre of the catalog, sorted (the choices of a genre filter)."""
        return sorted({g.strip() for text in self.anime["genre"].dropna() for g in str(text).split(",") if g.strip()})

    @cached_property
    def types(self) -> list[str]:
        return sorted(self.anime["type"].dropna().unique().tolist())

    @cached_property
    def _search_keys(self) -> pd.Series:
        return self.anime["name"].dropna().map(normalize_title)

    def search(self, query: str, modelled: np.ndarray, limit: int = 10) -> np.ndarray:
        """Ids of the modelled anime whose name holds every word of `query` (forgiving case, punctuation and
        HTML entities; a word may be the start of a longer one): exact names first, then names that start with
        the query, then the most members."""
        words = normalize_title(query).split()
        if not words:
            return np.empty(0, np.int64)
        keys = self._search_keys
        found = keys[keys.index.isin(modelled)]
        for word in words:
            found = found[found.str.contains(rf"\b{re.escape(word)}", regex=True)]
        wanted = " ".join(words)
        members = self.anime["members"].reindex(found.index).fillna(0).to_numpy(np.float64)
        order = np.lexsort((-members, ~found.str.startswith(wanted).to_numpy(), found.to_numpy() != wanted))
        return found.index.to_numpy()[order[:limit]].astype(np.int64)

    def name(self, anime_id: int) -> str:
        return self.card(anime_id)["name"] or NOT_IN_METADATA

    def names(self, anime_ids: np.ndarray) -> list[str]:
        """Names to print, from the cards (a dict lookup each: a list is answered per request)."""
        return [self.card(int(anime_id))["name"] or f"anime {anime_id} {NOT_IN_METADATA}" for anime_id in anime_ids]

    def matches(self, anime_ids: np.ndarray, genre: str | None, anime_type: str | None) -> np.ndarray:
        """Which of `anime_ids` have the genre and the type asked for (all, when neither is)."""
        keep = np.ones(len(anime_ids), dtype=bool)
        meta = self.anime.reindex(anime_ids)
        if genre:
            keep &= meta["genre"].fillna("").str.casefold().str.contains(genre.casefold(), regex=False).to_numpy()
        if anime_type:
            keep &= (meta["type"].fillna("").str.casefold() == anime_type.casefold()).to_numpy()
        return keep

    def top_genres(self, anime_ids: np.ndarray, top: int) -> list[str]:
        """The most frequent genres among `anime_ids`."""
        genres = self.anime.reindex(anime_ids)["genre"].dropna().str.split(r",\s*").explode()
        return genres.value_counts().head(top).index.tolist()

    def describe(self, anime_ids: np.ndarray, **scores: np.ndarray) -> pd.DataFrame:
        """A list for people: id, name, genre, type and the given score columns (3 decimals)."""
        meta = self.anime.reindex(anime_ids)
        frame = pd.DataFrame({"anime_id": anime_ids, "name": meta["name"].to_numpy(),
                              "genre": meta["genre"].to_numpy(), "type": meta["type"].to_numpy()})
        for column, values in scores.items():
            frame[column] = np.round(values.astype(np.float64), 3)
        return frame
