"""Issue 9, messages: the half-row repair of an appended CSV respects CSV quoting, so a
description holding a newline, a quote or a comma is never cut in two."""

import csv
import io

from hypothesis import given, settings
from hypothesis import strategies as st

from lstv.rundir import drop_partial_last_row

FIELD = st.text(alphabet=st.sampled_from('ab ,"\n\r;é'), max_size=12)
ROWS = st.lists(st.lists(FIELD, min_size=2, max_size=2), min_size=1, max_size=6)


def encoded_rows(rows) -> list[bytes]:
    """Each row as csv.writer appends it (quoted where needed, ending in \\r\\n)."""
    out = []
    for row in rows:
        buffer = io.StringIO(newline="")
        csv.writer(buffer).writerow(row)
        out.append(buffer.getvalue().encode())
    return out


@settings(max_examples=300, deadline=None)
@given(rows=ROWS, cut=st.floats(0, 1))
def test_repair_keeps_exactly_the_whole_rows(tmp_path_factory, rows, cut):
    header = b"study_id,series_description\r\n"
    chunks = [header, *encoded_rows(rows)]
    data = b"".join(chunks)
    k = len(header) + int(cut * (len(data) - len(header)))
    path = tmp_path_factory.mktemp("csv") / "m.csv"
    path.write_bytes(data[:k])

    drop_partial_last_row(path)

    ends = [sum(len(c) for c in chunks[: i + 1]) for i in range(len(chunks))]
    kept = max(e for e in ends if e <= k)
    assert path.read_bytes() == data[:kept]
    with open(path, newline="") as f:
        parsed = list(csv.reader(f))
    assert parsed[1:] == rows[: ends.index(kept)]
