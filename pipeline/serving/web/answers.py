"""The app's answers as plain rows, shared by the pages and the JSON API; and what a person may ask, checked with
one sentence for each way it can be wrong."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc

from pipeline.data.ratings_db.schema import APP_USER_ID_BASE
from pipeline.serving.new_anime import eligible_new, new_listing, similar_to_new
from pipeline.serving.presentation import eligible_anime
from pipeline.serving.recommend import Listing, Recommender
from pipeline.top_n import K

MAX_QUERY = 100  # characters of a title search
MAX_LIST = 300  # anime in one person's list
MAX_N = 100  # anime in one answer
NEW_N = 5  # new anime shown beside a list
WATCHED = "watched"
# the sentences of the limits above, said alike by the checks here and by the request validation (sentences.py)
LIST_TOO_LONG = f"a list holds at most {MAX_LIST} anime"
N_OUT_OF_RANGE = f"ask for between 1 and {MAX_N} anime"
SEARCH_TOO_LONG = f"a search is at most {MAX_QUERY} characters"


class InputError(ValueError):
    """What a person asked for cannot be answered: the message is one sentence for them."""


@dataclass(frozen=True)
class RatedAnime:
    anime_id: int
    rating: int | None  # None: watched, not rated


def check_public_user(user_id: int) -> int:
    """A profile's ratings are shown to its owner only: a version that learned them knows the profile as a user,
    which the pages and API of known users never show."""
    if user_id >= APP_USER_ID_BASE:
        raise InputError(f"user {user_id} is a profile of this site: only its owner sees it, on /me")
    return user_id


def check_n(n: int) -> int:
    if not 1 <= n <= MAX_N:
        raise InputError(f"{N_OUT_OF_RANGE}, not {n}")
    return n


def check_list(recommender: Recommender, items: list[RatedAnime]) -> list[RatedAnime]:
    """The list of someone new: known anime, ratings on the model's scale, not empty, not too long."""
    if not items:
        raise InputError("add at least one anime you have seen to get recommendations")
    if len(items) > MAX_LIST:
        raise InputError(f"{LIST_TOO_LONG}; this one has {len(items)}")
    unrated = recommender.unrated_value
    try:
        recommender.rating.scale.check(np.array([item.anime_id for item in items]), np.array(
            [unrated if item.rating is None else item.rating for item in items]), unrated)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    for item in items:
        if recommender.anime.indices(np.array([item.anime_id]))[0] < 0:
            raise InputError(f"anime {item.anime_id} is not known to the model")
    return list({item.anime_id: item for item in items}.values())  # the last rating of an anime listed twice


def parse_list(text: str) -> list[RatedAnime]:
    """A list as the pages keep it in their URL: `5114:10,9253:w` (an anime id, then a rating or w for watched)."""
    if len(text) > MAX_LIST * 16:
        raise InputError(LIST_TOO_LONG)
    items = []
    for part in filter(None, text.split(",")):
        anime, _, rating = part.partition(":")
        if not anime.strip().isdigit() or not (rating.strip().isdigit() or rating.strip() in ("w", "")):
            raise InputError(f"{part[:40]!r} is not an anime id and a rating (such as 5114:9, or 5114:w for watched)")
        items.append(RatedAnime(int(anime), int(rating) if rating.strip().isdigit() else None))
    return items


def listing_for(recommender: Recommender, items: list[RatedAnime], n: int, **filters) -> Listing:
    """The list of someone new, after checking what they sent."""
    return folded_in(recommender, check_list(recommender, items), check_n(n), eligible_anime(recommender, **filters))


def as_arrays(recommender: Recommender, items: list[RatedAnime]) -> tuple[np.ndarray, np.ndarray]:
    """A person's list as the recommender takes it: anime ids, and ratings with watched as the unrated value."""
    return (np.array([item.anime_id for item in items], np.int64),
            np.array([recommender.unrated_value if item.rating is None else item.rating for item in items]))


def folded_in(recommender: Recommender, items: list[RatedAnime], n: int, eligible: np.ndarray | None = None
              ) -> Listing:
    """The list of someone the model never learned, from the anime they rated or watched (known to the model)."""
    return recommender.listing_from_ratings(*as_arrays(recommender, items), n, eligible)


def card(recommender: Recommender, anime_index: int) -> dict:
    """What a person reads of one anime; its name is null when it is missing from anime.csv."""
    anime_id = int(recommender.anime.ids[anime_index])
    return {"anime_id": anime_id, **recommender.catalog.card(anime_id)}


