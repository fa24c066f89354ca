"""What a person is shown of the recommender's answers: the filters they set, lists and neighbours as tables with
names, genres and "because you watched"."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from pipeline.serving.new_anime import eligible_new, new_listing, similar_to_new, user_side
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


def recommend_new(recommender: Recommender, n: int = K, user_id: int | None = None,
                  anime_ids: np.ndarray | None = None, ratings: np.ndarray | None = None,
                  genre: str | None = None, anime_type: str | None = None) -> pd.DataFrame:
    """The new anime (no ratings in the model's data) a known user, or someone new from their ratings, is predicted
    to rate highest, as a table with the reason of each."""
    listing = new_listing(recommender, n, user_id, anime_ids, ratings, eligible_new(recommender, genre, anime_type))
    frame = recommender.catalog.describe(listing.anime_ids, predicted_rating=listing.predicted_rating)
    frame["why"] = listing.reasons
    return frame


def rating_of(recommender: Recommender, anime_id: int, user_id: int | None = None,
              anime_ids: np.ndarray | None = None, ratings: np.ndarray | None = None) -> pd.DataFrame:
    """One anime's predicted rating for a known user or someone new (from their ratings), as a one-row table; a new
    anime's from its features, with the reason."""
    listing = new_listing(recommender, 1, user_id, anime_ids, ratings,
                          recommender.rating.new_anime_ids == anime_id)
    if len(listing.anime_ids):
        frame = recommender.catalog.describe(listing.anime_ids, predicted_rating=listing.predicted_rating)
        frame["because_you_watched"] = listing.reasons
        return frame
    index = recommender.anime.index(anime_id)  # an anime neither rated nor new: the sentence that says so
    vector, bias, _, _ = user_side(recommender, user_id, anime_ids, ratings)
    predicted = recommender.rating.score_users(vector[None, :], np.array([bias]))[0, [index]]
    scale = recommender.rating.scale
    frame = recommender.catalog.describe(np.array([anime_id]), predicted_rating=np.clip(predicted, scale.minimum,
                                                                                         scale.maximum))
    frame["because_you_watched"] = ""
    return frame


def why_no_new(recommender: Recommender) -> str:
    """The sentence for an empty list of new anime."""
    if len(recommender.rating.new_anime_ids):
        return "no new anime passes the filters"
    return ("every anime of anime.csv has ratings in the model's data, or the model does not read anime features "
            "(architecture feature_mf does)")


def similar_anime(recommender: Recommender, anime_id: int, n: int = K, include_self: bool = False) -> pd.DataFrame:
    """The anime nearest to one as a table: by people's histories (`Recommender.nearest_anime`), or for a new anime
    (no ratings yet) by its features' vector."""
    if recommender.new_anime.indices(np.array([anime_id]))[0] >= 0:
        best, similarity = similar_to_new(recommender, anime_id, n)
    else:
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
