"""What the app says when a request's fields are refused before any answer is computed: one sentence in a person's
words per problem (pydantic's own messages name types and field paths), shared by the pages and the API."""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError

from pipeline.serving.web.answers import LIST_TOO_LONG, N_OUT_OF_RANGE, SEARCH_TOO_LONG

# what each request field is, as a person would say it
FIELDS = {"ratings": "the list", "r": "the list", "n": "the number of anime asked for",
          "limit": "the number of results asked for", "q": "a search", "anime_id": "an anime id",
          "user_id": "a user id", "min_ratings": "the minimum number of ratings", "genre": "the genre",
          "type": "the type", "rating": "a rating"}
# a few refusals have a sentence of their own
SENTENCES = {
    ("ratings", "too_long"): LIST_TOO_LONG,
    ("r", "string_too_long"): LIST_TOO_LONG,
    ("n", "less_than_equal"): N_OUT_OF_RANGE,
    ("n", "greater_than_equal"): N_OUT_OF_RANGE,
    ("q", "string_too_long"): SEARCH_TOO_LONG,
}
WHOLE_NUMBER = {"int_parsing", "int_type", "int_from_float"}


def validation_sentence(exc: RequestValidationError) -> str:
    """The first problem of a request pydantic refused, as one sentence."""
    error = exc.errors()[0]
    kind, context = error.get("type", ""), error.get("ctx") or {}
    if kind == "json_invalid":
        return "the request body is not valid JSON"
    path = [part for part in error.get("loc", ()) if part not in ("body", "query", "path")]
    entry = next((part for part in path if isinstance(part, int)), None)  # the position in the list, from 0
    names = [part for part in path if isinstance(part, str)]  # a union's member names ("int") come last
    field = next((name for name in reversed(names) if name in FIELDS), names[-1] if names else None)
    where = f"entry {entry + 1} of the list: " if entry is not None else ""
    if (field, kind) in SENTENCES:
        return SENTENCES[field, kind]
    what = FIELDS.get(field, field or "the request")
    if kind == "missing":
        return f"{where}{what} is missing"
    if kind == "extra_forbidden":
        return f"{where}{path[-1]!r} is not something this request takes"
    if field == "rating":
        return f'{where}a rating is a whole number on the rating scale, or "watched"'
    if kind in WHOLE_NUMBER:
        return f"{where}{what} is a whole number"
    if kind in ("string_too_long", "too_long"):
        unit = "characters" if kind == "string_too_long" else "entries"
        return f"{where}{what} is at most {context.get('max_length')} {unit}"
    if kind in ("less_than_equal", "greater_than_equal"):
        bound = "at most" if kind == "less_than_equal" else "at least"
        return f"{where}{what} is {bound} {context.get('le', context.get('ge'))}"
    message = str(error.get("msg", "is not valid"))
    return f"{where}{what}: {message[:1].lower()}{message[1:]}"
