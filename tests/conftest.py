"Shared pytest fixtures."
import pytest, torch

@pytest.fixture(autouse=True)
def one_thread():
    "One torch thread per test: on the 2-core CI machine, threads of parallel work only fight each other."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
