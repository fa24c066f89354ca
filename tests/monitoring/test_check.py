"""The monitoring stage before training: what it measures against the data set's champion, and why it skips."""

from conftest import evaluation_report, register_trained_run

from pipeline.monitoring.check import check_new_data


def test_new_data_are_checked_only_against_a_champion_whose_data_are_on_disk(trained_run, settings, small_models):
    """Before training, a run measures nothing and says why: no champion yet, the champion's matrix folder gone,
    or data unchanged since the champion learned."""
    matrix = small_models.matrix
    assert check_new_data(matrix, settings).skipped == f"no champion of data set {settings.dataset_name} yet"
    register_trained_run(trained_run, settings, evaluation_report(1.30, matrix.split_sizes["test"]))

    gone = check_new_data(matrix, settings)  # this test's data root has no matrix folder of the champion's data
    assert gone.drift is None and gone.champion_on_new is None
    assert gone.skipped.startswith(f"champion v1's data (data version {matrix.data_version[:8]}) is no longer in")

    settings.data_root = matrix.path.parents[1]  # where the champion's matrix was built
    unchanged = check_new_data(matrix, settings)
    assert unchanged.skipped == "no new data since champion v1's" and unchanged.drift is None
