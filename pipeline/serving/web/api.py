"""The JSON API under /api: the pages' answers for programs (OpenAPI at /docs). Recommendation rows carry the
served MLflow model's fields (rank, anime_id, name, predicted_rating, because_you_watched)."""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.serving.presentation import eligible_anime
from pipeline.serving.web import answers
from pipeline.serving.web.answers import MAX_LIST, MAX_N, MAX_QUERY, RatedAnime
from pipeline.top_n import K


class FastJSON(JSONResponse):
    """Rows of plain values straight to JSON by orjson (FastAPI's encoder walks every value first)."""

    def render(self, content) -> bytes:
        return orjson.dumps(content)


# Each answer is a millisecond or two of numpy: the handlers run on the event loop, one at a time, rather than in
# threads that would contend for the GIL and the BLAS threads.
router = APIRouter(prefix="/api", tags=["recommendations"], default_response_class=FastJSON)


class RatingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rating: int | Literal["watched"] = Field(description="a rating on the model's scale, or \"watched\"")


class RatedAnimeIn(RatingIn):
    anime_id: int


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(K, ge=1, le=MAX_N)
    genre: str | None = Field(None, max_length=60)
    type: str | None = Field(None, max_length=30)
    min_ratings: int = Field(0, ge=0)

    def as_kwargs(self):
        return {"genre": self.genre or None, "anime_type": self.type or None, "min_ratings": self.min_ratings}


class NewUserRequest(Filters):
    ratings: list[RatedAnimeIn] = Field(max_length=MAX_LIST)

    def items(self) -> list[RatedAnime]:
        return [RatedAnime(r.anime_id, None if r.rating == answers.WATCHED else r.rating) for r in self.ratings]


# The request's schema for the OpenAPI document; the models it refers to go into its components (app.py).
NEW_USER_SCHEMA = NewUserRequest.model_json_schema(ref_template="#/components/schemas/{model}")
SCHEMA_COMPONENTS = NEW_USER_SCHEMA.pop("$defs", {})
NEW_USER_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": NEW_USER_SCHEMA}}}}


async def read_json(request: Request, model: type[BaseModel], what: str, max_bytes: int | None = None,
                    too_large: str = "") -> BaseModel:
    """The body as `model`, parsed by pydantic straight from its bytes (FastAPI's generic body handling costs more
    than the answer). A body of another type is refused: text/plain is what another site may POST without the
    browser asking first."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise HTTPException(415, f"send {what} as JSON, with the header Content-Type: application/json")
    body = await request.body()
    if max_bytes is not None and len(body) > max_bytes:
        raise HTTPException(413, too_large)
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]) from exc


def served(request: Request):
    return request.app.state.watcher.current()


@router.get("/model", summary="The served version: data set, scores, when it was trained")
async def model(request: Request):
    return served(request).as_json()


@router.get("/anime", summary="Anime whose title holds every word of q (as you type)")
async def search(request: Request, q: Annotated[str, Query(max_length=MAX_QUERY)],
           limit: Annotated[int, Query(ge=1, le=MAX_N)] = 10):
    return answers.search_rows(served(request).recommender, q, limit)


@router.get("/anime/{anime_id}", summary="One anime and the anime that go with it")
async def anime(request: Request, anime_id: int, n: Annotated[int, Query(ge=1, le=MAX_N)] = K):
    model = served(request)
    card, ratings, similar = answers.anime_page(model.recommender, anime_id, model.similar)
    return {**card, "ratings": ratings, "similar": similar[:n]}


@router.get("/anime/{anime_id}/similar", summary="The anime that go with one (the ranking model's neighbours)")
async def similar(request: Request, anime_id: int, n: Annotated[int, Query(ge=1, le=MAX_N)] = K):
    model = served(request)
    return answers.similar_rows(model.recommender, anime_id, n, model.similar)


@router.post("/recommendations", summary="Recommendations for someone new, from the anime they rated or watched",
             openapi_extra=NEW_USER_BODY)
async def recommend_new(request: Request):
    body = await read_json(request, NewUserRequest, "the list")
    recommender = served(request).recommender
    return answers.listing_rows(recommender, answers.listing_for(recommender, body.items(), body.n,
                                                                 **body.as_kwargs()))


@router.post("/recommendations/new", summary="New anime (no ratings yet) for someone new, each with the reason",
             openapi_extra=NEW_USER_BODY)
async def recommend_new_anime(request: Request):
    body = await read_json(request, NewUserRequest, "the list")
    recommender = served(request).recommender
    return answers.new_rows(recommender, body.n, items=answers.check_list(recommender, body.items()),
                            genre=body.genre, anime_type=body.type)


@router.get("/users/{user_id}/recommendations/new", summary="New anime (no ratings yet) for a known user, each with "
            "the reason")
async def recommend_user_new(request: Request, user_id: int, filters: Annotated[Filters, Query()]):
    answers.check_public_user(user_id)
    return answers.new_rows(served(request).recommender, filters.n, user_id=user_id, genre=filters.genre,
                            anime_type=filters.type)


@router.get("/users/{user_id}", summary="A known user's rated and watched anime")
async def user(request: Request, user_id: int):
    answers.check_public_user(user_id)
    return answers.history_rows(served(request).recommender, user_id)


@router.get("/users/{user_id}/recommendations", summary="A known user's recommendations")
async def recommend_user(request: Request, user_id: int, filters: Annotated[Filters, Query()]):
    answers.check_public_user(user_id)
    recommender = served(request).recommender
    eligible = eligible_anime(recommender, **filters.as_kwargs())
    return answers.listing_rows(recommender, recommender.listing(user_id, filters.n, eligible))
