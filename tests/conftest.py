import pytest


@pytest.fixture(scope="session")
def english_train():
    from course_lib import data

    return data.english_sentences("train")


@pytest.fixture(scope="session")
def english_valid():
    from course_lib import data

    return data.english_sentences("valid")


DISTRIBUTED_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(autouse=True)
def no_distributed_variables_left_behind():
    """`distributed.init_single_process` sets RANK, WORLD_SIZE, ... in this process; the notebooks that nbval
    runs later start their kernels from this process, and transformers' Trainer would read them as a
    multi-process launch (and find MASTER_PORT taken). Put them back as they were after every test."""
    import os

    before = {key: os.environ.get(key) for key in DISTRIBUTED_VARIABLES}
    yield
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
