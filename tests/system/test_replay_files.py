"""What `feedback replay` reads from a file: JSON Lines a line at a time, or one document.

Real files in a tmp dir, read by `feedback.ingest.replay.bodies` (what the command and
the benchmark replay through): the bodies it hands to the apply path and the source each
is named by in a dead letter.
"""

from __future__ import annotations

import json
from pathlib import Path

from feedback.ingest.replay import batches, bodies

EVENT = {"eventType": "Delivery", "mail": {"messageId": "m1"}, "delivery": {"recipients": ["a@example.org"]}}


def read(path: Path) -> list[tuple[str, str]]:
    return [(item.body, item.source) for item in bodies(path)]


def test_json_lines_are_numbered_as_in_the_file_and_blank_lines_skipped(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    line = json.dumps(EVENT)
    path.write_text(f"\n{line}\n\n{line}\r\nnot json\n{line}")
    assert read(path) == [
        (line, f"replay:{path}:2"),
        (line, f"replay:{path}:4"),  # the CRLF of a file made elsewhere is no part of the body
        ("not json", f"replay:{path}:5"),  # a dead letter, not the end of the replay
        (line, f"replay:{path}:6"),  # the last line needs no newline
    ]


def test_a_list_gives_each_element_and_an_object_over_several_lines_is_one_body(tmp_path: Path) -> None:
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([EVENT, {"Type": "Notification", "Message": json.dumps(EVENT)}], indent=2))
    assert [source for _, source in read(listed)] == [f"replay:{listed}#1", f"replay:{listed}#2"]
    assert json.loads(read(listed)[0][0]) == EVENT

    pretty = tmp_path / "one.json"
    pretty.write_text(json.dumps(EVENT, indent=2) + "\n")
    assert read(pretty) == [(json.dumps(EVENT, indent=2) + "\n", f"replay:{pretty}")]


def test_a_file_of_lines_none_of_them_json_gives_every_line_for_its_dead_letter(tmp_path: Path) -> None:
    path = tmp_path / "garbage.txt"
    path.write_text("\n{ not json\n}\nstill not\n")
    assert read(path) == [
        ("{ not json", f"replay:{path}:2"),
        ("}", f"replay:{path}:3"),
        ("still not", f"replay:{path}:4"),
    ]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n \n")
    assert read(empty) == []


def test_json_lines_are_read_as_the_batches_need_them(tmp_path: Path) -> None:
    """The first batch is handed over before the rest of the file is read: lines appended
    after it still come in later batches."""
    path = tmp_path / "growing.jsonl"
    path.write_text("".join(json.dumps({**EVENT, "n": n}) + "\n" for n in range(5)))
    with path.open("a") as more:
        read_batches = batches([path], size=2)
        first = next(read_batches)
        more.write("".join(json.dumps({**EVENT, "n": n}) + "\n" for n in range(5, 8)))
        more.flush()
        rest = [json.loads(item.body)["n"] for batch in read_batches for item in batch]
    assert [json.loads(item.body)["n"] for item in first] == [0, 1]
    assert rest == [2, 3, 4, 5, 6, 7]
