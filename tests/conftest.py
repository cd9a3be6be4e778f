import pytest


@pytest.fixture(scope="session")
def english_train():
    from course_lib import data

    return data.english_sentences("train")


@pytest.fixture(scope="session")
def english_valid():
    from course_lib import data

    return data.english_sentences("valid")
