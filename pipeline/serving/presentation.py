"""What a person is shown of the recommender's answers: the filters they set, lists and neighbours as tables with
names, genres and "because you watched"."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from pipeline.serving.recommend import Listing, Recommender
from pipeline.top_n import K


def eligible_anime(recommender: Recommender, genre: str | None = None, anime_type: str | None = None,
                   min_ratings: int = 0) -> np.ndarray | None:
    """Which anime (a mask over its indices) a list may hold under a person's filters; None when none is set."""
    if not (genre or anime_type or min_ratings):
        return None
    eligible = (recommender.catalog.matches(recommender.anime.ids, genre, anime_type) if genre or anime_type
                else np.ones(len(recommender.anime), dtype=bool))
    if min_ratings:
        eligible &= recommender.rating_counts() >= min_ratings
    return eligible


def describe(recommender: Recommender, listing: Listing) -> pd.DataFrame:
    """A listing as a table for people: id, name, genre, type, predicted rating and because you watched (the names
    joined by "; ")."""
    ids, catalog = recommender.anime.ids, recommender.catalog
    frame = catalog.describe(ids[listing.anime], predicted_rating=listing.predicted_rating)
    frame["because_you_watched"] = ["; ".join(catalog.names(ids[reason])) for reason in listing.reasons]
    return frame


def recommend(recommender: Recommender, user_id: int, n: int = K, **filters) -> pd.DataFrame:
    """A known user's list as a table, under `eligible_anime`'s filters."""
    return describe(recommender, recommender.listing(user_id, n, eligible_anime(recommender, **filters)))


def recommend_from_ratings(recommender: Recommender, anime_ids: np.ndarray, ratings: np.ndarray, n: int = K,
                           **filters) -> pd.DataFrame:
    """Someone new's list as a table, from their ratings, under `eligible_anime`'s filters."""
    return describe(recommender, recommender.listing_from_ratings(anime_ids, ratings, n,
                                                                  eligible_anime(recommender, **filters)))


def similar_anime(recommender: Recommender, anime_id: int, n: int = K, include_self: bool = False) -> pd.DataFrame:
    """The anime nearest to one (`Recommender.nearest_anime`) as a table."""
    best, similarity = recommender.nearest_anime(anime_id, n, include_self)
    return recommender.catalog.describe(recommender.anime.ids[best], similarity=similarity)


def similar_users(recommender: Recommender, user_id: int, n: int = K, top_genres: int = 3) -> pd.DataFrame:
    """Nearest users by rating-model embedding, each with the genres they like most."""
    index = recommender.users.index(user_id)
    units = recommender.rating.user_units
    similarity = units @ units[index]
    similarity[index] = -np.inf
    best = np.argsort(-similarity, kind="stable")[:n]
    return pd.DataFrame({"user_id": recommender.users.ids[best], "similarity": similarity[best],
                         "likes": [", ".join(liked_genres(recommender, int(u), top_genres)) for u in best]})


def liked_genres(recommender: Recommender, user_index: int, top: int = 3) -> list[str]:
    """Genres most frequent among the anime a user rated at or above their own mean rating."""
    known = recommender.known
    rows = known.filter(pc.and_(pc.equal(known["user_index"], user_index),
                                pc.not_equal(known["rating"], recommender.unrated_value)))
    ratings = rows["rating"].to_numpy()
    if not len(ratings):
        return []
    chosen = recommender.anime.ids[rows["anime_index"].to_numpy()[ratings >= ratings.mean()]]
    return recommender.catalog.top_genres(chosen, top)
