"""The pages: server-rendered HTML (Jinja2, names escaped) with a little JavaScript for the title search. A person's
list lives in the URL (`?r=5114:10,9253:w`), so it survives a reload and nothing is stored on the server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from pipeline.serving.presentation import eligible_anime
from pipeline.serving.web import answers
from pipeline.serving.web.answers import MAX_N, MAX_QUERY
from pipeline.top_n import K

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
router = APIRouter(include_in_schema=False)
ListParam = Annotated[str, Query(max_length=answers.MAX_LIST * 16)]
Text = Annotated[str, Query(max_length=MAX_QUERY)]


def render(request: Request, template: str, status_code: int = 200, **context) -> HTMLResponse:
    served = request.app.state.watcher.current()
    return TEMPLATES.TemplateResponse(request, template, {"served": served, **context}, status_code=status_code,
                                      headers={"Cache-Control": "no-cache"})


def filter_choices(recommender) -> dict:
    return {"genres": recommender.catalog.genres, "types": recommender.catalog.types}


@router.get("/", response_class=HTMLResponse)
def start(request: Request, r: ListParam = "") -> HTMLResponse:
    recommender = request.app.state.watcher.current().recommender
    items = answers.parse_list(r)
    rows = [{**answers.card(recommender, recommender.anime.index(item.anime_id)), "rating": item.rating}
            for item in answers.check_list(recommender, items)] if items else []
    return render(request, "start.html", items=rows, list_param=r, scale=recommender.rating.scale)


@router.get("/recommendations", response_class=HTMLResponse)
def recommendations(request: Request, r: ListParam = "", n: Annotated[int, Query(ge=1, le=MAX_N)] = K,
                    genre: Text = "", type: Text = "", min_ratings: Annotated[int, Query(ge=0)] = 0) -> HTMLResponse:
    recommender = request.app.state.watcher.current().recommender
    listing = answers.listing_for(recommender, answers.parse_list(r), n, genre=genre or None,
                                  anime_type=type or None, min_ratings=min_ratings)
    fresh = answers.new_rows(recommender, items=answers.parse_list(r), genre=genre or None, anime_type=type or None)
    return render(request, "recommendations.html", rows=answers.listing_rows(recommender, listing), list_param=r,
                  new_rows=fresh, n=n, genre=genre, type=type, min_ratings=min_ratings, who="you",
                  more=n + K if n + K <= MAX_N else None, **filter_choices(recommender))


@router.get("/anime/{anime_id}", response_class=HTMLResponse)
def anime(request: Request, anime_id: int, r: ListParam = "") -> HTMLResponse:
    served = request.app.state.watcher.current()
    card, ratings, similar = answers.anime_page(served.recommender, anime_id, served.similar)
    return render(request, "anime.html", anime=card, ratings=ratings, similar=similar, list_param=r)


@router.get("/users/{user_id}", response_class=HTMLResponse)
def user(request: Request, user_id: int, n: Annotated[int, Query(ge=1, le=MAX_N)] = K, genre: Text = "",
         type: Text = "", min_ratings: Annotated[int, Query(ge=0)] = 0) -> HTMLResponse:
    answers.check_public_user(user_id)
    recommender = request.app.state.watcher.current().recommender
    listing = recommender.listing(user_id, n, eligible_anime(recommender, genre or None, type or None, min_ratings))
    return render(request, "user.html", user_id=user_id, history=answers.history_rows(recommender, user_id),
                  rows=answers.listing_rows(recommender, listing), n=n, genre=genre, type=type,
                  new_rows=answers.new_rows(recommender, user_id=user_id, genre=genre or None,
                                            anime_type=type or None),
                  min_ratings=min_ratings, list_param="", more=n + K if n + K <= MAX_N else None,
                  **filter_choices(recommender))


@router.get("/model", response_class=HTMLResponse)
def model(request: Request) -> HTMLResponse:
    served = request.app.state.watcher.current()
    ui = request.app.state.settings.mlflow_ui_url
    try:
        ui_up = httpx.get(ui, timeout=0.3).status_code < 500
    except httpx.HTTPError:
        ui_up = False
    run_link = f"{ui}/#/experiments/{served.experiment_id}/runs/{served.run_id}" if ui_up else None
    return render(request, "model.html", info=served.as_json(), run_link=run_link, list_param="")
