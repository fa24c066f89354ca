"""The demo data carry a known low-rank structure: the default rating model must learn it, better than the seed,
and the ranking model must turn it into lists far better than the most popular anime."""

import pytest
from conftest import evaluate_served

from pipeline.data.generate import DemoSpec, generate_demo_dataset
from pipeline.data.ingest import ingest
from pipeline.matrix.utility_matrix import build_utility_matrix
from pipeline.models.ranking.fit import train_ranking_model
from pipeline.models.rating.train import train_model
from pipeline.settings import Settings, TrainingConfig
from pipeline.validation.validate import validate

pytestmark = pytest.mark.slow  # trains full-size models


def test_default_model_beats_the_bias_baseline_and_the_seed_model(tmp_path):
    data = generate_demo_dataset(tmp_path / "demo", DemoSpec(n_users=1_000, n_anime=700, n_ratings=50_000))
    settings = Settings(data_root=tmp_path / "data")  # default hyperparameters: biased MF, dim 128
    matrix = build_utility_matrix(validate(ingest(data), settings), settings)
    ranking = train_ranking_model(matrix, settings.ranking, settings.unrated_value, settings.relevance_threshold)

    def evaluate(config: TrainingConfig):
        return evaluate_served(train_model(matrix, config).model, ranking.model, matrix, settings)

    default, seed = evaluate(settings.training), evaluate(TrainingConfig.seed_cosine())
    assert default.bias.rmse < default.global_mean.rmse
    assert default.model.rmse < 0.95 * default.bias.rmse
    assert default.model.rmse < seed.model.rmse
    lists = default.ranking
    assert lists.served.ndcg > 1.5 * lists.popularity.ndcg and lists.served.ndcg > lists.rating_model.ndcg
    assert lists.served.personalization > lists.popularity.personalization
    assert lists.served.coverage > lists.popularity.coverage
