"""New anime: those in anime.csv that no rating of the model's data names. The ranking model has no row for them, so
they never enter its lists; the feature model scores them from what they are (genres, type, …). Their list sits
beside the ranking model's: ranked by the predicted rating for the person, each with the reason ("you rate
Psychological, Thriller highly") taken from the person's own ratings of those genres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import UnknownIdError
from pipeline.serving.recommend import Recommender
from pipeline.top_n import K

REASON_GENRES = 2  # genres named in a reason, at most
MIN_GENRE_RATINGS = 2  # a genre the person rated fewer anime of says nothing of their taste


@dataclass(frozen=True)
class NewListing:
    """New anime for one person, best first: raw ids, predicted ratings and the reason of each."""

    anime_ids: np.ndarray
    predicted_rating: np.ndarray
    reasons: list[str]


def genre_taste(recommender: Recommender, anime_ids: np.ndarray, ratings: np.ndarray) -> dict[str, float]:
    """How much more than their own mean a person rates each genre (rated anime only; a genre of fewer than
    MIN_GENRE_RATINGS of their ratings is left out)."""
    rated = ratings != recommender.unrated_value
    anime_ids, ratings = anime_ids[rated], ratings[rated].astype(np.float64)
    if not len(ratings):
        return {}
    by_genre: dict[str, list[float]] = {}
    for anime_id, rating in zip(anime_ids, ratings, strict=True):
        for genre in recommender.catalog.card(int(anime_id))["genres"]:
            by_genre.setdefault(genre, []).append(rating)
    mean = ratings.mean()
    return {genre: float(np.mean(values) - mean) for genre, values in by_genre.items()
            if len(values) >= MIN_GENRE_RATINGS}


def reason(recommender: Recommender, anime_id: int, taste: dict[str, float]) -> str:
    """Why a new anime is listed: the genres of it the person rates above their mean, the highest first; or what
    it is, when they rate none of its genres above their mean (or too few anime of them to tell)."""
    card = recommender.catalog.card(anime_id)
    liked = sorted((g for g in card["genres"] if taste.get(g, 0.0) > 0), key=lambda g: -taste[g])[:REASON_GENRES]
    if liked:
        return f"you rate {', '.join(liked)} highly"
    what = ", ".join(card["genres"][:REASON_GENRES]) or card["type"] or "its features"
    return f"predicted from what it is: {what}"


def user_side(recommender: Recommender, user_id: int | None, anime_ids: np.ndarray | None,
              ratings: np.ndarray | None) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """The rating-model vector and bias of a known user (and their anime and ratings), or folded in from someone
    new's ratings (zero with none rated)."""
    anime_ids = np.asarray([] if anime_ids is None else anime_ids, np.int64)
    ratings = np.asarray([] if ratings is None else ratings)
    if user_id is not None:
        index = recommender.users.index(user_id)
        known = recommender.known
        mine = known.filter(known["user_index"].to_numpy() == index)
        return (recommender.rating.user_vectors[index], float(recommender.rating.user_bias[index]),
                recommender.anime.ids[mine["anime_index"].to_numpy()], mine["rating"].to_numpy())
    rated = ratings != recommender.unrated_value
    vector, bias = (recommender.fold_in(anime_ids[rated], ratings[rated]) if rated.any()
                    else (np.zeros(recommender.rating.user_vectors.shape[1], np.float32), 0.0))
    return vector, bias, anime_ids, ratings


def new_listing(recommender: Recommender, n: int = K, user_id: int | None = None,
                anime_ids: np.ndarray | None = None, ratings: np.ndarray | None = None,
                eligible: np.ndarray | None = None) -> NewListing:
    """The n new anime a known user (or someone new, from their ratings) is predicted to rate highest, among the
    `eligible` ones (a mask over the new anime; None: all)."""
    vector, bias, rated_ids, rated = user_side(recommender, user_id, anime_ids, ratings)
    predicted = recommender.rating.new_anime_ratings(vector, bias)
    new_ids = recommender.rating.new_anime_ids
    candidates = np.flatnonzero(np.ones(len(new_ids), bool) if eligible is None else eligible)
    best = candidates[np.argsort(-predicted[candidates], kind="stable")[:n]]
    taste = genre_taste(recommender, rated_ids, rated)
    return NewListing(new_ids[best], predicted[best], [reason(recommender, int(new_ids[i]), taste) for i in best])


def eligible_new(recommender: Recommender, genre: str | None = None,
                 anime_type: str | None = None) -> np.ndarray | None:
    """Which new anime a list may hold under a person's genre and type filters; None when neither is set."""
    if not (genre or anime_type):
        return None
    return recommender.catalog.matches(recommender.rating.new_anime_ids, genre, anime_type)


def similar_to_new(recommender: Recommender, anime_id: int, n: int = K) -> tuple[np.ndarray, np.ndarray]:
    """The rated anime nearest to a new one by the rating model's anime vectors (a new anime's is its features'):
    their indices, nearest first, and cosine similarities."""
    position = recommender.new_anime.indices(np.array([anime_id]))[0]
    if position < 0:
        raise UnknownIdError(f"anime {anime_id} is not a new anime of this model (rated anime: similar by ratings)")
    vector = recommender.rating.new_anime_vectors[position].astype(np.float64)
    similarity = recommender.rating.anime_units @ (vector / max(np.linalg.norm(vector), 1e-12))
    best = np.argsort(-similarity, kind="stable")[:n]
    return best, similarity[best]
