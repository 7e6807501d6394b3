r"""What the benchmarks that time two versions of a piece against each
other share: the interleaved timing of the two (:func:`interleaved`), and
the writing of a record as JSON with its markdown table
(:func:`write_record`, :func:`render_record`)."""
import json
import os
import statistics
import time
from typing import Any, Callable, Tuple


def calls_per_sample(fn: Callable, least: float, most: int) -> int:
    r"""Calls of :obj:`fn` per timed sample, so that a sample takes at
    least :obj:`least` seconds, or :obj:`most` calls (doubled from one until
    either holds)."""
    # A millisecond piece timed one call at a time is mostly the other
    # workers' noise.
    number = 1
    while True:
        t = time.perf_counter()
        for _ in range(number):
            fn()
        if time.perf_counter() - t >= least or number >= most:
            return number
        number *= 2


def interleaved(first: Callable, second: Callable, repeat: int,
                least: float, most: int) -> Tuple[float, float, Any, Any]:
    r"""Median times per call of :obj:`first` and :obj:`second`, and their
    outputs: :obj:`repeat` samples of each, run in turn (which goes first
    alternates), after one warm-up run each, every sample the same number
    of calls (:func:`calls_per_sample` of the slower, with :obj:`least` and
    :obj:`most`)."""
    out_first, out_second = first(), second()
    number = max(calls_per_sample(first, least, most),
                 calls_per_sample(second, least, most))
    times = ([], [])
    for r in range(repeat):
        order = ((0, first), (1, second))
        for i, fn in (order if r % 2 == 0 else order[::-1]):
            t = time.perf_counter()
            for _ in range(number):
                fn()
            times[i].append((time.perf_counter() - t) / number)
    return (statistics.median(times[0]), statistics.median(times[1]),
            out_first, out_second)


def write_record(result: dict, out: str, name: str,
                 to_markdown: Callable[[dict], str]) -> str:
    r"""Writes :obj:`result` as ``NAME.json`` and its table
    (:obj:`to_markdown`) as ``NAME.md`` under :obj:`out` (made where
    missing), and returns the table."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f'{name}.json'), 'w') as f:
        json.dump(result, f, indent=1)
        f.write('\n')
    text = to_markdown(result)
    with open(os.path.join(out, f'{name}.md'), 'w') as f:
        f.write(text)
    return text


def render_record(record: str, markdown: str,
                  to_markdown: Callable[[dict], str]) -> None:
    r"""Writes the table (:obj:`to_markdown`) of the JSON record at
    :obj:`record` to :obj:`markdown`."""
    with open(record) as f:
        text = to_markdown(json.load(f))
    with open(markdown, 'w') as f:
        f.write(text)
