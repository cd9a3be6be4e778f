import os

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
AT_START = {key: os.environ.get(key) for key in DISTRIBUTED_VARIABLES}


@pytest.fixture(autouse=True)
def no_distributed_variables_left_behind():
    """`distributed.init_single_process` sets RANK, WORLD_SIZE, ... in this process; the notebooks that nbval
    runs later start their kernels from this process, and transformers' Trainer would read them as a
    multi-process launch. After every test, put them back as they were when the session started (module
    fixtures set them too, before a test-level snapshot could be taken)."""
    yield
    for key, value in AT_START.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def a_cpu_without_amx(request, monkeypatch):
    """The tests that resolve "auto" on a CPU expect fp32, whatever machine runs them: a CPU with AMX would pick
    bf16 (`device.auto_precision`). Every test sees a CPU without bf16 units unless it asks for the real one
    (`@pytest.mark.real_cpu_units`); test_device.py sets the units it means."""
    if "real_cpu_units" not in request.keywords:
        from course_lib import device

        monkeypatch.setattr(device, "cpu_bf16_units", lambda: {"amx": False, "avx512_bf16": False})