def listing_rows(recommender: Recommender, listing: Listing) -> list[dict]:
    """The served model's answer rows (rank, anime_id, name, predicted_rating, because_you_watched as it joins
    them), with the anime's type, genres and episodes, and the reasons as anime to link to."""
    rows = []
    for rank, (index, predicted, reasons) in enumerate(zip(listing.anime, listing.predicted_rating, listing.reasons,
                                                           strict=True), start=1):
        because = recommender.anime.ids[reasons].tolist()
        rows.append({"rank": rank, **card(recommender, int(index)), "predicted_rating": round(float(predicted), 3),
                     "because_you_watched": "; ".join(recommender.catalog.names(because)),
                     "because": [{"anime_id": b, "name": recommender.catalog.card(b)["name"]} for b in because]})
    return rows


def new_rows(recommender: Recommender, n: int = NEW_N, user_id: int | None = None,
             items: list[RatedAnime] | None = None, genre: str | None = None,
             anime_type: str | None = None) -> list[dict]:
    """The new anime (no ratings in the model's data) best for a known user or someone new, each with its card,
    predicted rating and the reason ("you rate Psychological, Thriller highly")."""
    ids, ratings = (None, None) if items is None else as_arrays(recommender, items)
    listing = new_listing(recommender, check_n(n), user_id, ids, ratings, eligible_new(recommender, genre, anime_type))
    return [{"rank": rank, "anime_id": int(anime_id), **recommender.catalog.card(int(anime_id)),
             "predicted_rating": round(float(predicted), 3), "why": why}
            for rank, (anime_id, predicted, why) in enumerate(zip(listing.anime_ids, listing.predicted_rating,
                                                                  listing.reasons, strict=True), start=1)]


def is_new(recommender: Recommender, anime_id: int) -> bool:
    """Whether an anime is one the model scores from its features alone (no rating names it)."""
    return bool(recommender.new_anime.indices(np.array([anime_id]))[0] >= 0)


def anime_page(recommender: Recommender, anime_id: int, kept: dict | None = None) -> tuple[dict, int, list[dict]]:
    """One anime's card, its number of ratings and the anime that go with it: by people's histories, or for a new
    anime by its features' vector."""
    if is_new(recommender, anime_id):
        best, similarity = similar_to_new(recommender, anime_id, K)
        return ({"anime_id": anime_id, **recommender.catalog.card(anime_id), "new": True}, 0,
                [{**card(recommender, int(index)), "similarity": round(float(value), 3)}
                 for index, value in zip(best, similarity, strict=True)])
    index = recommender.anime.index(anime_id)
    return (card(recommender, index), int(recommender.rating_counts()[index]),
            similar_rows(recommender, anime_id, kept=kept))


def search_rows(recommender: Recommender, query: str, limit: int = 10) -> list[dict]:
    if len(query) > MAX_QUERY:
        raise InputError(SEARCH_TOO_LONG)
    found = recommender.catalog.search(query, recommender.anime.ids, check_n(limit))
    return [card(recommender, recommender.anime.index(int(anime_id))) for anime_id in found]


def similar_rows(recommender: Recommender, anime_id: int, n: int = K, kept: dict | None = None) -> list[dict]:
    """The anime that go with one; `kept` holds answers already given (they never change for a served model), each
    for up to MAX_N anime, so a repeated question is a lookup."""
    check_n(n)
    if kept is None or anime_id not in kept:
        best, similarity = recommender.nearest_anime(anime_id, MAX_N)
        rows = [{**card(recommender, int(index)), "similarity": round(float(value), 3)}
                for index, value in zip(best, similarity, strict=True)]
        if kept is None:
            return rows[:n]
        kept[anime_id] = rows
    return kept[anime_id][:n]


def history_rows(recommender: Recommender, user_id: int, limit: int = MAX_N) -> list[dict]:
    """A known user's rated and watched anime, highest rated first (watched-only last)."""
    index = recommender.users.index(user_id)
    known = recommender.known.filter(pc.equal(recommender.known["user_index"], index))
    ratings = known["rating"].to_numpy()
    order = np.argsort(-np.where(ratings == recommender.unrated_value, -np.inf, ratings), kind="stable")[:limit]
    anime = known["anime_index"].to_numpy()
    return [{**card(recommender, int(anime[i])),
             "rating": None if ratings[i] == recommender.unrated_value else int(ratings[i])} for i in order]
