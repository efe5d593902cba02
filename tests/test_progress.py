"""Progress off a terminal: a plain line every ~10%, nothing when disabled."""

import io

from reminder.progress import PlainProgress, progress


def test_plain_lines_every_tenth():
    stream = io.StringIO()
    bar = PlainProgress(None, total=250, desc="step 0", unit="it", stream=stream)
    for _ in range(250):
        bar.update(1)
        bar.set_postfix({"loss": "0.5"})
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0].startswith("step 0:  10% 25/250 it") and lines[-1].startswith("step 0: 100% 250/250 it")
    assert lines[-1].endswith("loss=0.5")


def test_iterables_and_disabled_bars():
    stream = io.StringIO()
    assert list(PlainProgress(range(7), desc="x", stream=stream)) == list(range(7))
    assert stream.getvalue().splitlines()[-1].startswith("x: 100% 7/7")
    items = [1, 2]
    assert progress(items, False) is items
    # pytest's captured stderr is not a terminal: the plain kind is chosen
    assert isinstance(progress(items, True, desc="y"), PlainProgress)
