"""The web app: pages and a JSON API over the registered champion (`animerec app`, `make app`).

champion.py loads the served version and follows its alias; answers.py turns the recommender's answers into rows
for both the pages and the API; api.py and pages.py are the routes; app.py puts them together with the static
files and the error pages.
"""
