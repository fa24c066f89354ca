"""The demo data carry a known low-rank structure: the seed model with default settings must learn it."""

from pipeline.evaluate import evaluate_model
from pipeline.generate import DemoSpec, generate_demo_dataset
from pipeline.ingest import ingest
from pipeline.matrix import build_utility_matrix
from pipeline.settings import Settings
from pipeline.train import train_model
from pipeline.validate import validate


def test_seed_model_beats_bias_baseline_on_demo_structure(tmp_path):
    data = generate_demo_dataset(tmp_path / "demo", DemoSpec(n_users=1_500, n_anime=1_000, n_ratings=100_000))
    settings = Settings(data_root=tmp_path / "data")  # default hyperparameters: dim 128, Adam, BCE
    matrix = build_utility_matrix(validate(ingest(data), settings), settings)
    report = evaluate_model(train_model(matrix, settings.training, verbose=0).model, matrix, settings.unrated_value,
                            settings.relevance_threshold)
    assert report.bias.rmse < report.global_mean.rmse
    assert report.model.rmse < 0.95 * report.bias.rmse
    assert report.ranking.personalization > report.popularity_ranking.personalization
