import pytest


@pytest.fixture(scope="session")
def predict_cache(tmp_path_factory):
    """One kernel-answer cache for the predict tests (never the user's ~/.cache)."""
    return tmp_path_factory.mktemp("trtq-cache")


@pytest.fixture(autouse=True)
def _isolated_cache(predict_cache, monkeypatch):
    monkeypatch.setenv("TRTQ_CACHE", str(predict_cache))
