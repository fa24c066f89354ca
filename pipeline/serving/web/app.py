"""The web app: pages, the JSON API and its OpenAPI docs, every asset served from here (no CDN); errors in input
answered with a 4xx and one sentence, on the page or as JSON."""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from importlib.util import find_spec
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from pipeline.data.ratings_db.store import RatingsStore
from pipeline.errors import UnknownIdError
from pipeline.registry.scores import CHAMPION
from pipeline.serving.web import api, pages, profiles
from pipeline.serving.web.answers import InputError
from pipeline.serving.web.champion import ModelWatcher, NoModelError
from pipeline.serving.web.doors import close_doors
from pipeline.serving.web.sentences import validation_sentence
from pipeline.settings import APP_MODEL_VARIABLE, Settings

STATIC = Path(__file__).parent / "static"


class CachedStatic(StaticFiles):
    """Assets change only with the code: browsers keep them an hour."""

    async def get_response(self, path: str, scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response


# Swagger UI's own files, from the swagger-ui-py package (read, not imported: its Python side is not used)
SWAGGER_UI = Path(find_spec("swagger_ui").submodule_search_locations[0]) / "static"


def create_app(settings: Settings, model: str = CHAMPION, refresh_seconds: float = 5.0) -> FastAPI:
    """The app over the registered model `model` (an alias such as champion, or a version number)."""
    watcher = ModelWatcher(settings, model, refresh_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.ratings = RatingsStore.open(settings.ratings_db_url)
        watcher.start()
        yield
        watcher.stop()
        app.state.ratings.close()

    app = FastAPI(title="Anime recommender", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Recommendations from the registered champion: the same answers as the pages.")
    app.state.watcher, app.state.settings, app.state.export_watermarks = watcher, settings, {}
    close_doors(app, settings.app_hosts)
    app.mount("/static/swagger", CachedStatic(directory=SWAGGER_UI), name="swagger")
    app.mount("/static", CachedStatic(directory=STATIC), name="static")  # after the folder inside it
    app.include_router(api.router)
    app.include_router(profiles.router)
    app.include_router(pages.router)

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        return pages.TEMPLATES.TemplateResponse(request, "docs.html")

    document = app.openapi

    def openapi() -> dict:
        schema = document()
        schema.setdefault("components", {}).setdefault("schemas", {}).update(api.SCHEMA_COMPONENTS)
        return schema

    app.openapi = openapi
    add_error_answers(app)
    return app


def app_from_environment() -> FastAPI:
    """The app in one of uvicorn's worker processes: settings from ANIMEREC_* variables, as every command reads them,
    and the version from ANIMEREC_APP_MODEL."""
    return create_app(Settings(), os.environ.get(APP_MODEL_VARIABLE, CHAMPION))


def add_error_answers(app: FastAPI) -> None:
    def answer(request: Request, status: int, sentence: str, headers: dict[str, str] | None = None) -> Response:
        if request.url.path.startswith("/api/") or request.url.path == "/openapi.json":
            return JSONResponse({"error": sentence}, status_code=status, headers=headers)
        served = None
        try:
            served = request.app.state.watcher.current()
        except NoModelError:
            pass
        return pages.TEMPLATES.TemplateResponse(request, "error.html", {
            "served": served, "sentence": sentence, "status": status, "list_param": ""}, status_code=status,
            headers=headers)

    @app.exception_handler(InputError)
    def bad_input(request: Request, exc: InputError) -> Response:
        return answer(request, 400, str(exc))

    @app.exception_handler(UnknownIdError)
    def unknown(request: Request, exc: UnknownIdError) -> Response:
        return answer(request, 404, str(exc.args[0]) if exc.args else "not found")

    @app.exception_handler(NoModelError)
    def no_model(request: Request, exc: NoModelError) -> Response:
        return answer(request, 503, str(exc))

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, exc: RequestValidationError) -> Response:
        return answer(request, 422, validation_sentence(exc))

    @app.exception_handler(HTTPException)
    def http_error(request: Request, exc: HTTPException) -> Response:
        sentence = (f"there is no page at {request.url.path[:80]}" if exc.status_code == 404
                    else f"{request.method} is not answered at {request.url.path[:80]}" if exc.status_code == 405
                    else str(exc.detail))
        return answer(request, exc.status_code, sentence, exc.headers)  # a 405 keeps its Allow header
