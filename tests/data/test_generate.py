import numpy as np
import pyarrow.csv as pacsv

from pipeline.data.generate import DemoSpec, generate_demo_dataset


def _read(folder):
    return pacsv.read_csv(folder / "rating.csv"), pacsv.read_csv(folder / "anime.csv")


def test_demo_data_has_the_requested_shape_and_layout(tmp_path):
    spec = DemoSpec(n_users=500, n_anime=400, n_ratings=20_000, unrated_share=0.19, seed=11)
    ratings, anime = _read(generate_demo_dataset(tmp_path, spec))
    assert ratings.column_names == ["user_id", "anime_id", "rating"]
    assert anime.column_names == ["anime_id", "name", "genre", "type", "episodes", "rating", "members"]
    values = ratings["rating"].to_numpy()
    assert (values > 0).sum() == spec.n_ratings
    assert abs((values == -1).mean() - spec.unrated_share) < 0.005
    assert set(np.unique(values)) <= {-1, *range(1, 11)}
    assert np.bincount(values[values > 0]).argmax() == 8  # skewed like MyAnimeList
    pairs = ratings["user_id"].to_numpy() * 10**7 + ratings["anime_id"].to_numpy()
    assert len(np.unique(pairs)) == ratings.num_rows  # no duplicate (user, anime)
    assert set(ratings["anime_id"].to_numpy()) <= set(anime["anime_id"].to_numpy())
    assert anime.num_rows == spec.n_anime + spec.new_anime and ratings["user_id"].to_numpy().max() <= spec.n_users
    rated = np.isin(anime["anime_id"].to_numpy(), ratings["anime_id"].to_numpy())
    assert rated[:spec.n_anime].sum() > 0.9 * spec.n_anime and not rated[spec.n_anime:].any()  # this season's
    assert anime["rating"].null_count >= spec.new_anime  # no score before anyone rates it


def test_demo_data_is_long_tailed_and_has_kaggle_quirks(tmp_path):
    spec = DemoSpec(n_users=500, n_anime=400, n_ratings=20_000, seed=11)
    ratings, anime = _read(generate_demo_dataset(tmp_path, spec))
    per_anime = np.sort(np.bincount(ratings["anime_id"].to_numpy()))[::-1]
    per_anime = per_anime[per_anime > 0]
    top_decile = per_anime[: len(per_anime) // 10].sum() / per_anime.sum()
    assert top_decile > 0.3  # a uniform popularity would give about 0.1
    assert any("&#039;" in name for name in anime["name"].to_pylist())
    assert "Unknown" in anime["episodes"].cast("string").to_pylist()


def test_demo_data_is_deterministic(tmp_path):
    spec = DemoSpec(n_users=200, n_anime=100, n_ratings=3_000, seed=5)
    first = generate_demo_dataset(tmp_path / "a", spec)
    second = generate_demo_dataset(tmp_path / "b", spec)
    other = generate_demo_dataset(tmp_path / "c", DemoSpec(n_users=200, n_anime=100, n_ratings=3_000, seed=6))
    for name in ("rating.csv", "anime.csv"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert (first / "rating.csv").read_bytes() != (other / "rating.csv").read_bytes()


def test_generation_block_by_block_keeps_the_shape_and_is_deterministic(tmp_path):
    spec = DemoSpec(n_users=500, n_anime=300, n_ratings=20_000, users_per_block=37, seed=2)  # 14 blocks
    ratings, _ = _read(generate_demo_dataset(tmp_path / "a", spec))
    assert (tmp_path / "a" / "rating.csv").read_bytes() == (
        generate_demo_dataset(tmp_path / "b", spec) / "rating.csv").read_bytes()
    values, users = ratings["rating"].to_numpy(), ratings["user_id"].to_numpy()
    assert (values > 0).sum() == spec.n_ratings
    assert ratings.num_rows == round(spec.n_ratings / (1 - spec.unrated_share))
    assert len(np.unique(users * 10**7 + ratings["anime_id"].to_numpy())) == ratings.num_rows
    assert np.all(np.diff(users) >= 0) and users.max() <= spec.n_users  # written in user order, block by block
    assert len(np.unique(users)) > 0.9 * spec.n_users  # every block got its share of the users
