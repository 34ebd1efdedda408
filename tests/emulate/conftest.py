import pytest

from amiko.emulate import VirtualBoard


@pytest.fixture
def vboard(tmp_path):
    """A started virtual board with an empty flash; the test puts files in vboard.flash before or after start."""
    boards = []

    def make(name="board", main=None, start=True):
        b = VirtualBoard(tmp_path / name)
        if main is not None:
            (tmp_path / name / "flash" / "main.py").write_text(main)
        if start:
            b.start()
        boards.append(b)
        return b

    yield make
    for b in boards:
        b.stop()
