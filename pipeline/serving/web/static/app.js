// The title search and the buttons that change a person's list. On the start page the list lives in the URL
// (?r=5114:9,9253:w): changing it loads the page for the new list, so a reload shows the same list. On /me each change
// is sent to the profile's API and the page is loaded again once it is kept.
"use strict";

function showProblem(text) {
  const line = document.getElementById("profile-error");
  if (line) { line.textContent = text; line.hidden = false; }
}

async function changeProfile(method, path, body) {
  const answer = await fetch(path, {
    method: method, credentials: "same-origin",
    headers: body === undefined ? {} : {"Content-Type": "application/json"},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!answer.ok) {
    const problem = await answer.json().catch(() => ({error: "the change was not kept (" + answer.status + ")"}));
    showProblem(problem.error);
    return false;
  }
  return true;
}

function keepRating(animeId, value) {
  return changeProfile("PUT", "/api/me/ratings/" + animeId, {rating: value === "w" ? "watched" : Number(value)});
}

function listItems(text) {
  return text ? text.split(",").filter(Boolean) : [];
}

function withAnime(text, animeId, rating) {
  const kept = listItems(text).filter((item) => item.split(":")[0] !== String(animeId));
  return kept.concat([animeId + ":" + rating]).join(",");
}

function withoutAnime(text, animeId) {
  return listItems(text).filter((item) => item.split(":")[0] !== String(animeId)).join(",");
}

function openList(text) {
  window.location.assign(text ? "/?r=" + encodeURIComponent(text) : "/");
}

function resultRow(anime, box) {
  const row = document.createElement("li");
  row.setAttribute("role", "option");
  const title = document.createElement("span");
  title.textContent = anime.name + (anime.type ? " (" + anime.type + ")" : "");  // textContent: names stay text
  const pick = document.createElement("span");
  pick.className = "pick";
  const rating = document.createElement("select");
  rating.setAttribute("aria-label", "your rating of " + anime.name);
  const watched = new Option("watched", "w");
  rating.add(watched);
  for (let r = Number(box.dataset.scaleMax); r >= Number(box.dataset.scaleMin); r -= 1) {
    rating.add(new Option(String(r), String(r)));
  }
  const add = document.createElement("button");
  add.type = "button";
  add.className = "add-result";
  add.textContent = "Add";
  add.addEventListener("click", async () => {
    if (box.dataset.mode !== "profile") { openList(withAnime(box.dataset.list, anime.anime_id, rating.value)); return; }
    if (await keepRating(anime.anime_id, rating.value)) window.location.reload();
  });
  pick.append(rating, add);
  row.append(title, pick);
  return row;
}

function startSearch(box) {
  const input = box.querySelector("#search");
  const results = box.querySelector("#results");
  let timer = null;
  let asked = 0;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const query = input.value.trim();
      const mine = ++asked;
      if (!query) { results.replaceChildren(); return; }
      const answer = await fetch("/api/anime?limit=8&q=" + encodeURIComponent(query));
      if (mine !== asked) return;  // a later keystroke's answer wins
      const body = await answer.json();
      if (!answer.ok) {
        const line = document.createElement("li");
        line.className = "error";
        line.textContent = body.error;
        results.replaceChildren(line);
        return;
      }
      results.replaceChildren(...body.map((anime) => resultRow(anime, box)));
      if (!body.length) {
        const none = document.createElement("li");
        none.className = "empty";
        none.textContent = "No title holds those words.";
        results.replaceChildren(none);
      }
    }, 150);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      const first = results.querySelector("button.add-result");
      if (first) { event.preventDefault(); first.click(); }
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const box = document.querySelector(".search");
  if (box) startSearch(box);
  const list = box ? box.dataset.list : "";
  document.querySelectorAll("#mylist button.remove").forEach((button) => {
    button.addEventListener("click", () => openList(withoutAnime(list, button.dataset.anime)));
  });
  document.querySelectorAll("#myprofile li[data-anime]").forEach((row) => {
    const animeId = row.dataset.anime;
    row.querySelector("select.change").addEventListener("change", async (event) => {
      if (await keepRating(animeId, event.target.value)) window.location.reload();
    });
    row.querySelector("button.unrate").addEventListener("click", async () => {
      if (await changeProfile("DELETE", "/api/me/ratings/" + animeId)) window.location.reload();
    });
  });
  const forget = document.getElementById("forget-me");
  if (forget) {
    forget.addEventListener("click", async () => {
      if (!window.confirm("Delete your profile and every rating in it?")) return;
      if (await changeProfile("DELETE", "/api/me")) window.location.assign("/me");
    });
  }
  const keep = document.getElementById("keep-list");
  if (keep) {
    keep.addEventListener("click", async () => {
      for (const item of listItems(keep.dataset.list)) {
        const [animeId, rating] = item.split(":");
        if (!(await keepRating(animeId, rating || "w"))) return;
      }
      window.location.assign("/me");
    });
  }
  document.querySelectorAll("button.add").forEach((button) => {
    button.addEventListener("click", () => openList(withAnime(button.dataset.list, button.dataset.anime, "w")));
  });
});
