import pytest


@pytest.fixture
def neighbourhood_answers(monkeypatch):
    """Records, per ILP the planner could not answer by rounding, whether the neighbourhood search answered it."""
    from trtq.plan import ilp

    answers = []
    search = ilp._Model.run_neighbourhoods

    def spy(self, *args):
        out = search(self, *args)
        answers.append(out is not None)
        return out

    monkeypatch.setattr(ilp._Model, "run_neighbourhoods", spy)
    return answers
