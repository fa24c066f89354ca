"""A person's profile: the anime they rate kept in the ratings database under a random token that only their browser's
cookie holds (no password, no name). The page `/me` and the API under `/api/me`; a change is committed before it is
answered, and only this site's own pages may make one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from pipeline.data.ratings_db.export import exported_watermark
from pipeline.data.ratings_db.store import (
    Profile,
    ProfileFullError,
    RatingsStore,
    WriteLimitError,
    WriteLimits,
)
from pipeline.serving.web import answers
from pipeline.serving.web.answers import WATCHED, RatedAnime
from pipeline.serving.web.api import FastJSON, RatingIn, read_json, served
from pipeline.serving.web.champion import ServedModel
from pipeline.serving.web.pages import render
from pipeline.top_n import K

COOKIE = "animerec_profile"
COOKIE_SECONDS = 365 * 24 * 3600
MAX_BODY = 256  # bytes of one rating's JSON body
router = APIRouter(tags=["your profile"], default_response_class=FastJSON)


@dataclass(frozen=True)
class ProfileView:
    """What a person's page shows: their anime, and their list with where it comes from."""

    ratings: list[dict]
    rows: list[dict]
    learned: bool  # the served version learned this profile's ratings (else they were folded in)
    note: str


def ratings_store(request: Request) -> RatingsStore:
    return request.app.state.ratings


def limits(request: Request) -> WriteLimits:
    settings = request.app.state.settings
    return WriteLimits(settings.profile_writes_per_minute, settings.profile_max_ratings)


def check_same_origin(request: Request) -> None:
    """A change comes from this site's pages: a browser names the page's origin (and, lately, its site) on every
    write, and another site's page cannot leave them out. Programs that send neither are let through."""
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if (site is not None and site not in ("same-origin", "none")) or (
            origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}"):
        raise HTTPException(403, "a change to a profile must come from this site's own pages")


async def read_rating(request: Request) -> int | None:
    body = await read_json(request, RatingIn, "the rating", MAX_BODY,
                           'a rating is a small JSON object, such as {"rating": 8} or {"rating": "watched"}')
    return None if body.rating == WATCHED else body.rating


async def write(call, *args) -> object:
    """A store write, off the event loop (it waits for the disk), with its refusals as sentences."""
    try:
        return await run_in_threadpool(call, *args)
    except WriteLimitError as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": str(exc.retry_after)}) from exc
    except ProfileFullError as exc:
        raise HTTPException(409, str(exc)) from exc


async def current_profile(request: Request) -> Profile | None:
    return await run_in_threadpool(ratings_store(request).profile, request.cookies.get(COOKIE))


def keep_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(COOKIE, token, max_age=COOKIE_SECONDS, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


@router.put("/api/me/ratings/{anime_id}", summary="Keep your rating of an anime (the first one creates your profile)",
            openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                "schema": RatingIn.model_json_schema()}}}})
async def rate(request: Request, anime_id: int):
    check_same_origin(request)
    rating = await read_rating(request)
    model = served(request)
    answers.check_list(model.recommender, [RatedAnime(anime_id, rating)])
    profile, token = await current_profile(request), None
    if profile is None:
        token, profile = await run_in_threadpool(ratings_store(request).create_profile)
    change = await write(ratings_store(request).rate, profile, model.dataset, anime_id, rating, limits(request))
    response = FastJSON({"anime_id": anime_id, "rating": WATCHED if rating is None else rating, "change": change},
                        status_code=201 if token else 200)
    if token:
        keep_cookie(request, response, token)
    return response


@router.delete("/api/me/ratings/{anime_id}", summary="Remove your rating of an anime")
async def unrate(request: Request, anime_id: int):
    check_same_origin(request)
    profile = await required_profile(request)
    if not await write(ratings_store(request).remove, profile, served(request).dataset, anime_id, limits(request)):
        raise HTTPException(404, f"anime {anime_id} is not in your profile")
    return {"anime_id": anime_id, "removed": True}


@router.delete("/api/me", summary="Forget me: delete your profile and every rating in it")
async def forget(request: Request):
    check_same_origin(request)
    profile = await required_profile(request)
    await run_in_threadpool(ratings_store(request).forget, profile)
    response = FastJSON({"forgotten": True})
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/api/me", summary="Your profile: your anime and your recommendations")
async def me(request: Request, n: int = K):
    profile = await required_profile(request)
    model = served(request)
    view = await run_in_threadpool(profile_view, request, model, profile, answers.check_n(n))
    return {"version": model.version, "learned": view.learned, "note": view.note, "ratings": view.ratings,
            "recommendations": view.rows}


@router.get("/me", response_class=HTMLResponse, include_in_schema=False)
async def me_page(request: Request) -> HTMLResponse:
    profile = await current_profile(request)
    model = served(request)
    view = None if profile is None else await run_in_threadpool(profile_view, request, model, profile, K)
    engine = ratings_store(request).engine.url.get_backend_name()
    return render(request, "me.html", profile=profile, view=view, list_param="",
                  database="PostgreSQL" if engine == "postgresql" else "a SQLite file in its data folder",
                  scale=model.recommender.rating.scale)


async def required_profile(request: Request) -> Profile:
    profile = await current_profile(request)
    if profile is None:
        raise HTTPException(404, "this browser has no profile here: rating an anime on /me creates one")
    return profile


def profile_view(request: Request, served: ServedModel, profile: Profile, n: int) -> ProfileView:
    """The profile's anime and its list: from the served version's own knowledge of this profile when it learned
    every change made to it, else folded in from the ratings as they are now."""
    recommender, store = served.recommender, ratings_store(request)
    kept = store.ratings(profile, served.dataset)
    indices = recommender.anime.indices(np.array([item.anime_id for item in kept], dtype=np.int64))
    known = [(item, int(index)) for item, index in zip(kept, indices, strict=True) if index >= 0]
    ratings = [{**answers.card(recommender, index), "rating": item.rating, "updated_at": item.updated_at.isoformat()}
               for item, index in known]
    watermarks = request.app.state.export_watermarks  # run id → watermark; committed exports never change
    if served.run_id not in watermarks:
        found = exported_watermark(store, served.run_id)
        if found is not None:
            watermarks[served.run_id] = found
    watermark = watermarks.get(served.run_id)
    learned = (watermark is not None and profile.last_change <= watermark
               and recommender.users.indices(np.array([profile.user_id]))[0] >= 0)
    version = f"version {served.version}" + (f" ({served.alias})" if served.alias else "")
    if learned:
        listing = recommender.listing(profile.user_id, n)
        note = f"From {version}, which learned your ratings when it was trained."
    elif known:
        listing = answers.folded_in(recommender, [RatedAnime(item.anime_id, item.rating) for item, _ in known], n)
        note = (f"Folded in: {version} has not learned your ratings yet, so it places them beside what it knows. "
                "The next retrain learns them.")
    else:
        listing, note = None, "Rate an anime to get recommendations."
    rows = [] if listing is None else answers.listing_rows(recommender, listing)
    return ProfileView(ratings, rows, learned, note)

